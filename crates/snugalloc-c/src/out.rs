//! Output: a formatter that writes to a file descriptor through a fixed
//! stack buffer, for messages that must not allocate (configuration
//! warnings, the statistics table at exit).
//!
//! Invariant: `len <= buf.len()`; bytes `buf[..len]` are pending and are
//! written by [`FdWriter::flush`] (also on drop).

use core::fmt;

/// Buffers formatted text and writes it to `fd` with `write(2)` in pieces
/// of at most the buffer's size. A short line is written in one call.
pub(crate) struct FdWriter {
    fd: libc::c_int,
    buf: [u8; 512],
    len: usize,
}

impl FdWriter {
    /// A writer to standard error.
    pub(crate) const fn stderr() -> FdWriter {
        FdWriter {
            fd: 2,
            buf: [0; 512],
            len: 0,
        }
    }

    /// Writes the pending bytes; errors are ignored (there is nowhere to
    /// report them).
    pub(crate) fn flush(&mut self) {
        let mut done = 0;
        while done < self.len {
            // SAFETY: `buf[done..len]` is initialised memory we own, and
            // write(2) reads at most `len - done` bytes from it.
            let n =
                unsafe { libc::write(self.fd, self.buf[done..].as_ptr().cast(), self.len - done) };
            if n <= 0 {
                break;
            }
            done += n as usize;
        }
        self.len = 0;
    }
}

impl fmt::Write for FdWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut bytes = s.as_bytes();
        while !bytes.is_empty() {
            if self.len == self.buf.len() {
                self.flush();
            }
            let take = bytes.len().min(self.buf.len() - self.len);
            self.buf[self.len..self.len + take].copy_from_slice(&bytes[..take]);
            self.len += take;
            bytes = &bytes[take..];
        }
        Ok(())
    }
}

impl Drop for FdWriter {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Shows bytes from the environment as text, replacing anything that is not
/// printable ASCII with `?`, so a hostile value cannot forge output.
pub(crate) struct Printable<'a>(pub(crate) &'a [u8]);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.0.iter().take(64) {
            let c = if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '?'
            };
            fmt::Write::write_char(f, c)?;
        }
        if self.0.len() > 64 {
            f.write_str("...")?;
        }
        Ok(())
    }
}
