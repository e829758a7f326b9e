// SPDX-License-Identifier: GPL-2.0
//! Hint data: what userspace and a scheduler send each other through
//! memory both can write.
//!
//! A hint is built from its bytes by safe code, field by field, never by
//! reinterpreting memory: any bytes userspace writes give a valid value.
//! Only integers, arrays of them, [`NoHint`](super::NoHint) and structs
//! declared with [`hint_struct!`](crate::hint_struct) are hint data; a
//! `bool` or an enum is not (most of their bit patterns are not values):
//!
//! ```compile_fail
//! fn hint<T: enoki::HintData>() {}
//! hint::<bool>();
//! ```
//!
//! ```compile_fail
//! fn hint<T: enoki::HintData>() {}
//! #[derive(Clone, Copy, Default)]
//! enum Mode { #[default] Batch, Interactive }
//! hint::<Mode>();
//! ```
//!
//! ```
//! fn hint<T: enoki::HintData>() {}
//! hint::<[u32; 4]>();
//! hint::<enoki::NoHint>();
//! ```

use super::scheduler::NoHint;
use super::upgrade::{fnv1a, mix, type_fingerprint, FNV_BASIS};

/// Plain data a hint is made of: integers, arrays of them, and structs of
/// those declared with [`hint_struct!`](crate::hint_struct). Its bytes are
/// its fields' bytes in order, native endian, with no padding, as a C
/// struct with the same fields (and `#[repr(C)]`) lays them out.
pub trait HintData: Copy + Default + Send + Sync + 'static {
    /// Size in bytes.
    const SIZE: usize;
    /// A hash of the type's layout and definition: a sender and a
    /// scheduler (or two versions of one) speak the same hints when theirs
    /// match.
    const FINGERPRINT: u64;
    /// The value whose bytes start `bytes`; bytes past the end read as 0.
    fn read(bytes: &[u8]) -> Self;
    /// Writes the value's bytes to the start of `out`, as far as it goes.
    fn write(&self, out: &mut [u8]);
}

macro_rules! int_hint_data {
    ($($t:ty),*) => {$(
        impl HintData for $t {
            const SIZE: usize = core::mem::size_of::<$t>();
            const FINGERPRINT: u64 = type_fingerprint(
                stringify!($t),
                core::mem::size_of::<$t>(),
                core::mem::align_of::<$t>(),
            );
            fn read(bytes: &[u8]) -> Self {
                let mut raw = [0u8; core::mem::size_of::<$t>()];
                for (r, b) in raw.iter_mut().zip(bytes) {
                    *r = *b;
                }
                <$t>::from_ne_bytes(raw)
            }
            fn write(&self, out: &mut [u8]) {
                for (o, b) in out.iter_mut().zip(self.to_ne_bytes()) {
                    *o = b;
                }
            }
        }
    )*};
}

int_hint_data!(u8, u16, u32, u64, i8, i16, i32, i64);

impl<T: HintData, const N: usize> HintData for [T; N]
where
    [T; N]: Default,
{
    const SIZE: usize = T::SIZE * N;
    const FINGERPRINT: u64 = mix(mix(fnv1a(FNV_BASIS, b"array"), T::FINGERPRINT), N as u64);
    fn read(bytes: &[u8]) -> Self {
        core::array::from_fn(|i| T::read(bytes.get(i.saturating_mul(T::SIZE)..).unwrap_or(&[])))
    }
    fn write(&self, out: &mut [u8]) {
        let mut rest = out;
        for item in self {
            item.write(rest);
            rest = core::mem::take(&mut rest)
                .get_mut(T::SIZE..)
                .unwrap_or_default();
        }
    }
}

impl HintData for NoHint {
    const SIZE: usize = 0;
    const FINGERPRINT: u64 = 0;
    fn read(_bytes: &[u8]) -> Self {
        NoHint
    }
    fn write(&self, _out: &mut [u8]) {}
}

