//! Chunk backend: hands out runs of whole chunks of the region, of any
//! length and alignment, and takes them back.
//!
//! The state is a bitmap with one bit per chunk (set = in use), searched
//! first-fit from the lowest address, so freed neighbours merge by
//! themselves and long runs stay available at the top of the region. This
//! issue's version serialises changes with one spin lock; the interface
//! (`alloc_run`, `free_run`, `try_grow`) does not expose it.
//!
//! For sources that decommit, a second bitmap marks free chunks that are
//! still resident ("dirty"). They are given back to the OS when their total
//! passes `dirty_limit_bytes`, or at the first backend operation
//! `decommit_delay_ms` after the oldest was freed. The chunks being given
//! back are marked in use while the lock is dropped for the system call.
//!
//! Invariants (under the lock):
//! - bits past `chunks` in the last word are set, so they are never handed out;
//! - a dirty bit is set only for a free chunk;
//! - `dirty_chunks` is the number of dirty bits;
//! - every word below `hint_word` is full.

use crate::config::Config;
use crate::platform;
use crate::source::Source;
use crate::sync::{AtomicU64, AtomicUsize, Ordering, SpinLock};

const WORD_BITS: usize = 64;

/// The backend's mutable state beyond the bitmaps.
struct State {
    hint_word: usize,
    dirty_chunks: usize,
    oldest_dirty_ms: u64,
}

/// The chunk backend over one region.
///
/// Invariant: `used` and `dirty` each point to `words` initialised words
/// that live as long as the heap; chunk `i` starts at `base + i << shift`.
pub(crate) struct Backend {
    used: *const AtomicU64,
    dirty: *const AtomicU64,
    words: usize,
    chunks: usize,
    base: usize,
    chunk_shift: u32,
    source: &'static dyn Source,
    dirty_limit_chunks: usize,
    decommit_delay_ms: u64,
    state: SpinLock<State>,
    reserved_chunks: AtomicUsize,
    peak_reserved_chunks: AtomicUsize,
    /// One past the highest chunk ever handed out.
    high_water: AtomicUsize,
}

// SAFETY: the bitmaps are atomics, and `State` is behind the lock; the raw
// pointers only name memory that lives as long as the heap.
unsafe impl Sync for Backend {}
// SAFETY: as above.
unsafe impl Send for Backend {}

/// Words of bitmap needed for `chunks` chunks.
pub(crate) const fn bitmap_words(chunks: usize) -> usize {
    chunks.div_ceil(WORD_BITS)
}

impl Backend {
    /// Builds a backend whose chunks are all free.
    ///
    /// # Safety
    /// `used` and `dirty` must each be valid for `bitmap_words(chunks)`
    /// words, zeroed or not, exclusively owned by the backend for as long as
    /// it lives.
    pub(crate) unsafe fn new(
        used: *mut AtomicU64,
        dirty: *mut AtomicU64,
        chunks: usize,
        base: usize,
        chunk_shift: u32,
        source: &'static dyn Source,
        config: &Config,
    ) -> Backend {
        let words = bitmap_words(chunks);
        for i in 0..words {
            // SAFETY: `i < words`, within both bitmaps (caller's guarantee).
            unsafe {
                used.add(i).write(AtomicU64::new(0));
                dirty.add(i).write(AtomicU64::new(0));
            }
        }
        let tail_bits = chunks % WORD_BITS;
        if tail_bits != 0 {
            // SAFETY: `words >= 1` when `tail_bits != 0`.
            unsafe { &*used.add(words - 1) }.store(!0u64 << tail_bits, Ordering::Relaxed);
        }
        Backend {
            used,
            dirty,
            words,
            chunks,
            base,
            chunk_shift,
            source,
            dirty_limit_chunks: (config.dirty_limit_bytes >> chunk_shift).max(1),
            decommit_delay_ms: config.decommit_delay_ms,
            state: SpinLock::new(State {
                hint_word: 0,
                dirty_chunks: 0,
                oldest_dirty_ms: 0,
            }),
            reserved_chunks: AtomicUsize::new(0),
            peak_reserved_chunks: AtomicUsize::new(0),
            high_water: AtomicUsize::new(0),
        }
    }

