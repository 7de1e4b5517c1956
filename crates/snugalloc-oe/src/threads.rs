//! Threads: which allocator each enclave thread has attached between
//! `oe_allocator_thread_init` and `oe_allocator_thread_cleanup`.
//!
//! Open Enclave zeroes a thread's TLS after every outermost ECall, so
//! nothing is kept there. Instead a fixed open-addressing table maps the
//! thread pointer (the self pointer at `fs:0` on x86-64, `tpidr_el0` on
//! AArch64; unique among live threads) to the thread's attached allocator.
//!
//! Invariants, which make lookups lock-free:
//! - an entry's key goes `EMPTY → thread → TOMB → thread' → TOMB ...` and
//!   never back to `EMPTY`, so a probe that meets `EMPTY` may stop;
//! - only the thread named by a key writes that entry's `slot` or retires
//!   it, and a thread looks up only its own key, so its own program order
//!   orders everything it reads.

use core::ptr::null_mut;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// Most threads that can hold an allocator at once; more threads still
/// allocate, attaching for each call.
pub(crate) const TABLE_SLOTS: usize = 1024;
const MASK: usize = TABLE_SLOTS - 1;
const EMPTY: usize = 0;
const TOMB: usize = 1;

struct Entry {
    thread: AtomicUsize,
    slot: AtomicPtr<u8>,
}

static TABLE: [Entry; TABLE_SLOTS] = [const {
    Entry {
        thread: AtomicUsize::new(EMPTY),
        slot: AtomicPtr::new(null_mut()),
    }
}; TABLE_SLOTS];

/// The calling thread's identity, or 0 where the architecture gives none
/// (then every call attaches for itself).
#[inline(always)]
pub(crate) fn current() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        let tp: usize;
        // SAFETY: on x86-64 Linux and Open Enclave the thread pointer (fs
        // base) points at a block whose first word is its own address;
        // reading it has no side effects.
        unsafe {
            core::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp,
                options(nostack, readonly, preserves_flags));
        }
        tp
    }
    #[cfg(target_arch = "aarch64")]
    {
        let tp: usize;
        // SAFETY: reading the thread pointer register has no side effects.
        unsafe {
            core::arch::asm!("mrs {}, tpidr_el0", out(reg) tp,
                options(nomem, nostack, preserves_flags));
        }
        tp
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        0
    }
}

#[inline(always)]
fn home(thread: usize) -> usize {
    // Fibonacci hashing: thread pointers are page-aligned-ish.
    (thread.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) & MASK
}

/// The allocator `thread` (the caller) registered, if any.
#[inline(always)]
pub(crate) fn lookup(thread: usize) -> Option<*mut u8> {
    if thread <= TOMB {
        return None;
    }
    let mut i = home(thread);
    for _ in 0..TABLE_SLOTS {
        let e = &TABLE[i];
        // Relaxed: only this thread writes an entry keyed by `thread`.
        match e.thread.load(Ordering::Relaxed) {
            k if k == thread => return Some(e.slot.load(Ordering::Relaxed)),
            EMPTY => return None,
            _ => i = (i + 1) & MASK,
        }
    }
    None
}

/// Records `slot` for `thread` (the caller, which has none recorded);
/// false when the table is full.
pub(crate) fn insert(thread: usize, slot: *mut u8) -> bool {
    if thread <= TOMB {
        return false;
    }
    let mut i = home(thread);
    for _ in 0..TABLE_SLOTS {
        let e = &TABLE[i];
        let k = e.thread.load(Ordering::Relaxed);
        // Acquire on success pairs with the Release that made the entry a
        // TOMB: the remover's swap of `slot` happens before our store
        // below, so it cannot overwrite it (on a weakly ordered machine a
        // Relaxed claim would allow that). The slot is read only by this
        // thread.
        if (k == EMPTY || k == TOMB)
            && e.thread
                .compare_exchange(k, thread, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            e.slot.store(slot, Ordering::Relaxed);
            return true;
        }
        i = (i + 1) & MASK;
    }
    false
}

/// Forgets `thread`'s (the caller's) allocator and returns it.
pub(crate) fn remove(thread: usize) -> Option<*mut u8> {
    if thread <= TOMB {
        return None;
    }
    let mut i = home(thread);
    for _ in 0..TABLE_SLOTS {
        let e = &TABLE[i];
        match e.thread.load(Ordering::Relaxed) {
            k if k == thread => {
                let slot = e.slot.swap(null_mut(), Ordering::Relaxed);
                // Release pairs with the Acquire of the next claim of the
                // entry: our swap of `slot` happens before its store.
                e.thread.store(TOMB, Ordering::Release);
                return Some(slot);
            }
            EMPTY => return None,
            _ => i = (i + 1) & MASK,
        }
    }
    None
}
