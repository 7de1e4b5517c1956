//! Environment: reads `SNUGALLOC_*` variables without allocating and turns
//! them into the heap's configuration.
//!
//! Values are read with `secure_getenv(3)`, which walks `environ` and
//! allocates nothing, and reads nothing in a setuid or setgid program (as
//! glibc ignores its own `MALLOC_*` settings there), so an unprivileged
//! user cannot shrink a privileged program's heap or make it print. A
//! malformed value is reported on standard error in one line and the
//! default is used instead.

use core::ffi::CStr;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};

use snugalloc_core::{parse_bytes, Config, ParseBytesError, MAX_CLASS_BYTES};

use crate::out::{FdWriter, Printable};

/// An invalid chunk size has been reported once.
static CHUNK_WARNED: AtomicBool = AtomicBool::new(false);

/// What the environment asks for.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Settings {
    /// `SNUGALLOC_HEAP_SIZE`: one fixed region of this size.
    pub(crate) heap_bytes: Option<usize>,
    /// `SNUGALLOC_CHUNK_SIZE`: the chunk size.
    pub(crate) chunk_bytes: Option<usize>,
    /// `SNUGALLOC_STATS`: print statistics at exit.
    pub(crate) stats_at_exit: bool,
    /// `SNUGALLOC_MAX_ALLOCATORS`: `Config::max_allocators`.
    pub(crate) max_allocators: Option<usize>,
    /// `SNUGALLOC_OOM_WAIT_MS`: `Config::out_of_memory_wait_ms`.
    pub(crate) out_of_memory_wait_ms: Option<usize>,
}

extern "C" {
    /// glibc's `getenv` that returns null in a setuid or setgid program
    /// (the `libc` crate does not declare it).
    fn secure_getenv(name: *const core::ffi::c_char) -> *mut core::ffi::c_char;
}

/// The value of variable `name`, if set.
fn get(name: &CStr) -> Option<&'static [u8]> {
    // SAFETY: `name` is NUL-terminated; secure_getenv returns null or a
    // pointer into the environment, which nobody in this library modifies.
    let p = unsafe { secure_getenv(name.as_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: secure_getenv returned a NUL-terminated string in the
    // environment.
    Some(unsafe { CStr::from_ptr(p) }.to_bytes())
}

/// Reports a value that cannot be used, in one line.
pub(crate) fn warn(name: &str, value: &[u8], why: &dyn core::fmt::Display) {
    let mut w = FdWriter::stderr();
    // FdWriter never fails.
    let _ = writeln!(
        w,
        "snugalloc: ignoring {name}={}: {why}; using the default",
        Printable(value)
    );
}

fn bytes_var(name: &str, cname: &CStr) -> Option<usize> {
    let value = get(cname)?;
    let parsed = core::str::from_utf8(value)
        .map_err(|_| "not UTF-8")
        .and_then(|text| {
            parse_bytes(text).map_err(|e| match e {
                ParseBytesError::Overflow => "too large for this machine's addresses",
                _ => "expected a byte count such as 4096, 16k, 64M or 1G",
            })
        });
    match parsed {
        Ok(0) => {
            warn(name, value, &"must not be zero");
            None
        }
        Ok(n) => Some(n),
        Err(why) => {
            warn(name, value, &why);
            None
        }
    }
}

/// A count from `min` to `max`, or `None` (with a warning when malformed).
fn count_var(name: &str, cname: &CStr, min: usize, max: usize) -> Option<usize> {
    let value = get(cname)?;
    let parsed = core::str::from_utf8(value)
        .ok()
        .and_then(|text| text.trim().parse::<usize>().ok())
        .filter(|n| (min..=max).contains(n));
    if parsed.is_none() {
        // format_args! formats in place: nothing is allocated.
        warn(
            name,
            value,
            &format_args!("a whole number from {min} to {max}"),
        );
    }
    parsed
}

fn flag_var(name: &str, cname: &CStr) -> bool {
    let Some(value) = get(cname) else {
        return false;
    };
    match value {
        b"" | b"0" | b"no" | b"false" | b"off" => false,
        b"1" | b"yes" | b"true" | b"on" => true,
        _ => {
            warn(name, value, &"expected 1 or 0");
            false
        }
    }
}

/// Reads every `SNUGALLOC_*` variable.
pub(crate) fn read() -> Settings {
    Settings {
        heap_bytes: bytes_var("SNUGALLOC_HEAP_SIZE", c"SNUGALLOC_HEAP_SIZE"),
        chunk_bytes: bytes_var("SNUGALLOC_CHUNK_SIZE", c"SNUGALLOC_CHUNK_SIZE"),
        stats_at_exit: flag_var("SNUGALLOC_STATS", c"SNUGALLOC_STATS"),
        max_allocators: count_var(
            "SNUGALLOC_MAX_ALLOCATORS",
            c"SNUGALLOC_MAX_ALLOCATORS",
            1,
            snugalloc_core::MAX_ALLOCATORS,
        ),
        out_of_memory_wait_ms: count_var(
            "SNUGALLOC_OOM_WAIT_MS",
            c"SNUGALLOC_OOM_WAIT_MS",
            0,
            snugalloc_core::MAX_OUT_OF_MEMORY_WAIT_MS as usize,
        ),
    }
}

/// `base` with chunks of `chunk_bytes` (slabs of up to four chunks, objects
/// up to one chunk), or `base` with a warning when that does not validate.
pub(crate) fn with_chunk(base: Config, chunk_bytes: Option<usize>) -> Config {
    let Some(chunk) = chunk_bytes else {
        return base;
    };
    let config = Config {
        chunk_bytes: chunk,
        max_slab_object_bytes: chunk.min(MAX_CLASS_BYTES),
        max_slab_bytes: chunk.saturating_mul(4).min(1 << 20),
        os_reserve_bytes: base.os_reserve_bytes / chunk.max(1) * chunk.max(1),
        ..base
    };
    match config.validate() {
        Ok(()) => config,
        Err(e) => {
            // Relaxed: only keeps a second heap attempt from repeating it.
            if !CHUNK_WARNED.swap(true, Ordering::Relaxed) {
                let mut text = [0u8; 24];
                let value = format_usize(chunk, &mut text);
                warn("SNUGALLOC_CHUNK_SIZE", value, &e);
            }
            base
        }
    }
}

/// Decimal digits of `n` in `buf`.
pub(crate) fn format_usize(mut n: usize, buf: &mut [u8; 24]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}
