// SPDX-License-Identifier: GPL-2.0
//! Live upgrade: what one version of a scheduler may hand to the next.
//!
//! The new version is created first, with all its memory, while sleeping
//! is allowed, and meets every task. The old version writes its
//! [`EnokiScheduler::UpgradeState`] into a value the new one allocated
//! ([`EnokiScheduler::reregister_prep`]) and the new one takes it
//! ([`EnokiScheduler::reregister_init`]) twice: once while the old version
//! still runs (a pre-copy, which leaves the code and data the hand-over
//! uses warm), then with every CPU's calls held off, when it counts. Then
//! the kernel (or the host's model of it) gives the new version a fresh
//! token for each task the old version held one for. Tokens never
//! travel in the state: the kernel stays the one source of truth. Last,
//! every CPU is kicked, so each running task comes back to the new
//! version through `task_preempt`.
//!
//! The state is [`PlainData`]: integers, booleans, arrays and structs of
//! them declared with [`plain_data!`](crate::plain_data). It holds no
//! pointer, reference or function (nothing that points into the old
//! module), and a value of all zeroes is valid. Its [`fingerprint`] (the
//! layout, the text of every definition, the scheduler's
//! [`EnokiScheduler::STATE_VERSION`] and the ABI) must match between the
//! two versions, or the upgrade is refused before anything is touched.

use core::fmt;

use super::abi::ABI_VERSION;
use super::scheduler::{EnokiScheduler, InitError};

#[doc(hidden)]
pub mod private {
    /// Only libEnoki's own impls and [`plain_data!`](crate::plain_data)
    /// implement [`PlainData`](super::PlainData).
    pub trait Sealed {}
}

/// Data with no pointers, valid as all zeroes, that can cross from one
/// module to another. Implemented for integers, `bool`, arrays of plain
/// data and `()` (no state); declare structs with
/// [`plain_data!`](crate::plain_data).
pub trait PlainData: private::Sealed + Copy + Send + 'static {
    /// The all-zero value.
    const ZERO: Self;
    /// A hash of the type's layout and definition.
    const FINGERPRINT: u64;
}

/// FNV-1a, usable in constants.
pub const fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    let mut h = hash;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

/// Where every fingerprint starts.
pub const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// Mixes `value` into `hash`.
pub const fn mix(hash: u64, value: u64) -> u64 {
    fnv1a(hash, &value.to_le_bytes())
}

/// The fingerprint of a type named `name` of size `size` and alignment
/// `align`.
pub const fn type_fingerprint(name: &str, size: usize, align: usize) -> u64 {
    mix(
        mix(fnv1a(FNV_BASIS, name.as_bytes()), size as u64),
        align as u64,
    )
}

macro_rules! primitive {
    ($($t:ty),*) => {$(
        impl private::Sealed for $t {}
        impl PlainData for $t {
            const ZERO: Self = 0;
            const FINGERPRINT: u64 = type_fingerprint(
                stringify!($t),
                core::mem::size_of::<$t>(),
                core::mem::align_of::<$t>(),
            );
        }
    )*};
}
primitive!(u8, u16, u32, u64, i8, i16, i32, i64);

impl private::Sealed for bool {}
impl PlainData for bool {
    const ZERO: Self = false;
    const FINGERPRINT: u64 = type_fingerprint("bool", 1, 1);
}

/// No state: the new version starts from the task list alone.
impl private::Sealed for () {}
impl PlainData for () {
    const ZERO: Self = ();
    const FINGERPRINT: u64 = 0;
}

impl<T: PlainData, const N: usize> private::Sealed for [T; N] {}
impl<T: PlainData, const N: usize> PlainData for [T; N] {
    const ZERO: Self = [T::ZERO; N];
    const FINGERPRINT: u64 = mix(mix(fnv1a(FNV_BASIS, b"array"), T::FINGERPRINT), N as u64);
}

