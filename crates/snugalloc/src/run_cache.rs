//! Run cache: free chunk runs an allocator keeps for its own next slab or
//! large object of the same length, so that a run freed and soon wanted
//! again does not go through the shared backend twice. In force only in
//! heaps of at least `Config::chunk_cache_min_heap_bytes`.
//!
//! Only the allocator's holder (the thread holding its `busy` flag) puts
//! runs in, but any thread may empty the cache at any time: a thread about
//! to report out of memory takes the runs of every allocator, attached or
//! not, and gives them to the backend (`HeapInner::reclaim_others`). So a
//! cached run is never stranded in the allocator of a thread that is
//! descheduled in the middle of an ECall.
//!
//! The protocol is one word per run. A slot is 0 (empty) or a run's
//! encoded start and length. Only the holder makes a slot non-zero, with a
//! compare-and-swap from 0; the holder and thieves empty a slot with one
//! swap, and whoever's swap returns the run owns it. The chunk count is
//! raised before a slot is filled and lowered after it is emptied, so it
//! is never below the chunks in the slots.

use crate::sync::model::{AtomicU64, AtomicUsize, Ordering};

/// Runs one cache holds at most.
#[cfg(not(loom))]
pub(crate) const CACHE_RUNS: usize = 16;
/// Fewer slots under loom, which explores every interleaving of them.
#[cfg(loom)]
pub(crate) const CACHE_RUNS: usize = 2;

/// A run as a slot holds it: start in the high half, length in the low
/// half (never 0, so an encoded run is never an empty slot).
#[inline]
fn encode(start: usize, n: usize) -> u64 {
    debug_assert!(n > 0 && n <= u32::MAX as usize && start <= u32::MAX as usize);
    (start as u64) << 32 | n as u64
}

#[inline]
fn decode(v: u64) -> (usize, usize) {
    ((v >> 32) as usize, (v & u32::MAX as u64) as usize)
}

/// An allocator's cached runs.
///
/// Invariants: a non-zero slot holds a run of chunks that the backend
/// counts as held, that no slab, object or other slot uses, and whose
/// pagemap entries say free; only the allocator's holder writes a non-zero
/// value, and only into a slot that reads 0; `chunks` is at least the total
/// length of the runs in the slots.
pub(crate) struct RunCache {
    slots: [AtomicU64; CACHE_RUNS],
    chunks: AtomicUsize,
}

impl RunCache {
    pub(crate) fn new() -> RunCache {
        RunCache {
            slots: core::array::from_fn(|_| AtomicU64::new(0)),
            chunks: AtomicUsize::new(0),
        }
    }

    /// Chunks in the cache (at least those in the slots; a statistic).
    pub(crate) fn chunks(&self) -> usize {
        self.chunks.load(Ordering::Relaxed)
    }

    /// Takes a cached run of exactly `n` chunks; returns its start. Only
    /// the allocator's holder calls this.
    #[inline]
    pub(crate) fn take(&self, n: usize) -> Option<usize> {
        if self.chunks.load(Ordering::Relaxed) == 0 {
            return None;
        }
        for slot in &self.slots {
            let v = slot.load(Ordering::Relaxed);
            if v == 0 || decode(v).1 != n {
                continue;
            }
            // Acquire pairs with the Release store in `put` (ours, so only
            // for form). A thief may have emptied the slot since the load:
            // the swap says who has the run. Nobody else makes a slot
            // non-zero, so the swap returns `v` or 0.
            if slot.swap(0, Ordering::Acquire) == v {
                self.chunks.fetch_sub(n, Ordering::Relaxed);
                return Some(decode(v).0);
            }
        }
        None
    }

    /// Keeps the run of `n` chunks at `start` if an empty slot is left and
    /// the cache stays within `limit_chunks`; returns whether it did. Only
    /// the allocator's holder calls this.
    ///
    /// # Safety
    /// The caller must be the allocator's holder, and must hold the run
    /// (claimed from the backend, used by nothing, its pagemap entries
    /// saying free) and give it up.
    #[inline]
    pub(crate) unsafe fn put(&self, start: usize, n: usize, limit_chunks: usize) -> bool {
        if self.chunks.load(Ordering::Relaxed) + n > limit_chunks {
            return false;
        }
        for slot in &self.slots {
            if slot.load(Ordering::Relaxed) != 0 {
                continue;
            }
            // Counted first: the count never falls below the slots.
            self.chunks.fetch_add(n, Ordering::Relaxed);
            // Release pairs with the Acquire swaps in `take` and `drain`:
            // whoever empties the slot sees the pagemap writes that freed
            // the run. Only the holder fills slots, so the slot is still
            // empty; a compare-and-swap rather than a store all the same,
            // so that the fill and the thieves' swaps are ordered as
            // read-modify-writes of one word (loom finds a plain store
            // ordered before a swap that read the value under it).
            if slot
                .compare_exchange(0, encode(start, n), Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                return true;
            }
            self.chunks.fetch_sub(n, Ordering::Relaxed);
        }
        false
    }