    #[inline]
    fn used(&self, word: usize) -> &AtomicU64 {
        debug_assert!(word < self.words);
        // SAFETY: `word < words` and the bitmap lives as long as `self`.
        unsafe { &*self.used.add(word) }
    }

    #[inline]
    fn dirty(&self, word: usize) -> &AtomicU64 {
        debug_assert!(word < self.words);
        // SAFETY: `word < words` and the bitmap lives as long as `self`.
        unsafe { &*self.dirty.add(word) }
    }

    pub(crate) fn chunks(&self) -> usize {
        self.chunks
    }

    /// Chunks handed out now (slabs, large objects, allocator metadata).
    pub(crate) fn reserved_chunks(&self) -> usize {
        self.reserved_chunks.load(Ordering::Relaxed)
    }

    /// One past the highest chunk ever handed out.
    pub(crate) fn high_water(&self) -> usize {
        self.high_water.load(Ordering::Relaxed)
    }

    /// Most chunks ever handed out at once.
    pub(crate) fn peak_reserved_chunks(&self) -> usize {
        self.peak_reserved_chunks.load(Ordering::Relaxed)
    }

    /// First free chunk at or after `pos`, under the lock.
    fn next_free(&self, pos: usize) -> Option<usize> {
        let mut word = pos / WORD_BITS;
        if word >= self.words {
            return None;
        }
        // Treat bits below `pos` in its word as used.
        let mut bits = self.used(word).load(Ordering::Relaxed) | ((1u64 << (pos % WORD_BITS)) - 1);
        loop {
            if bits != !0 {
                return Some(word * WORD_BITS + bits.trailing_ones() as usize);
            }
            word += 1;
            if word >= self.words {
                return None;
            }
            bits = self.used(word).load(Ordering::Relaxed);
        }
    }

    /// Length of the free run starting at `start`, counted up to `limit`.
    fn free_run_len(&self, start: usize, limit: usize) -> usize {
        let mut len = 0;
        let mut pos = start;
        while len < limit && pos < self.chunks {
            let bit = pos % WORD_BITS;
            let bits = self.used(pos / WORD_BITS).load(Ordering::Relaxed) >> bit;
            let zeros = (bits.trailing_zeros() as usize).min(WORD_BITS - bit);
            len += zeros;
            if zeros < WORD_BITS - bit {
                break;
            }
            pos += zeros;
        }
        len.min(limit)
    }

    /// Sets (`claim`) or clears the used bits of `[start, start + n)`;
    /// returns how many of them were dirty (and clears those when claiming).
    fn mark(&self, start: usize, n: usize, claim: bool) -> usize {
        let mut dirty_seen = 0;
        let mut pos = start;
        let end = start + n;
        while pos < end {
            let bit = pos % WORD_BITS;
            let take = (WORD_BITS - bit).min(end - pos);
            let mask = if take == WORD_BITS {
                !0
            } else {
                ((1u64 << take) - 1) << bit
            };
            let word = pos / WORD_BITS;
            if claim {
                debug_assert_eq!(
                    self.used(word).load(Ordering::Relaxed) & mask,
                    0,
                    "claiming a used chunk"
                );
                self.used(word).fetch_or(mask, Ordering::Relaxed);
                let d = self.dirty(word).fetch_and(!mask, Ordering::Relaxed) & mask;
                dirty_seen += d.count_ones() as usize;
            } else {
                debug_assert_eq!(
                    self.used(word).load(Ordering::Relaxed) & mask,
                    mask,
                    "freeing a free chunk"
                );
                self.used(word).fetch_and(!mask, Ordering::Relaxed);
            }
            pos += take;
        }
        dirty_seen
    }