/// Declares a struct of [`PlainData`] fields as plain data itself (and
/// `Clone`, `Copy`, `Debug`, `PartialEq`); its fingerprint covers the
/// text of the definition and each field's own fingerprint.
///
/// ```
/// enoki::plain_data! {
///     /// What WFQ hands to its next version.
///     pub struct Carry {
///         pub upgrades: u32,
///         pub lags: [i64; 4],
///     }
/// }
/// let c = <Carry as enoki::upgrade::PlainData>::ZERO;
/// assert_eq!(c.upgrades, 0);
/// ```
#[macro_export]
macro_rules! plain_data {
    ($(#[$meta:meta])* $vis:vis struct $name:ident {
        $($(#[$fmeta:meta])* $fvis:vis $field:ident : $ty:ty),* $(,)?
    }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        $vis struct $name {
            $($(#[$fmeta])* $fvis $field: $ty),*
        }
        impl $crate::upgrade::private::Sealed for $name {}
        impl $crate::upgrade::PlainData for $name {
            const ZERO: Self = $name {
                $($field: <$ty as $crate::upgrade::PlainData>::ZERO),*
            };
            const FINGERPRINT: u64 = {
                let h = $crate::upgrade::type_fingerprint(
                    stringify!($name { $($field: $ty),* }),
                    core::mem::size_of::<$name>(),
                    core::mem::align_of::<$name>(),
                );
                $(let h = $crate::upgrade::mix(h, <$ty as $crate::upgrade::PlainData>::FINGERPRINT);)*
                h
            };
        }
    };
}

/// What the two versions of an upgrade must agree on: 0 when the
/// scheduler hands over no state.
pub const fn fingerprint<S: EnokiScheduler>() -> u64 {
    let state = <S::UpgradeState as PlainData>::FINGERPRINT;
    if state == 0 {
        return 0;
    }
    let h = mix(mix(state, S::STATE_VERSION as u64), ABI_VERSION as u64);
    // 0 means "no state".
    if h == 0 {
        1
    } else {
        h
    }
}

/// Whether state goes from the old version to the new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carry {
    /// The old version's state is handed over.
    State,
    /// The new version starts from the task list alone.
    Fresh,
}

/// Why an upgrade was refused; the old version keeps running, untouched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The new version could not be created.
    Init(InitError),
    /// The versions' states differ (type, definition or version).
    Mismatch {
        /// The running version's fingerprint.
        old: u64,
        /// The new version's.
        new: u64,
    },
    /// The running version could not hand over its state.
    PrepFailed,
    /// The new version could not take the state.
    InitFailed,
    /// The new version would not take task `pid` (so its token would be lost).
    TaskRefused {
        /// The task.
        pid: i32,
    },
    /// The new version reads the same hints but would not take open hint
    /// queue `queue`.
    QueueRefused {
        /// The queue.
        queue: u32,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Init(e) => write!(f, "the new version would not start: {e:?}"),
            Refusal::Mismatch { old, new } => write!(
                f,
                "the versions' upgrade states differ (fingerprint {old:#018x} running, \
                 {new:#018x} new): upgrade with fresh state to drop it"
            ),
            Refusal::PrepFailed => f.write_str("the running version could not hand over its state"),
            Refusal::InitFailed => f.write_str("the new version could not take the state"),
            Refusal::TaskRefused { pid } => {
                write!(f, "the new version would not take task {pid}")
            }
            Refusal::QueueRefused { queue } => {
                write!(f, "the new version would not take hint queue {queue}")
            }
        }
    }
}

/// What an upgrade from a version with fingerprint `old` to one with `new`
/// carries; `fresh` drops the old state whatever it is. State is carried
/// only when both versions have it; when both have it, they must match.
pub fn plan(old: u64, new: u64, fresh: bool) -> Result<Carry, Refusal> {
    match (old, new) {
        _ if fresh => Ok(Carry::Fresh),
        (0, _) | (_, 0) => Ok(Carry::Fresh),
        (o, n) if o == n => Ok(Carry::State),
        (old, new) => Err(Refusal::Mismatch { old, new }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::plain_data! {
        struct A { x: u32, y: [i64; 3] }
    }
    mod renamed {
        crate::plain_data! {
            pub struct A { pub x: u32, pub z: [i64; 3] }
        }
    }
    mod longer {
        crate::plain_data! {
            pub struct A { pub x: u32, pub y: [i64; 4] }
        }
    }

    #[test]
    fn a_fingerprint_changes_with_the_definition() {
        let a = A::FINGERPRINT;
        assert_ne!(a, renamed::A::FINGERPRINT, "a field renamed");
        assert_ne!(a, longer::A::FINGERPRINT, "an array grown");
        assert_ne!(
            <u32 as PlainData>::FINGERPRINT,
            <i32 as PlainData>::FINGERPRINT
        );
        assert_eq!(<() as PlainData>::FINGERPRINT, 0);
        assert_eq!(A::ZERO, A { x: 0, y: [0; 3] });
    }

    #[test]
    fn state_is_carried_only_between_matching_versions() {
        assert_eq!(plan(7, 7, false), Ok(Carry::State));
        assert_eq!(plan(7, 7, true), Ok(Carry::Fresh));
        assert_eq!(plan(0, 7, false), Ok(Carry::Fresh));
        assert_eq!(plan(7, 0, false), Ok(Carry::Fresh));
        assert_eq!(plan(7, 8, false), Err(Refusal::Mismatch { old: 7, new: 8 }));
        assert_eq!(plan(7, 8, true), Ok(Carry::Fresh));
    }
}