    /// Empties every slot, handing each run taken to `give` (start,
    /// length), which then holds it. Any thread may call this at any time.
    pub(crate) fn drain(&self, mut give: impl FnMut(usize, usize)) {
        if self.chunks.load(Ordering::Relaxed) == 0 {
            return;
        }
        for slot in &self.slots {
            // Acquire pairs with the Release store in `put`.
            let v = slot.swap(0, Ordering::Acquire);
            if v != 0 {
                let (start, n) = decode(v);
                self.chunks.fetch_sub(n, Ordering::Relaxed);
                give(start, n);
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    extern crate std;
    use std::vec;
    use std::vec::Vec;

    #[test]
    fn takes_exact_lengths_and_respects_the_limit() {
        let c = RunCache::new();
        // SAFETY: the runs are made up; nothing is dereferenced.
        unsafe {
            assert!(c.put(10, 2, 8));
            assert!(c.put(20, 4, 8));
            assert!(!c.put(30, 4, 8), "over the limit");
            assert!(c.put(40, 2, 8));
        }
        assert_eq!(c.chunks(), 8);
        assert_eq!(c.take(3), None);
        assert_eq!(c.take(4), Some(20));
        assert_eq!(c.take(4), None);
        let mut got = Vec::new();
        c.drain(|s, n| got.push((s, n)));
        got.sort();
        assert_eq!(got, vec![(10, 2), (40, 2)]);
        assert_eq!(c.chunks(), 0);
        assert_eq!(c.take(2), None);
    }

    #[test]
    fn holds_at_most_its_slots() {
        let c = RunCache::new();
        for i in 0..CACHE_RUNS {
            // SAFETY: made-up runs.
            assert!(unsafe { c.put(i * 4, 1, usize::MAX) });
        }
        // SAFETY: made-up run.
        assert!(!unsafe { c.put(1000, 1, usize::MAX) });
        assert_eq!(c.chunks(), CACHE_RUNS);
        // A run at chunk 0 of length 1 is not an empty slot.
        assert_eq!(c.take(1), Some(0));
    }
}

/// Model checks (run with `RUSTFLAGS="--cfg loom"`, see `.ci/loom`).
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    extern crate std;
    use loom::sync::Arc;
    use std::vec;
    use std::vec::Vec;

    /// The holder takes and puts runs while a thief empties the cache:
    /// every run ends up with exactly one of them, and the count matches.
    #[test]
    fn loom_every_run_has_one_owner_when_a_thief_drains() {
        loom::model(|| {
            let c = Arc::new(RunCache::new());
            // SAFETY: made-up runs; the model only moves their numbers.
            unsafe {
                assert!(c.put(1, 1, 8));
                assert!(c.put(2, 2, 8));
            }
            let thief = {
                let c = c.clone();
                loom::thread::spawn(move || {
                    let mut got = Vec::new();
                    c.drain(|s, n| got.push((s, n)));
                    got
                })
            };
            let mut mine = Vec::new();
            if let Some(s) = c.take(2) {
                mine.push((s, 2));
            }
            // SAFETY: made-up run.
            if unsafe { c.put(3, 1, 8) } {
                if let Some(s) = c.take(1) {
                    mine.push((s, 1));
                }
            } else {
                // No slot seen empty (a Relaxed load may see the holder's
                // own older write): the run would go to the backend.
                mine.push((3, 1));
            }
            let mut all = thief.join().unwrap();
            c.drain(|s, n| all.push((s, n)));
            all.extend(mine);
            all.sort();
            // Every run exactly once: with the holder, the thief, or left
            // in the cache.
            assert_eq!(all, vec![(1, 1), (2, 2), (3, 1)]);
            assert_eq!(c.chunks(), 0);
        });
    }
}
