//! Platform: the only module that calls the operating system.
//!
//! It reserves and releases address space, gives pages back
//! (`MADV_DONTNEED`, so resident memory drops at once), reads a coarse
//! monotonic clock, yields the processor (and waits for a bounded time made
//! of such yields), and reports fatal errors without allocating. Without the
//! `std` feature there is no OS: only fixed regions exist, the clock reads
//! zero, a yield is a spin hint, and a fatal error panics with a message
//! formatted on the stack.

use core::fmt::{self, Write};
#[cfg(feature = "std")]
use core::ptr::NonNull;

#[cfg(feature = "std")]
use crate::sync::{AtomicUsize, Ordering};

/// Formats into a fixed stack buffer, truncating; never allocates.
struct StackWriter {
    buf: [u8; 256],
    len: usize,
}

impl Write for StackWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - self.len;
        let take = s.len().min(room);
        self.buf[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

/// Reports client misuse or corrupted metadata and stops the process.
///
/// The message is one line: `snugalloc: fatal: <what> (pointer 0x...)`.
#[cold]
#[inline(never)]
pub(crate) fn fatal(what: &str, addr: usize) -> ! {
    fatal_in("", what, addr)
}

/// As [`fatal`], naming the operation: `snugalloc: fatal: <op>: <what> ...`.
#[cold]
#[inline(never)]
pub(crate) fn fatal_in(op: &str, what: &str, addr: usize) -> ! {
    let mut w = StackWriter {
        buf: [0; 256],
        len: 0,
    };
    let sep = if op.is_empty() { "" } else { ": " };
    // Writing to a StackWriter cannot fail; it truncates instead.
    let _ = writeln!(w, "snugalloc: fatal: {op}{sep}{what} (pointer {addr:#x})");
    fatal_bytes(&w.buf[..w.len])
}

#[cfg(feature = "std")]
fn fatal_bytes(msg: &[u8]) -> ! {
    // SAFETY: `msg` is a valid, initialised byte slice for the length passed;
    // write(2) reads at most that many bytes from it.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
    }
    // SAFETY: abort takes no arguments and never returns.
    unsafe { libc::abort() }
}

#[cfg(not(feature = "std"))]
fn fatal_bytes(msg: &[u8]) -> ! {
    no_unwind_panic(msg.as_ptr(), msg.len())
}

/// Without an OS there is no `abort`: the program's panic handler gets the
/// message. The function is `extern "C"`, out of which a panic may not
/// unwind, so if the handler unwinds the program aborts rather than unwind
/// through the allocator (and out of a `GlobalAlloc` method, which is
/// undefined behaviour). That abort is Rust's behaviour from 1.81 (before,
/// unwinding out of `extern "C"` was itself undefined), hence the
/// workspace's `rust-version`.
#[cfg(not(feature = "std"))]
extern "C" fn no_unwind_panic(ptr: *const u8, len: usize) -> ! {
    // SAFETY: `ptr` and `len` describe the live slice `fatal_bytes` got.
    let msg = unsafe { core::slice::from_raw_parts(ptr, len) };
    let text = core::str::from_utf8(msg).unwrap_or("snugalloc: fatal error");
    panic!("{}", text.trim_end())
}

/// Reserves `bytes` of zeroed, readable and writable address space that the
/// OS backs with memory only when touched.
#[cfg(feature = "std")]
pub(crate) fn reserve(bytes: usize) -> Option<NonNull<u8>> {
    // SAFETY: an anonymous private mapping with a null hint creates a new
    // mapping and touches no existing memory.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        None
    } else {
        NonNull::new(p.cast())
    }
}

/// Returns a reservation made by [`reserve`] to the OS.
///
/// # Safety
/// `base` and `bytes` must be exactly a reservation returned by [`reserve`],
/// and nothing may use that memory afterwards.
#[cfg(feature = "std")]
pub(crate) unsafe fn release(base: *mut u8, bytes: usize) {
    // SAFETY: the caller guarantees this is a whole mapping of ours that is
    // no longer used.
    unsafe {
        libc::munmap(base.cast(), bytes);
    }
}