/// Declares a `#[repr(C)]` hint struct whose fields are all
/// [`HintData`], and makes it hint data too, without `unsafe` (it also
/// derives `Clone`, `Copy`, `Debug`, `Default`, `PartialEq`, `Eq`). A
/// struct with padding is refused at compile time: order the fields
/// largest first, or spell the padding out as fields.
///
/// ```
/// enoki::hint_struct! {
///     /// What a latency-sensitive task asks for.
///     pub struct Ask {
///         pub deadline_ns: u64,
///         pub pid: i32,
///         pub flags: [u8; 4],
///     }
/// }
/// # use enoki::HintData;
/// let ask = Ask { deadline_ns: 7, pid: 3, flags: [1, 2, 3, 4] };
/// let mut bytes = [0u8; 16];
/// ask.write(&mut bytes);
/// assert_eq!(Ask::read(&bytes), ask);
/// ```
///
/// A field that is not hint data is refused:
///
/// ```compile_fail
/// enoki::hint_struct! {
///     pub struct Ask { pub urgent: bool, pub pid: i32 }
/// }
/// ```
///
/// and so is padding:
///
/// ```compile_fail
/// enoki::hint_struct! {
///     pub struct Ask { pub urgent: u8, pub pid: i32 }
/// }
/// ```
#[macro_export]
macro_rules! hint_struct {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $($(#[$fmeta:meta])* $fvis:vis $field:ident : $ty:ty),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        $vis struct $name {
            $($(#[$fmeta])* $fvis $field: $ty),*
        }

        impl $crate::HintData for $name {
            const SIZE: usize = 0 $(+ <$ty as $crate::HintData>::SIZE)*;
            const FINGERPRINT: u64 = {
                let h = $crate::upgrade::type_fingerprint(
                    stringify!($name { $($field: $ty),* }),
                    ::core::mem::size_of::<$name>(),
                    ::core::mem::align_of::<$name>(),
                );
                $(let h = $crate::upgrade::mix(h, <$ty as $crate::HintData>::FINGERPRINT);)*
                h
            };
            fn read(bytes: &[u8]) -> Self {
                let mut rest = bytes;
                $(
                    let $field = <$ty as $crate::HintData>::read(rest);
                    rest = rest.get(<$ty as $crate::HintData>::SIZE..).unwrap_or(&[]);
                )*
                let _ = rest;
                $name { $($field),* }
            }
            fn write(&self, out: &mut [u8]) {
                let mut rest = out;
                $(
                    <$ty as $crate::HintData>::write(&self.$field, rest);
                    rest = ::core::mem::take(&mut rest)
                        .get_mut(<$ty as $crate::HintData>::SIZE..)
                        .unwrap_or_default();
                )*
                let _ = rest;
            }
        }

        const _: () = ::core::assert!(
            ::core::mem::size_of::<$name>() == <$name as $crate::HintData>::SIZE,
            "a hint struct has padding: order the fields largest first or spell it out"
        );
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::hint_struct! {
        struct Mixed {
            a: u64,
            b: [u16; 3],
            c: i8,
            d: u8,
        }
    }

    #[test]
    fn integers_and_arrays_round_trip_native_endian() {
        let mut bytes = [0u8; 8];
        0x0102_0304u32.write(&mut bytes);
        assert_eq!(&bytes[..4], &0x0102_0304u32.to_ne_bytes());
        assert_eq!(u32::read(&bytes), 0x0102_0304);
        let arr = [-1i16, 2, 3];
        let mut out = [0u8; 6];
        arr.write(&mut out);
        assert_eq!(<[i16; 3]>::read(&out), arr);
        assert_eq!(<[u8; 6] as HintData>::SIZE, 6);
    }

    #[test]
    fn short_input_reads_zeros_and_short_output_is_not_overrun() {
        assert_eq!(
            u64::read(&[1]),
            u64::from_ne_bytes([1, 0, 0, 0, 0, 0, 0, 0])
        );
        let mut out = [0u8; 3];
        u64::MAX.write(&mut out);
        assert_eq!(out, [0xff; 3]);
        let m = Mixed::read(&[]);
        assert_eq!(m, Mixed::default());
    }

    crate::hint_struct! {
        struct Renamed {
            a: u64,
            b: [u16; 3],
            c: i8,
            e: u8,
        }
    }

    #[test]
    fn fingerprints_tell_definitions_apart() {
        assert_ne!(
            <Mixed as HintData>::FINGERPRINT,
            <Renamed as HintData>::FINGERPRINT
        );
        assert_ne!(
            <u32 as HintData>::FINGERPRINT,
            <i32 as HintData>::FINGERPRINT
        );
        assert_ne!(
            <[u8; 4] as HintData>::FINGERPRINT,
            <[u8; 8] as HintData>::FINGERPRINT
        );
        assert_eq!(<NoHint as HintData>::FINGERPRINT, 0);
    }

    #[test]
    fn struct_fields_follow_each_other_like_repr_c() {
        assert_eq!(<Mixed as HintData>::SIZE, core::mem::size_of::<Mixed>());
        let m = Mixed {
            a: u64::MAX - 1,
            b: [1, 2, 3],
            c: -5,
            d: 9,
        };
        let mut bytes = [0u8; 16];
        m.write(&mut bytes);
        assert_eq!(&bytes[..8], &m.a.to_ne_bytes());
        assert_eq!(&bytes[8..10], &1u16.to_ne_bytes());
        assert_eq!(bytes[14], (-5i8) as u8);
        assert_eq!(bytes[15], 9);
        assert_eq!(Mixed::read(&bytes), m);
    }
}