    /// Claims the lowest run of `n` free chunks whose first chunk's address
    /// is a multiple of `align_bytes` (a power of two). Returns its first
    /// chunk.
    pub(crate) fn alloc_run(&self, n: usize, align_bytes: usize) -> Option<usize> {
        if n == 0 || n > self.chunks {
            return None;
        }
        let found = {
            let mut state = self.state.lock();
            let found = self.find(&state, n, align_bytes);
            if let Some(start) = found {
                let dirty = self.mark(start, n, true);
                state.dirty_chunks -= dirty;
                if start / WORD_BITS == state.hint_word {
                    // Move the hint past words this claim filled.
                    let mut w = state.hint_word;
                    while w < self.words && self.used(w).load(Ordering::Relaxed) == !0 {
                        w += 1;
                    }
                    state.hint_word = w;
                }
                let now = self.reserved_chunks.fetch_add(n, Ordering::Relaxed) + n;
                self.peak_reserved_chunks.fetch_max(now, Ordering::Relaxed);
                self.high_water.fetch_max(start + n, Ordering::Relaxed);
            }
            found
        };
        self.maybe_decommit();
        found
    }

    /// First-fit search, under the lock.
    fn find(&self, state: &State, n: usize, align_bytes: usize) -> Option<usize> {
        let chunk_bytes = 1usize << self.chunk_shift;
        let align = align_bytes.max(chunk_bytes);
        let mut pos = state.hint_word * WORD_BITS;
        loop {
            let start = self.next_free(pos)?;
            let addr = self.base + (start << self.chunk_shift);
            let aligned =
                start + ((addr.checked_next_multiple_of(align)? - addr) >> self.chunk_shift);
            if aligned.checked_add(n)? > self.chunks {
                return None;
            }
            let run = self.free_run_len(aligned, n);
            if run == n {
                return Some(aligned);
            }
            pos = aligned + run + 1;
        }
    }

    /// Extends the run `[start, start + old_n)` in place to `new_n` chunks if
    /// the chunks after it are free.
    pub(crate) fn try_grow(&self, start: usize, old_n: usize, new_n: usize) -> bool {
        debug_assert!(new_n > old_n);
        let extra = new_n - old_n;
        let tail = start + old_n;
        if tail + extra > self.chunks {
            return false;
        }
        let mut state = self.state.lock();
        if self.free_run_len(tail, extra) < extra {
            return false;
        }
        let dirty = self.mark(tail, extra, true);
        state.dirty_chunks -= dirty;
        let now = self.reserved_chunks.fetch_add(extra, Ordering::Relaxed) + extra;
        self.peak_reserved_chunks.fetch_max(now, Ordering::Relaxed);
        self.high_water.fetch_max(start + new_n, Ordering::Relaxed);
        true
    }

    /// Returns `[start, start + n)` to the free pool.
    pub(crate) fn free_run(&self, start: usize, n: usize) {
        debug_assert!(n > 0 && start + n <= self.chunks);
        {
            let mut state = self.state.lock();
            self.mark(start, n, false);
            if self.source.decommits() {
                self.set_dirty(start, n);
                if state.dirty_chunks == 0 {
                    state.oldest_dirty_ms = platform::now_ms();
                }
                state.dirty_chunks += n;
            }
            state.hint_word = state.hint_word.min(start / WORD_BITS);
            self.reserved_chunks.fetch_sub(n, Ordering::Relaxed);
        }
        self.maybe_decommit();
    }

    fn set_dirty(&self, start: usize, n: usize) {
        let mut pos = start;
        let end = start + n;
        while pos < end {
            let bit = pos % WORD_BITS;
            let take = (WORD_BITS - bit).min(end - pos);
            let mask = if take == WORD_BITS {
                !0
            } else {
                ((1u64 << take) - 1) << bit
            };
            self.dirty(pos / WORD_BITS)
                .fetch_or(mask, Ordering::Relaxed);
            pos += take;
        }
    }