/// Whether giving pages back with `MADV_DONTNEED` really zeroes them
/// here, tried once on a page of our own: emulators (qemu's user mode) and
/// some sandboxes report success and leave the data, and then a decommitted
/// chunk is not known to read zero.
#[cfg(feature = "std")]
pub(crate) fn decommit_zeroes() -> bool {
    // 0: not tried yet, 1: zeroes, 2: does not.
    static TRIED: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);
    match TRIED.load(Ordering::Relaxed) {
        1 => return true,
        2 => return false,
        _ => {}
    }
    let page = page_size();
    let Some(p) = reserve(page) else {
        // No page to try on (an address-space limit, for a moment): not
        // known, and not remembered, so a later heap tries again.
        return false;
    };
    let p = p.as_ptr();
    // SAFETY: a fresh mapping of one page of our own: written, given back
    // whole, read, then unmapped; nobody else knows it.
    let zeroes = unsafe {
        p.write_volatile(0x5A);
        let done = decommit(p, page) == Decommitted::Whole;
        let zeroed = done && p.read_volatile() == 0;
        release(p, page);
        zeroed
    };
    // Relaxed: every thread that tries finds the same answer.
    TRIED.store(if zeroes { 1 } else { 2 }, Ordering::Relaxed);
    zeroes
}

/// The OS's page size, asked once (4 KiB if it will not say).
#[cfg(feature = "std")]
pub(crate) fn page_size() -> usize {
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    let known = PAGE.load(Ordering::Relaxed);
    if known != 0 {
        return known;
    }
    // SAFETY: sysconf reads a constant of the system; no memory is touched.
    let asked = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page = usize::try_from(asked)
        .ok()
        .filter(|p| p.is_power_of_two())
        .unwrap_or(4096);
    PAGE.store(page, Ordering::Relaxed);
    page
}

/// The whole pages of `page` bytes (a power of two) inside
/// `[base, base + bytes)`: their start and length, the length 0 when
/// there are none. A chunk may be smaller than a page (4 KiB chunks on a
/// system of 16 or 64 KiB pages), and the OS discards whole pages only.
#[cfg(any(feature = "std", test))]
fn whole_pages(base: usize, bytes: usize, page: usize) -> (usize, usize) {
    let mask = page - 1;
    let end = (base + bytes) & !mask;
    match base.checked_add(mask).map(|b| b & !mask) {
        Some(start) if start < end => (start, end - start),
        _ => (base, 0),
    }
}

/// What a decommit gave back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
// Without `std` only fixed regions exist, which give nothing back.
#[cfg_attr(not(feature = "std"), allow(dead_code))]
pub(crate) enum Decommitted {
    /// Nothing: no whole page in the range, or the OS refused (it does for
    /// locked memory).
    Nothing,
    /// Its whole pages, but the range had parts of pages at its ends,
    /// which keep their data.
    Partly,
    /// All of it: the range reads zero.
    Whole,
}

/// Gives the whole pages inside `[base, base + bytes)` back to the OS;
/// they read as zero when next touched. Parts of pages at either end are
/// left alone: the rest of such a page may be a neighbour's live chunk.
///
/// # Safety
/// The range must lie inside a reservation made by [`reserve`] and hold no
/// data anybody still needs.
#[cfg(feature = "std")]
pub(crate) unsafe fn decommit(base: *mut u8, bytes: usize) -> Decommitted {
    let (start, len) = whole_pages(base as usize, bytes, page_size());
    if len == 0 {
        return Decommitted::Nothing;
    }
    // SAFETY: `__errno_location` returns this thread's errno; the caller
    // guarantees the range is ours and unused, `[start, start + len)` lies
    // inside it and covers whole pages only, and DONTNEED on a private
    // anonymous mapping only discards its contents. errno is restored, so
    // that frees (which may decommit) never change it, as C requires.
    let done = unsafe {
        let errno = libc::__errno_location();
        let saved = *errno;
        let done = libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) == 0;
        *errno = saved;
        done
    };
    if !done {
        Decommitted::Nothing
    } else if start == base as usize && len == bytes {
        Decommitted::Whole
    } else {
        Decommitted::Partly
    }
}

/// Gives the processor to another thread (a spin hint without an OS).
pub(crate) fn yield_now() {
    #[cfg(feature = "std")]
    // SAFETY: sched_yield takes no arguments and touches no memory.
    unsafe {
        libc::sched_yield();
    }
    #[cfg(not(feature = "std"))]
    core::hint::spin_loop();
}

/// Milliseconds on a coarse monotonic clock (0 without an OS).
#[cfg(feature = "std")]
pub(crate) fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts);
    }
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000
}

#[cfg(not(feature = "std"))]
pub(crate) fn now_ms() -> u64 {
    0
}

