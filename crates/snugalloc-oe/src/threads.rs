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
#[cfg(not(loom))]
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
#[cfg(loom)]
use loom::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// Most threads that can hold an allocator at once; more threads still
/// allocate, attaching for each call.
pub(crate) const TABLE_SLOTS: usize = 1024;
const EMPTY: usize = 0;
const TOMB: usize = 1;

struct Entry {
    thread: AtomicUsize,
    slot: AtomicPtr<u8>,
}

/// The table: `N` entries (a power of two), probed linearly from a
/// thread's home entry. See the module documentation for its invariants.
pub(crate) struct Table<const N: usize> {
    entries: [Entry; N],
}

#[cfg(not(loom))]
static TABLE: Table<TABLE_SLOTS> = Table::new();

#[cfg(loom)]
loom::lazy_static! {
    static ref TABLE: Table<TABLE_SLOTS> = Table::new();
}

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

/// The allocator the calling thread (`thread`) registered, if any.
#[inline(always)]
pub(crate) fn lookup(thread: usize) -> Option<*mut u8> {
    TABLE.lookup(thread)
}

/// Records `slot` for the calling thread (`thread`), which has none
/// recorded; false when the table is full.
pub(crate) fn insert(thread: usize, slot: *mut u8) -> bool {
    TABLE.insert(thread, slot)
}

/// Forgets the calling thread's (`thread`'s) allocator and returns it.
pub(crate) fn remove(thread: usize) -> Option<*mut u8> {
    TABLE.remove(thread)
}

impl<const N: usize> Table<N> {
    /// An empty table.
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Self {
        Table {
            entries: [const {
                Entry {
                    thread: AtomicUsize::new(EMPTY),
                    slot: AtomicPtr::new(null_mut()),
                }
            }; N],
        }
    }

    /// An empty table (loom's atomics have no `const` constructor).
    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        Table {
            entries: core::array::from_fn(|_| Entry {
                thread: AtomicUsize::new(EMPTY),
                slot: AtomicPtr::new(null_mut()),
            }),
        }
    }

    #[inline(always)]
    fn home(thread: usize) -> usize {
        const { assert!(N.is_power_of_two(), "a table of a power of two entries") };
        // Fibonacci hashing: thread pointers are page-aligned-ish. The top
        // log2(N) bits of the product.
        let bits = N.trailing_zeros();
        if bits == 0 {
            return 0;
        }
        (thread.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (usize::BITS - bits)) & (N - 1)
    }

    /// The entry keyed by `thread` (the caller), if any.
    #[inline(always)]
    fn find(&self, thread: usize) -> Option<&Entry> {
        if thread <= TOMB {
            return None;
        }
        let mut i = Self::home(thread);
        for _ in 0..N {
            let e = &self.entries[i];
            // Relaxed: only this thread writes an entry keyed by `thread`.
            match e.thread.load(Ordering::Relaxed) {
                k if k == thread => return Some(e),
                EMPTY => return None,
                _ => i = (i + 1) & (N - 1),
            }
        }
        None
    }

    /// The allocator `thread` (the caller) registered, if any.
    #[inline(always)]
    pub(crate) fn lookup(&self, thread: usize) -> Option<*mut u8> {
        // Relaxed: only this thread writes its entry's slot.
        self.find(thread).map(|e| e.slot.load(Ordering::Relaxed))
    }

    /// Records `slot` for `thread` (the caller, which has none recorded);
    /// false when the table is full.
    pub(crate) fn insert(&self, thread: usize, slot: *mut u8) -> bool {
        if thread <= TOMB {
            return false;
        }
        let mut i = Self::home(thread);
        for _ in 0..N {
            let e = &self.entries[i];
            // Acquire (here and for a failed exchange) pairs with the
            // Release of the claim that put the key we read there: the
            // entries that thread retired before it claimed this one are
            // seen retired further on. Read Relaxed, a weakly ordered
            // machine could show them still taken, and a table with room
            // could answer full (the loom model below found that).
            let k = e.thread.load(Ordering::Acquire);
            // Acquire on success pairs with the Release that made the entry a
            // TOMB: the remover's swap of `slot` happens before our store
            // below, so it cannot overwrite it. Release for the readers above.
            // The slot is read only by this thread.
            if (k == EMPTY || k == TOMB)
                && e.thread
                    .compare_exchange(k, thread, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                e.slot.store(slot, Ordering::Relaxed);
                return true;
            }
            i = (i + 1) & (N - 1);
        }
        false
    }

    /// Forgets `thread`'s (the caller's) allocator and returns it.
    pub(crate) fn remove(&self, thread: usize) -> Option<*mut u8> {
        let e = self.find(thread)?;
        let slot = e.slot.swap(null_mut(), Ordering::Relaxed);
        // Release pairs with the Acquire of the next claim of the entry: our
        // swap of `slot` happens before its store.
        e.thread.store(TOMB, Ordering::Release);
        Some(slot)
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    /// Two threads whose keys share their home entry in a table of two
    /// register, find their own allocator and leave, twice each: an entry
    /// one leaves may be taken by the other at once, and neither may ever
    /// see the other's allocator, or lose its own to the other's late swap.
    #[test]
    fn threads_sharing_a_home_entry_keep_their_own_allocators() {
        // Keys above TOMB with the same home in Table<2>.
        let first = 0x1000usize;
        let second = (first + 1..)
            .find(|&k| Table::<2>::home(k) == Table::<2>::home(first))
            .expect("a key with the same home");
        // Three preemptions keep the search under a second, and are what
        // the stale read it found under Relaxed loads needs: A claims home,
        // B the other entry, A leaves, B leaves and claims home and leaves
        // again, then A's claim reads both entries as B's.
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(move || {
            let table = Arc::new(Table::<2>::new());
            let run = |table: &Table<2>, key: usize, slot: usize| {
                for _ in 0..2 {
                    let p = slot as *mut u8;
                    assert!(table.insert(key, p), "the table of two is full");
                    assert_eq!(table.lookup(key), Some(p));
                    assert_eq!(table.remove(key), Some(p));
                }
            };
            let other = {
                let table = table.clone();
                loom::thread::spawn(move || run(&table, second, 0x20))
            };
            run(&table, first, 0x10);
            other.join().expect("the other thread");
        });
    }
}