    /// Gives dirty chunks back to the OS when there are too many or they
    /// are old enough.
    fn maybe_decommit(&self) {
        if !self.source.decommits() {
            return;
        }
        const BATCH: usize = 32;
        loop {
            let mut runs = [(0usize, 0usize); BATCH];
            let mut count = 0;
            {
                let mut state = self.state.lock();
                if state.dirty_chunks == 0 {
                    return;
                }
                let over = state.dirty_chunks >= self.dirty_limit_chunks;
                let old = platform::now_ms().saturating_sub(state.oldest_dirty_ms)
                    >= self.decommit_delay_ms;
                if !over && !old {
                    return;
                }
                // Claim up to BATCH dirty runs so nobody reuses them while
                // the lock is dropped.
                let mut word = 0;
                while word < self.words && count < BATCH {
                    let d = self.dirty(word).load(Ordering::Relaxed);
                    if d == 0 {
                        word += 1;
                        continue;
                    }
                    let start = word * WORD_BITS + d.trailing_zeros() as usize;
                    let mut len = 0;
                    while start + len < self.chunks && self.is_dirty(start + len) {
                        len += 1;
                    }
                    let dirty = self.mark(start, len, true);
                    debug_assert_eq!(dirty, len);
                    state.dirty_chunks -= len;
                    runs[count] = (start, len);
                    count += 1;
                    word = (start + len) / WORD_BITS;
                }
                if state.dirty_chunks > 0 {
                    state.oldest_dirty_ms = platform::now_ms();
                }
            }
            for &(start, len) in &runs[..count] {
                let addr = (self.base + (start << self.chunk_shift)) as *mut u8;
                // SAFETY: these chunks are free chunks of this heap's source,
                // marked in use above so nobody else touches them now.
                unsafe { self.source.decommit(addr, len << self.chunk_shift) };
            }
            let mut state = self.state.lock();
            for &(start, len) in &runs[..count] {
                self.mark(start, len, false);
                state.hint_word = state.hint_word.min(start / WORD_BITS);
            }
            if count < BATCH {
                return;
            }
        }
    }

    fn is_dirty(&self, chunk: usize) -> bool {
        self.dirty(chunk / WORD_BITS).load(Ordering::Relaxed) >> (chunk % WORD_BITS) & 1 == 1
    }

    /// Holds the backend's lock until [`Backend::unlock_after_fork`].
    pub(crate) fn lock_for_fork(&self) {
        self.state.lock_raw();
    }

    /// # Safety
    /// Must follow [`Backend::lock_for_fork`] by this thread, or by the
    /// thread that forked this process.
    pub(crate) unsafe fn unlock_after_fork(&self) {
        // SAFETY: the caller's contract is `unlock_raw`'s.
        unsafe { self.state.unlock_raw() }
    }