/// Without an OS: spin hints in one pause of a [`BoundedWait`].
const SPINS_PER_PAUSE: u32 = 1024;
/// Without an OS (no clock): the pauses counted as a millisecond, about
/// 16,000 spin hints (a hint takes some 10 to 150 cycles on x86).
const PAUSES_PER_MS_WITHOUT_CLOCK: u64 = 16;
/// With an OS: most pauses per millisecond of the bound, so that a clock
/// that does not move (`clock_gettime` refused by a sandbox) cannot make
/// the wait endless. A `sched_yield` with nothing else to run returns in
/// well under a microsecond, so on an idle machine the wait can end
/// before the bound, even while a thread that would free sleeps.
const MAX_PAUSES_PER_MS: u64 = 1000;

/// A wait of about a given number of milliseconds, made of pauses that let
/// other threads run: `sched_yield` with an OS (the bound is on the
/// coarse clock, or 1,000 yields a millisecond if those come first), a
/// burst of spin hints without one (the bound is a count of pauses).
pub(crate) struct BoundedWait {
    /// The clock reading at which the wait is over (with an OS).
    until_ms: u64,
    pauses_left: u64,
}

impl BoundedWait {
    /// A wait of about `ms` milliseconds; nothing is paused yet.
    pub(crate) fn new(ms: u64) -> BoundedWait {
        let per_ms = if cfg!(feature = "std") {
            MAX_PAUSES_PER_MS
        } else {
            PAUSES_PER_MS_WITHOUT_CLOCK
        };
        BoundedWait {
            until_ms: now_ms().saturating_add(ms),
            pauses_left: ms.saturating_mul(per_ms),
        }
    }

    /// Pauses once and returns true, or returns false once the time is up.
    pub(crate) fn pause(&mut self) -> bool {
        if self.pauses_left == 0 || (cfg!(feature = "std") && now_ms() >= self.until_ms) {
            return false;
        }
        self.pauses_left -= 1;
        if cfg!(feature = "std") {
            yield_now();
        } else {
            for _ in 0..SPINS_PER_PAUSE {
                crate::sync::spin_hint();
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::whole_pages;
    #[cfg(feature = "std")]
    use super::Decommitted;
    #[cfg(feature = "std")]
    extern crate std;

    #[test]
    fn only_whole_pages_inside_a_range_are_given_back() {
        const P: usize = 64 << 10;
        // Chunks of 4 KiB on 64 KiB pages: a run inside one page gives
        // nothing back, a run across pages only the pages it covers whole.
        assert_eq!(whole_pages(P + 4096, 8192, P), (P + 4096, 0));
        assert_eq!(whole_pages(P, 8192, P), (P, 0));
        assert_eq!(whole_pages(P, P, P), (P, P));
        assert_eq!(whole_pages(P - 4096, P + 8192, P), (P, P));
        assert_eq!(whole_pages(P - 4096, 2 * P, P), (P, P));
        assert_eq!(whole_pages(P - 4096, 2 * P + 4096, P), (P, 2 * P));
        // Chunks no smaller than pages: the range itself.
        assert_eq!(
            whole_pages(3 * 16384, 5 * 16384, 4096),
            (3 * 16384, 5 * 16384)
        );
    }

    /// A decommit says the range reads zero only when it gave back all of
    /// it: a part of a page stays as it was.
    #[test]
    #[cfg(feature = "std")]
    #[cfg_attr(miri, ignore = "Miri does not model madvise")]
    fn a_decommit_says_whether_the_whole_range_reads_zero() {
        if !super::decommit_zeroes() {
            // An emulator's madvise that leaves data behind: nothing here
            // is true there (and the heap knows it).
            std::eprintln!("SKIPPED: madvise(MADV_DONTNEED) does not zero here");
            return;
        }
        let page = super::page_size();
        let bytes = 4 * page;
        let base = super::reserve(bytes).expect("reserve").as_ptr();
        // SAFETY: our own fresh mapping of `bytes` bytes, used by nobody
        // else, released at the end.
        unsafe {
            base.write_bytes(7, bytes);
            assert_eq!(super::decommit(base, 2 * page), Decommitted::Whole);
            assert_eq!(*base.add(page), 0);
            assert_eq!(
                super::decommit(base.add(2 * page), page / 2),
                Decommitted::Nothing
            );
            assert_eq!(*base.add(2 * page), 7, "part of a page was given back");
            assert_eq!(
                super::decommit(base.add(2 * page), page + page / 2),
                Decommitted::Partly
            );
            assert_eq!(*base.add(2 * page), 0);
            assert_eq!(*base.add(3 * page), 7);
            super::release(base, bytes);
        }
    }
}
