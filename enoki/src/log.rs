// SPDX-License-Identifier: GPL-2.0
//! Logging that is safe on the scheduling path (the kernel backend defers
//! printing, since printk from under a runqueue lock can deadlock).

/// Severity of a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Something failed.
    Error,
    /// Something looks wrong.
    Warn,
    /// For the record.
    Info,
    /// For developers.
    Debug,
}

/// Emits one line; use the [`info!`](crate::info) family instead.
pub fn emit(level: Level, args: core::fmt::Arguments<'_>) {
    super::backend::log(level, args);
}

/// Logs at info level: `enoki::info!("cpu {} idle", cpu)`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::emit($crate::log::Level::Info, format_args!($($arg)*)) };
}

/// Logs at warning level.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::emit($crate::log::Level::Warn, format_args!($($arg)*)) };
}

/// Logs at error level.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::emit($crate::log::Level::Error, format_args!($($arg)*)) };
}

/// A fixed buffer that formatted text is written into, truncating.
pub struct LineBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> LineBuf<N> {
    /// An empty line.
    pub const fn new() -> Self {
        LineBuf {
            buf: [0; N],
            len: 0,
        }
    }

    /// The text written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl<const N: usize> Default for LineBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> core::fmt::Write for LineBuf<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(N - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Formats `args` into a [`LineBuf`], truncating at `N` bytes.
pub fn format_line<const N: usize>(args: core::fmt::Arguments<'_>) -> LineBuf<N> {
    let mut line = LineBuf::new();
    // Writing to a LineBuf never fails; a Display impl that does is ignored.
    let _ = core::fmt::write(&mut line, args);
    line
}

#[cfg(test)]
mod tests {
    #[test]
    fn line_truncates() {
        let l = super::format_line::<8>(format_args!("cpu {} idle", 12));
        assert_eq!(l.as_bytes(), b"cpu 12 i");
    }
}