    /// Free chunks, and the longest run of free chunks (a racy snapshot).
    /// Chunks above the high-water mark were never used: one free run.
    pub(crate) fn free_summary(&self) -> (usize, usize) {
        let high = self.high_water().min(self.chunks);
        let mut free = 0;
        let mut longest = 0;
        let mut run = 0;
        for chunk in 0..high {
            let in_use =
                self.used(chunk / WORD_BITS).load(Ordering::Relaxed) >> (chunk % WORD_BITS) & 1
                    == 1;
            if in_use {
                run = 0;
            } else {
                free += 1;
                run += 1;
                longest = longest.max(run);
            }
        }
        let untouched = self.chunks - high;
        (free + untouched, longest.max(run + untouched))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{FIXED_REGION, OS_REGION};
    extern crate std;
    use std::vec::Vec;

    fn backend(chunks: usize) -> (Backend, Vec<AtomicU64>, Vec<AtomicU64>) {
        let words = bitmap_words(chunks);
        let mut used: Vec<AtomicU64> = (0..words).map(|_| AtomicU64::new(0)).collect();
        let mut dirty: Vec<AtomicU64> = (0..words).map(|_| AtomicU64::new(0)).collect();
        // SAFETY: both vectors hold `words` words and outlive the backend
        // (returned alongside it).
        let b = unsafe {
            Backend::new(
                used.as_mut_ptr(),
                dirty.as_mut_ptr(),
                chunks,
                0x1000_0000,
                12,
                &FIXED_REGION,
                &Config::for_region(1 << 20),
            )
        };
        (b, used, dirty)
    }

    #[test]
    fn first_fit_and_merge() {
        let (b, _u, _d) = backend(200);
        assert_eq!(b.alloc_run(1, 0), Some(0));
        assert_eq!(b.alloc_run(3, 0), Some(1));
        assert_eq!(b.alloc_run(70, 0), Some(4));
        assert_eq!(b.reserved_chunks(), 74);
        b.free_run(1, 3);
        // A run of 2 fits in the hole; a run of 4 does not.
        assert_eq!(b.alloc_run(2, 0), Some(1));
        assert_eq!(b.alloc_run(4, 0), Some(74));
        b.free_run(0, 1);
        b.free_run(1, 2);
        // The hole merged with the freed neighbours: 4 chunks at 0.
        assert_eq!(b.alloc_run(4, 0), Some(0));
        b.free_run(0, 4);
        b.free_run(4, 70);
        b.free_run(74, 4);
        assert_eq!(b.reserved_chunks(), 0);
        assert_eq!(b.peak_reserved_chunks(), 78);
        assert_eq!(b.free_summary(), (200, 200));
        // The whole region is one run again.
        assert_eq!(b.alloc_run(200, 0), Some(0));
        assert_eq!(b.alloc_run(1, 0), None);
    }

    #[test]
    fn aligned_runs_and_growth() {
        let (b, _u, _d) = backend(300);
        assert_eq!(b.alloc_run(1, 0), Some(0));
        // 64 KiB alignment = 16 chunks from a 0x1000_0000 base.
        assert_eq!(b.alloc_run(2, 64 << 10), Some(16));
        assert!(b.try_grow(16, 2, 10));
        assert!(!b.try_grow(0, 1, 17), "chunk 16 is in use");
        assert!(b.try_grow(0, 1, 16));
        assert_eq!(b.reserved_chunks(), 26);
        assert_eq!(b.alloc_run(300, 0), None);
        assert!(!b.try_grow(16, 10, 290));
    }

    #[test]
    #[cfg(feature = "std")]
    fn decommit_source_tracks_dirty_chunks() {
        let words = bitmap_words(100);
        let mut used: Vec<AtomicU64> = (0..words).map(|_| AtomicU64::new(0)).collect();
        let mut dirty: Vec<AtomicU64> = (0..words).map(|_| AtomicU64::new(0)).collect();
        // A real mapping, so that madvise has something to act on.
        let region = crate::platform::reserve(100 << 12).expect("reserve");
        // SAFETY: the bitmaps hold `words` words and outlive the backend.
        let b = unsafe {
            Backend::new(
                used.as_mut_ptr(),
                dirty.as_mut_ptr(),
                100,
                region.as_ptr() as usize,
                12,
                &OS_REGION,
                &Config {
                    dirty_limit_bytes: 8 << 12,
                    decommit_delay_ms: 1_000_000,
                    ..Config::for_os()
                },
            )
        };
        let start = b.alloc_run(20, 0).expect("room");
        // SAFETY: chunk memory of a fresh mapping we own.
        unsafe { core::ptr::write_bytes(region.as_ptr(), 0xAB, 20 << 12) };
        b.free_run(start, 20);
        // 20 chunks exceed the 8-chunk dirty limit: all were given back.
        assert_eq!(b.state.lock().dirty_chunks, 0);
        // SAFETY: the mapping is still ours; decommitted pages read as zero.
        assert_eq!(unsafe { *region.as_ptr().add(5 << 12) }, 0);
        assert_eq!(b.free_summary(), (100, 100));
        // SAFETY: the reservation made above, no longer used.
        unsafe { crate::platform::release(region.as_ptr(), 100 << 12) };
    }
}
