//! Chunk backend: hands out runs of whole chunks of the region, of any
//! length and alignment, and takes them back, with no lock.
//!
//! The state is a bitmap with one bit per chunk (set = in use), searched
//! first-fit from the lowest address, so freed neighbours merge by
//! themselves and long runs stay available at the top of the region.
//!
//! - **Claim** (`alloc_run`): scan for a free run (a racy read), then set its
//!   bits word by word, lowest word first, each with a compare-and-swap that
//!   requires the bits to be clear. If a word's bits were taken meanwhile,
//!   the words already set are cleared again (roll back) and the scan goes
//!   on. A run within one word is claimed by one CAS.
//! - **Free** (`free_run`): one atomic AND per word. Merging is implicit.
//! - **Search start**: `hints[k]` is a lower bound of the word in which the
//!   lowest free run of at least `k + 1` chunks starts (`HINTS` of them). A
//!   first-fit search for `n` chunks starts at the hint of `min(n, HINTS)`,
//!   so searches for runs of several chunks skip the single-chunk holes at
//!   the bottom of a fragmented region; a search for exactly `k + 1` raises
//!   hint `k` to where it found its run, and a free lowers the hints of the
//!   lengths its merged run reaches. A best-fit search for `HINTS` chunks
//!   or more starts at the last hint too: no run that long starts below
//!   it. Hints can go stale upwards under races
//!   (two neighbouring frees that each miss the other's chunks, or a free
//!   below a search's result that lands while the search runs, before its
//!   raise), until the next free below them lowers them again; so a
//!   search that fails from a hint is repeated from word 0, and one that
//!   fails while another thread holds chunks it may give back (a claim of
//!   a run across words, which sets one word at a time, or a purge), or
//!   after one gave them back, is repeated, so a transient claim never
//!   causes a false out-of-memory.
//! - **Free-blocks index** (`blocks`): one bit per aligned block of 8 chunks
//!   (a byte of the used bitmap), set when the whole block is free. Every
//!   free run of 15 chunks or more holds a free block, and a run is its
//!   free blocks plus fewer than 8 free chunks on either side, so best fit
//!   for long runs (large objects) reads the index, one bit per 8 chunks,
//!   and looks at the used bitmap only at the two ends of the runs that may
//!   win (and, when nothing fits, below the high-water mark for the start
//!   of untouched space), instead of scanning every word. A claim or free that changes
//!   whether a block is free brings its bit in line afterwards
//!   (`sync_blocks`, SeqCst, repeated until a read of both agrees), so
//!   once nothing is in progress the index is exact; under races a search
//!   may act on a stale bit, and a claim of its result that fails is
//!   searched again on the bitmap itself.
//! - **Under contention** first fit is a preference: a multi-word claim in
//!   progress holds its low words for a moment, so a concurrent claim may
//!   land above them (the loom model `claims_never_overlap` shows such an
//!   interleaving). A claim fails only if no long enough run is free.
//!
//! For sources that decommit, a second bitmap marks free chunks that are
//! still resident ("dirty"): set before a free clears the used bits, cleared
//! after a claim sets them. Dirty chunks are given back to the OS by one
//! thread at a time (a flag, never waited on), which claims a dirty run
//! like an allocation, calls `madvise`, and frees it, from the top of the
//! heap down (first fit reuses the bottom first). There is no timer thread:
//! each rule is checked at backend operations (claims and frees). Besides
//! the rules, `purge_free` (`Heap::trim`, `malloc_trim`) gives every dirty
//! chunk back at once.
//!
//! - **Quiet**: when no chunk was freed and no dirty chunk reused for
//!   `decommit_delay_ms`, all of them, at the next backend operation.
//! - **Epochs**: time is cut into epochs of `decommit_epoch_ms`, each ended
//!   by the first backend operation after that long. At its end, as many
//!   chunks as stayed dirty throughout it (the fewest dirty at any moment
//!   of the epoch: that many were not needed) are given back, so a busy
//!   program returns what it stopped using but keeps what it reuses within
//!   an epoch.
//! - **Over the limit**: at once, down to three quarters of the limit,
//!   only runs of at least `MIN_PURGE_CHUNKS`, when dirty chunks exceed the
//!   most of `dirty_limit_bytes`, a quarter of the chunks in use, and the
//!   room from the chunks in use up to their peak over this epoch and the
//!   last (but at most the chunks in use). A program that frees a phase's
//!   memory and builds a next phase about as big soon after keeps it
//!   resident instead of faulting it in again, while one that frees nearly
//!   everything gives most of it back during the frees (an idle server
//!   after a flush may make no backend operation for a long time).
//!
//! Invariants:
//! - bits past `chunks` in the last word are set, so they are never handed out;
//! - a chunk's used bit is set exactly while someone holds it (an
//!   allocation, a claim in progress, or a purge);
//! - `reserved_chunks` counts chunks handed out by `alloc_run`/`try_grow`
//!   and not yet freed; a free subtracts before it releases the chunks,
//!   so a chunk is never counted twice and `peak_reserved_chunks` never
//!   exceeds `chunks`;
//! - with no claim or free in progress, bit `b` of `blocks` is set exactly
//!   when chunks `8b .. 8b + 8` are all free (so never for a last block
//!   that runs past `chunks`: its padding bits are set).

use crate::config::Config;
use crate::platform;
use crate::source::{Decommitted, Source};
use crate::sync::model::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crate::sync::{spin_hint, CachePadded};

const WORD_BITS: usize = 64;
/// Run lengths (1 ..= HINTS chunks) whose first-fit searches have a hint
/// of their own; longer runs share the last.
const HINTS: usize = 8;
/// Shortest run of dirty chunks given back when over the dirty limit.
const MIN_PURGE_CHUNKS: usize = 4;
/// Longest run given back by one system call.
const MAX_PURGE_RUN_CHUNKS: usize = 4096;
/// Chunks per block of the free-blocks index: one byte of the used bitmap.
const BLOCK: usize = 8;
/// Shortest run whose best-fit search visits only the free runs that hold a
/// free block: every free run of `2 * BLOCK - 1` chunks or more contains
/// a whole aligned block.
const INDEXED_BEST_FIT: usize = 2 * BLOCK - 1;

/// The chunk backend over one region.
///
/// Invariant: `used` and `dirty` each point to `words` initialised words,
/// and `blocks` to `block_words(chunks)`, that live as long as the heap;
/// chunk `i` starts at `base + i << shift`.
pub(crate) struct Backend {
    used: *const AtomicU64,
    dirty: *const AtomicU64,
    /// The free-blocks index: bit `b` is set when chunks `8b .. 8b + 8`
    /// (byte `b % 8` of used word `b / 8`) are all free. See the module
    /// documentation.
    blocks: *const AtomicU64,
    words: usize,
    chunks: usize,
    base: usize,
    chunk_shift: u32,
    source: &'static dyn Source,
    /// `source.decommits()`, read once: every claim and free asks.
    decommits: bool,
    dirty_limit_chunks: usize,
    decommit_delay_ms: u64,
    decommit_epoch_ms: u64,
    /// Written by frees and searches (and the counters below by every claim
    /// and free), so each sits on a cache line of its own: a write must not
    /// evict the read-only fields every search reads. See the module
    /// documentation.
    hints: CachePadded<[AtomicUsize; HINTS]>,
    /// Bumped after every rolled-back claim and every purge.
    rollbacks: AtomicUsize,
    /// Claims of runs across words and purges in progress: they hold
    /// chunks they may give back (see `claim_retrying`).
    holding: CachePadded<AtomicUsize>,
    dirty_chunks: AtomicUsize,
    /// When chunks were last marked dirty (freed) or dirty chunks reused.
    last_dirty_change_ms: AtomicU64,
    /// When the current purge epoch began.
    epoch_ms: AtomicU64,
    /// Fewest dirty chunks at any moment of this epoch: that many stayed
    /// unused throughout it (lowered by claims, reset by the purger).
    epoch_low_dirty: AtomicUsize,
    /// Most chunks in use at any moment of this epoch, and of the last one.
    epoch_peak_reserved: AtomicUsize,
    prev_peak_reserved: AtomicUsize,
    /// Held by the thread giving dirty chunks back (and across `fork`).
    purging: AtomicBool,
    /// Chunks given back to the OS so far (a statistic: `Heap::trim`
    /// reports the difference across its call).
    decommitted: AtomicUsize,
    /// Every free chunk whose dirty bit is clear reads zero: set for a
    /// source that decommits and zeroes (its reservation starts zeroed, and
    /// the OS was seen to zero a decommitted page), cleared for good by a
    /// decommit that leaves part of its range as it was (a chunk smaller
    /// than the OS page, or the OS refused, as it does for locked memory).
    /// Cleared before the purge frees that range, so a claim of it sees
    /// the change.
    zero_when_clean: AtomicBool,
    /// After an over-limit purge that could not get under the limit (only
    /// short dirty runs were left), the dirty count it left: over-limit
    /// purges wait until the count has grown past it by a quarter of the
    /// limit, instead of rescanning on every backend operation.
    stuck_dirty: AtomicUsize,
    reserved_chunks: CachePadded<AtomicUsize>,
    peak_reserved_chunks: AtomicUsize,
    /// One past the highest chunk ever handed out (or about to be: best
    /// fit and `alloc_run_highest` raise it before they claim). Chunks from
    /// it on have never been used.
    high_water: AtomicUsize,
}

// SAFETY: all state is atomics; the raw pointers only name bitmaps that
// live as long as the heap.
unsafe impl Sync for Backend {}
// SAFETY: as above.
unsafe impl Send for Backend {}

/// Words of bitmap needed for `chunks` chunks.
pub(crate) const fn bitmap_words(chunks: usize) -> usize {
    chunks.div_ceil(WORD_BITS)
}

/// Words of the free-blocks index needed for `chunks` chunks.
pub(crate) const fn block_words(chunks: usize) -> usize {
    chunks.div_ceil(BLOCK * WORD_BITS)
}

const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;

/// Bit 7 of each byte of the result is set iff that byte of `x` is zero,
/// and no other bit (exact: nothing borrows between bytes).
#[inline(always)]
fn zero_flags(x: u64) -> u64 {
    !(((x & LOW7) + LOW7) | x | LOW7)
}

/// Bit 7 of each byte of the result is set iff that byte of `x` is not zero.
#[inline(always)]
fn nonzero_flags(x: u64) -> u64 {
    (((x & LOW7) + LOW7) | x) & !LOW7
}

/// Bit 7 of byte `j` of `flags` (no other bits set) moved to bit `j`.
#[inline(always)]
fn gather_flags(flags: u64) -> u64 {
    // Bit 7 of byte j lands on bit 56 + j; the partial products do not
    // overlap, so nothing carries.
    (flags >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56
}

/// Bit `j` of the result is set iff byte `j` of `x` is zero.
#[inline]
fn zero_bytes(x: u64) -> u64 {
    gather_flags(zero_flags(x))
}

/// Bit `i` of the result is set iff bits `i .. i + n` of `free` are all set
/// (runs inside the word only); `1 <= n <= 64`.
#[inline]
fn runs_of(free: u64, n: usize) -> u64 {
    let mut m = free;
    let mut k = 1;
    while k < n {
        let s = (n - k).min(k);
        m &= m >> s;
        k += s;
    }
    m
}

/// Lowers `a` to `v` if it is higher; a load first, so that the cache line
/// stays shared when nothing changes. Relaxed: used for hints, heuristics
/// and statistics only.
#[inline]
fn lower_to(a: &AtomicUsize, v: usize) {
    if v < a.load(Ordering::Relaxed) {
        a.fetch_min(v, Ordering::Relaxed);
    }
}

/// Raises `a` to `v` if it is lower (see [`lower_to`]).
#[inline]
fn raise_to(a: &AtomicUsize, v: usize) {
    if v > a.load(Ordering::Relaxed) {
        a.fetch_max(v, Ordering::Relaxed);
    }
}

/// The part of `[pos, end)` inside `pos`'s word: (word, mask, bit count).
#[inline]
fn segment(pos: usize, end: usize) -> (usize, u64, usize) {
    let bit = pos % WORD_BITS;
    let take = (WORD_BITS - bit).min(end - pos);
    let mask = if take == WORD_BITS {
        !0
    } else {
        ((1u64 << take) - 1) << bit
    };
    (pos / WORD_BITS, mask, take)
}

impl Backend {
    /// Builds a backend whose chunks are all free.
    ///
    /// # Safety
    /// `used` and `dirty` must each be valid for `bitmap_words(chunks)`
    /// words and `blocks` for `block_words(chunks)` words, all exclusively
    /// owned by the backend for as long as it lives.
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn new(
        used: *mut AtomicU64,
        dirty: *mut AtomicU64,
        blocks: *mut AtomicU64,
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
        for i in 0..block_words(chunks) {
            let mut free = 0;
            for j in 0..8 {
                if i * 8 + j < words {
                    // SAFETY: `i * 8 + j < words`, initialised above.
                    let used = unsafe { &*used.add(i * 8 + j) }.load(Ordering::Relaxed);
                    free |= zero_bytes(used) << (j * 8);
                }
            }
            // SAFETY: `i < block_words(chunks)` (caller's guarantee).
            unsafe { blocks.add(i).write(AtomicU64::new(free)) };
        }
        Backend {
            used,
            dirty,
            blocks,
            words,
            chunks,
            base,
            chunk_shift,
            source,
            decommits: source.decommits(),
            dirty_limit_chunks: (config.dirty_limit_bytes >> chunk_shift).max(1),
            decommit_delay_ms: config.decommit_delay_ms,
            decommit_epoch_ms: config.decommit_epoch_ms,
            hints: CachePadded(core::array::from_fn(|_| AtomicUsize::new(0))),
            rollbacks: AtomicUsize::new(0),
            holding: CachePadded(AtomicUsize::new(0)),
            dirty_chunks: AtomicUsize::new(0),
            last_dirty_change_ms: AtomicU64::new(platform::now_ms()),
            epoch_ms: AtomicU64::new(platform::now_ms()),
            epoch_low_dirty: AtomicUsize::new(0),
            epoch_peak_reserved: AtomicUsize::new(0),
            prev_peak_reserved: AtomicUsize::new(0),
            purging: AtomicBool::new(false),
            decommitted: AtomicUsize::new(0),
            zero_when_clean: AtomicBool::new(source.decommits() && source.zeroes()),
            stuck_dirty: AtomicUsize::new(0),
            reserved_chunks: CachePadded(AtomicUsize::new(0)),
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

    /// The index word holding the blocks of used word `word`.
    #[inline]
    fn blocks_of(&self, word: usize) -> &AtomicU64 {
        debug_assert!(word < self.words);
        // SAFETY: `word / 8 < block_words(chunks)` since `word < words`,
        // and the index lives as long as `self`.
        unsafe { &*self.blocks.add(word / 8) }
    }

    /// After a claim set `mask` in used word `word`, which read `old`:
    /// brings the index bits of the blocks that stopped being free in line.
    #[inline(always)]
    fn claimed_blocks(&self, word: usize, old: u64, mask: u64) {
        let taken = zero_flags(old) & nonzero_flags(mask);
        if taken != 0 {
            self.sync_blocks(word, gather_flags(taken));
        }
    }

    /// After a free cleared `mask` in used word `word`, leaving `new`:
    /// brings the index bits of the blocks that became free in line.
    #[inline(always)]
    fn freed_blocks(&self, word: usize, new: u64, mask: u64) {
        // A byte `mask` touches was not free before: it held these chunks.
        let freed = zero_flags(new) & nonzero_flags(mask);
        if freed != 0 {
            self.sync_blocks(word, gather_flags(freed));
        }
    }

    /// Makes the index bits of blocks `which` (bit `j`: byte `j` of used
    /// word `word`) say what the used word says, after this thread changed
    /// whether they are free; repeats until a read of both agrees. Every
    /// operation here and the used word's read-modify-writes are SeqCst: if
    /// another thread, acting on an older read, changes a bit after our
    /// last check, its own check that follows reads the used word after
    /// ours did, and puts the bit right. So once no claim or free is in
    /// progress, a block's bit is set exactly when it is free.
    #[inline(never)]
    fn sync_blocks(&self, word: usize, which: u64) {
        let shift = (word % 8) * 8;
        let index = self.blocks_of(word);
        loop {
            let free = zero_bytes(self.used(word).load(Ordering::SeqCst)) & which;
            let marked = (index.load(Ordering::SeqCst) >> shift) & which;
            if free == marked {
                return;
            }
            if free & !marked != 0 {
                index.fetch_or((free & !marked) << shift, Ordering::SeqCst);
            }
            if marked & !free != 0 {
                index.fetch_and(!((marked & !free) << shift), Ordering::SeqCst);
            }
        }
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

    /// One past the highest chunk ever handed out, or about to be.
    pub(crate) fn high_water(&self) -> usize {
        self.high_water.load(Ordering::Relaxed)
    }

    /// Most chunks ever handed out at once.
    pub(crate) fn peak_reserved_chunks(&self) -> usize {
        self.peak_reserved_chunks.load(Ordering::Relaxed)
    }

    /// First chunk at or after `pos` whose used bit reads clear (racy).
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

    /// Length of the run of clear bits starting at `start`, up to `limit` (racy).
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

    /// Sets the used bits of `[start, start + n)` if all are clear; on a
    /// conflict, clears what it set and returns false.
    fn try_claim(&self, start: usize, n: usize) -> bool {
        let end = start + n;
        // A run across words is set one word at a time, so other threads
        // can see part of it held and fail a search that a roll-back
        // would have let succeed: counted while in progress. SeqCst: see
        // `claim_retrying`.
        let across = start / WORD_BITS != (end - 1) / WORD_BITS;
        if across {
            self.holding.fetch_add(1, Ordering::SeqCst);
        }
        let mut pos = start;
        while pos < end {
            let (word, mask, take) = segment(pos, end);
            let w = self.used(word);
            let mut cur = w.load(Ordering::Relaxed);
            loop {
                if cur & mask != 0 {
                    self.release_bits(start, pos - start);
                    if pos > start {
                        // A search may have raised a hint past these chunks
                        // while we held them.
                        self.lower_hints(start, pos - start);
                    }
                    // Release pairs with the Acquire load in `alloc_run`: a
                    // search that failed meanwhile sees the change and retries.
                    self.rollbacks.fetch_add(1, Ordering::Release);
                    if across {
                        self.holding.fetch_sub(1, Ordering::SeqCst);
                    }
                    return false;
                }
                // Acquire pairs with the Release in `release_bits`: the last
                // holder's writes to these chunks and their pagemap entries
                // happen before ours. SeqCst for `sync_blocks`.
                match w.compare_exchange_weak(cur, cur | mask, Ordering::SeqCst, Ordering::Relaxed)
                {
                    Ok(_) => {
                        self.claimed_blocks(word, cur, mask);
                        break;
                    }
                    Err(now) => cur = now,
                }
            }
            pos += take;
        }
        if across {
            self.holding.fetch_sub(1, Ordering::SeqCst);
        }
        true
    }

    /// Clears the used bits of `[start, start + n)`, which the caller holds.
    fn release_bits(&self, start: usize, n: usize) {
        let end = start + n;
        let mut pos = start;
        while pos < end {
            let (word, mask, take) = segment(pos, end);
            // Release pairs with the Acquire CAS in `try_claim`. SeqCst for
            // `sync_blocks`.
            let old = self.used(word).fetch_and(!mask, Ordering::SeqCst);
            debug_assert_eq!(old & mask, mask, "freeing a chunk that is not in use");
            self.freed_blocks(word, old & !mask, mask);
            pos += take;
        }
    }

    /// Clears the dirty bits of `[start, start + n)`; returns how many were set.
    fn clear_dirty(&self, start: usize, n: usize) -> usize {
        if !self.decommits {
            return 0;
        }
        let end = start + n;
        let mut pos = start;
        let mut cleared = 0;
        while pos < end {
            let (word, mask, take) = segment(pos, end);
            // Relaxed: the dirty bitmap is a hint for the purger, which
            // claims chunks through the used bitmap before touching them.
            cleared +=
                (self.dirty(word).fetch_and(!mask, Ordering::Relaxed) & mask).count_ones() as usize;
            pos += take;
        }
        cleared
    }

    /// Bookkeeping after `n` chunks at `start` were handed out. Returns
    /// whether they are known to read zero (none was dirty, and clean
    /// chunks read zero in this source).
    fn claimed(&self, start: usize, n: usize) -> bool {
        let dirty = self.clear_dirty(start, n);
        if dirty > 0 {
            let left = self.dirty_chunks.fetch_sub(dirty, Ordering::Relaxed) - dirty;
            lower_to(&self.epoch_low_dirty, left);
            // Short dirty runs that stopped an over-limit purge were
            // reused: the wait for more does not start above what is left.
            lower_to(&self.stuck_dirty, left);
            self.last_dirty_change_ms
                .store(platform::now_ms(), Ordering::Relaxed);
        }
        // Relaxed: statistics.
        // Read-modify-writes only when they change something: a load keeps
        // the cache line shared between cores.
        let now = self.reserved_chunks.fetch_add(n, Ordering::Relaxed) + n;
        raise_to(&self.peak_reserved_chunks, now);
        raise_to(&self.epoch_peak_reserved, now);
        raise_to(&self.high_water, start + n);
        // Relaxed: our claim acquired the release of these chunks by the
        // last purge (or free) of them, which follows any store of false
        // that concerns them.
        dirty == 0 && self.zero_when_clean.load(Ordering::Relaxed)
    }

    /// Claims the lowest run of `n` free chunks whose first chunk's address
    /// is a multiple of `align_bytes` (a power of two, or 0). Returns its
    /// first chunk.
    pub(crate) fn alloc_run(&self, n: usize, align_bytes: usize) -> Option<usize> {
        self.claim_first_fit(n, align_bytes).map(|run| run.start)
    }

    /// [`Backend::alloc_run`], saying whether the run reads zero.
    pub(crate) fn claim_first_fit(&self, n: usize, align_bytes: usize) -> Option<Run> {
        if n == 0 || n > self.chunks {
            return None;
        }
        let k = n.min(HINTS) - 1;
        let hint = &self.hints[k];
        let from_word = hint.load(Ordering::Relaxed);
        let found = self.claim_retrying(|| {
            self.search_and_claim(n, align_bytes, from_word)
                .or_else(|| {
                    (from_word != 0)
                        .then(|| self.search_and_claim(n, align_bytes, 0))
                        .flatten()
                })
        });
        let mut zeroed = false;
        if let Some(start) = found {
            zeroed = self.claimed(start, n);
            let mut word = start / WORD_BITS;
            if self.used(word).load(Ordering::Relaxed) == !0 {
                word += 1;
            }
            // Relaxed: hints. No run of `n` started below `word` when the
            // search passed, so the hint of exactly `n` may rise to it; a
            // failed exchange means a free lowered it meanwhile. A run
            // found below the hint (by the search from word 0) shows the
            // hint was stale.
            if word > from_word && n == k + 1 && align_bytes <= 1 << self.chunk_shift {
                let _ =
                    hint.compare_exchange(from_word, word, Ordering::Relaxed, Ordering::Relaxed);
            } else if word < from_word {
                lower_to(hint, word);
            }
        }
        self.maybe_decommit();
        found.map(|start| Run { start, zeroed })
    }

    /// After `[start, start + n)` was freed: lowers the hint of every run
    /// length the merged free run around it reaches to the word it starts
    /// in. Looks at most `HINTS` chunks to either side: a free run longer
    /// than that before `start` was already a run of every hinted length,
    /// so the hints are at or below its start.
    fn lower_hints(&self, start: usize, n: usize) {
        let before = self.free_len_before(start, HINTS);
        let reach = if before + n >= HINTS {
            HINTS
        } else {
            (before + n + self.free_run_len(start + n, HINTS)).min(HINTS)
        };
        let word = (start - before) / WORD_BITS;
        for hint in &self.hints[..reach] {
            lower_to(hint, word);
        }
    }

    /// Length of the run of clear bits ending just below `end`, up to
    /// `limit` (racy).
    fn free_len_before(&self, end: usize, limit: usize) -> usize {
        self.set_run_before(end, limit, |w| !self.used(w).load(Ordering::Relaxed))
    }

    /// Length of the run of set bits of `bits(word)` ending just below
    /// `end`, up to `limit`.
    fn set_run_before(&self, end: usize, limit: usize, bits: impl Fn(usize) -> u64) -> usize {
        let mut len = 0;
        let mut pos = end;
        while len < limit && pos > 0 {
            let bit = pos % WORD_BITS;
            let take = if bit == 0 { WORD_BITS } else { bit };
            let word = (pos - 1) / WORD_BITS;
            // The `take` bits below `pos`, moved to the top of the word.
            let ones = (bits(word) << (WORD_BITS - take)).leading_ones() as usize;
            let ones = ones.min(take);
            len += ones;
            if ones < take {
                break;
            }
            pos -= take;
        }
        len.min(limit)
    }

    /// Runs `pass` (one search-and-claim) until it claims a run. A failed
    /// pass is repeated while another thread holds chunks it may give back,
    /// or if one gave some back while it ran, up to 64 passes, so that a
    /// thread holding chunks while it is descheduled cannot keep us waiting
    /// for good. A claim across words holds its chunks for a few
    /// instructions, and 64 passes (the later ones yielding the processor)
    /// outlast it unless its thread stays preempted there; a purge holds
    /// its chunks across a system call, which can outlast them, so a
    /// search near the end of an OS heap's reservation can still fail
    /// while a purge gives back what it needs.
    ///
    /// Why the count of holders suffices: a holder counts itself (SeqCst)
    /// before its first compare-and-swap (SeqCst). If the pass read one of
    /// its words, the fence below follows that write in the SeqCst order,
    /// so the load after it reads the count with the holder in it, or a
    /// later value written when the holder was done; that decrement comes
    /// after its roll-back's bump, which the load (SeqCst, so acquiring)
    /// then sees.
    fn claim_retrying(&self, mut pass: impl FnMut() -> Option<usize>) -> Option<usize> {
        for pass_no in 0..64 {
            // Acquire pairs with the Release bump in `try_claim`.
            let epoch = self.rollbacks.load(Ordering::Acquire);
            if let Some(start) = pass() {
                return Some(start);
            }
            fence(Ordering::SeqCst);
            if self.holding.load(Ordering::SeqCst) == 0
                && self.rollbacks.load(Ordering::Acquire) == epoch
            {
                return None;
            }
            // With more threads than cores the holder may be waiting for
            // ours: after a few passes, let it run.
            if pass_no < 8 || cfg!(loom) {
                spin_hint();
            } else {
                crate::platform::yield_now();
            }
        }
        None
    }

    /// One first-fit pass from `from_word`.
    fn search_and_claim(&self, n: usize, align_bytes: usize, from_word: usize) -> Option<usize> {
        if align_bytes > (1usize << self.chunk_shift) {
            return self.search_and_claim_aligned(n, align_bytes, from_word);
        }
        let mut word = from_word;
        loop {
            let start = self.find_free_run(n, word)?;
            if self.try_claim(start, n) {
                return Some(start);
            }
            // Somebody took part of it: look again from the same word.
            word = start / WORD_BITS;
        }
    }

    /// The lowest run of `n` clear bits starting in word `from_word` or
    /// later (a racy read). Word by word: a run inside one word is found
    /// with shifts and ANDs, one crossing words from the counts of clear
    /// bits at their ends, so holes too short for `n` cost nothing each.
    fn find_free_run(&self, n: usize, from_word: usize) -> Option<usize> {
        if n <= WORD_BITS {
            for word in from_word..self.words {
                let used = self.used(word).load(Ordering::Relaxed);
                if used == !0 {
                    continue;
                }
                let inside = runs_of(!used, n);
                if inside != 0 {
                    return Some(word * WORD_BITS + inside.trailing_zeros() as usize);
                }
                // A run starting in this word's top bits, ending in the next.
                let top = used.leading_zeros() as usize;
                if top > 0 && word + 1 < self.words {
                    let next = self.used(word + 1).load(Ordering::Relaxed);
                    if next.trailing_zeros() as usize >= n - top {
                        return Some(word * WORD_BITS + WORD_BITS - top);
                    }
                }
            }
            return None;
        }
        // Longer than a word: clear bits at the top of one word, whole clear
        // words, clear bits at the bottom of the last.
        let mut start = from_word * WORD_BITS;
        let mut len = 0;
        for word in from_word..self.words {
            let used = self.used(word).load(Ordering::Relaxed);
            if used == 0 {
                len += WORD_BITS;
                if len >= n {
                    return Some(start);
                }
                continue;
            }
            if len + used.trailing_zeros() as usize >= n {
                return Some(start);
            }
            let top = used.leading_zeros() as usize;
            start = word * WORD_BITS + WORD_BITS - top;
            len = top;
        }
        None
    }

    /// First-fit pass for runs whose start must be aligned beyond a chunk.
    fn search_and_claim_aligned(
        &self,
        n: usize,
        align_bytes: usize,
        from_word: usize,
    ) -> Option<usize> {
        let mut pos = from_word * WORD_BITS;
        loop {
            let start = self.next_free(pos)?;
            let addr = self.base + (start << self.chunk_shift);
            let aligned =
                start + ((addr.checked_next_multiple_of(align_bytes)? - addr) >> self.chunk_shift);
            if aligned.checked_add(n)? > self.chunks {
                return None;
            }
            let run = self.free_run_len(aligned, n);
            if run < n {
                pos = aligned + run + 1;
                continue;
            }
            if self.try_claim(aligned, n) {
                return Some(aligned);
            }
            // Somebody took part of it: look again from the same place.
            pos = aligned;
        }
    }

    /// Claims the highest `n` free chunks of the region that lie in one
    /// free run: the top end of the highest free run that holds them.
    ///
    /// For long-lived metadata that arrives while the heap is in use (an
    /// allocator made when a thread first needs one): it lands beside the
    /// metadata made before it at the top, or at the top end of the highest
    /// hole, rather than in the smallest hole between two large objects,
    /// where it would keep their runs from merging once they are freed.
    pub(crate) fn alloc_run_highest(&self, n: usize) -> Option<usize> {
        if n == 0 || n > self.chunks {
            return None;
        }
        self.claim_retrying(|| loop {
            let start = self.find_highest_run(n)?;
            // As for best fit: the mark goes up before the claim, so no
            // search takes these chunks for untouched meanwhile.
            raise_to(&self.high_water, start + n);
            if self.try_claim(start, n) {
                self.claimed(start, n);
                return Some(start);
            }
            // Taken meanwhile: search again.
        })
    }

    /// The start of the highest `n` free chunks that lie in one free run
    /// (a racy read), walking down from the top: a word with no free chunk
    /// or no used one costs one load, a mixed one a step for each stretch
    /// of used or free chunks in it.
    fn find_highest_run(&self, n: usize) -> Option<usize> {
        // Exclusive end of the free run being walked (its chunks from
        // there down to the present position are free).
        let mut run_end = self.chunks;
        for word in (0..self.words).rev() {
            // Bits past `chunks` in the last word are set (never free).
            let used = self.used(word).load(Ordering::Relaxed);
            let base = word * WORD_BITS;
            if used == !0 {
                run_end = base;
            } else if used == 0 {
                if run_end - base >= n {
                    return Some(run_end - n);
                }
            } else {
                // Bits `0..below` of the word are still to be looked at.
                let mut below = WORD_BITS;
                while below > 0 {
                    // Bit `below - 1` moved to the top; the bits shifted in
                    // at the bottom are not counted (`min`).
                    let top = used << (WORD_BITS - below);
                    if top >> (WORD_BITS - 1) != 0 {
                        below -= (top.leading_ones() as usize).min(below);
                        run_end = base + below;
                    } else {
                        below -= (top.leading_zeros() as usize).min(below);
                        // The free run now reaches down to `base + below`.
                        if run_end - (base + below) >= n {
                            return Some(run_end - n);
                        }
                    }
                }
            }
        }
        None
    }

    /// Claims `n` chunks at the end of the shortest free run that holds
    /// them (best fit, the highest of equals), else at the bottom of
    /// untouched space. Long runs (large objects) are placed this way,
    /// short ones (slabs, small large objects) first fit from the bottom,
    /// so the two kinds do not interleave and long objects fill holes left
    /// by others before they cut into the big free space.
    #[cfg(test)]
    pub(crate) fn alloc_run_best(&self, n: usize) -> Option<usize> {
        self.claim_best_fit(n).map(|run| run.start)
    }

    /// [`Backend::alloc_run_best`], saying whether the run reads zero.
    pub(crate) fn claim_best_fit(&self, n: usize) -> Option<Run> {
        if n == 0 || n > self.chunks {
            return None;
        }
        // No free run of `HINTS` chunks or more starts below the last hint's
        // word, so a search for such a run may begin there; if the hint was
        // stale and nothing was found, the whole bitmap is searched.
        let from_word = if n >= HINTS {
            self.hints[HINTS - 1].load(Ordering::Relaxed)
        } else {
            0
        };
        let found = self.claim_retrying(|| {
            let mut from = from_word;
            let mut indexed = n >= INDEXED_BEST_FIT;
            loop {
                let fit = if indexed {
                    self.find_best_fit_indexed(n, from)
                } else {
                    self.find_best_fit(n, from)
                };
                // A run in untouched space raises the high-water mark before
                // it is claimed: searches take chunks above the mark as free
                // without reading their bits, so a claim there that had not
                // yet raised it would make every other search propose the
                // same chunks, fail, and retry until this thread runs again.
                if let Some(start) = fit {
                    raise_to(&self.high_water, start + n);
                }
                match fit {
                    Some(start) if self.try_claim(start, n) => return Some(start),
                    // Taken meanwhile, or the index was stale.
                    Some(_) => indexed = false,
                    None if from != 0 => from = 0,
                    // The index is exact only when nothing is in progress:
                    // before failing, one scan of the bitmap itself.
                    None if indexed => indexed = false,
                    None => return None,
                }
            }
        });
        found.map(|start| Run {
            start,
            zeroed: self.claimed(start, n),
        })
    }

    /// Best fit for a long run (a racy read): the end of the shortest free
    /// run below the high-water mark that holds `n` chunks, the highest of
    /// equals, so long objects fill holes left by others before they cut
    /// into the big free space. Failing that, the start of the free run that
    /// reaches past the high-water mark (untouched space, which in an OS
    /// reservation is most of it: the scan never walks it).
    ///
    /// Word by word, like [`Backend::find_free_run`]: a run crossing words
    /// is carried as (start, length); runs strictly inside a word are looked
    /// at only if the word has `n` clear bits, so a scan costs a few
    /// instructions per word however many short holes there are.
    fn find_best_fit(&self, n: usize, from_word: usize) -> Option<usize> {
        let high = self.high_water().min(self.chunks);
        let mut best: Option<(usize, usize)> = None; // (run length, start)
        let mut consider = |start: usize, len: usize| {
            if len >= n && best.map_or(true, |(b, _)| len <= b) {
                best = Some((len, start + len - n));
            }
        };
        // The run open at the top of the words scanned so far.
        let words = high.div_ceil(WORD_BITS);
        let from_word = from_word.min(words);
        let (mut run_start, mut run_len) = (from_word * WORD_BITS, 0);
        for word in from_word..words {
            let mut used = self.used(word).load(Ordering::Relaxed);
            if word + 1 == words && high < self.chunks && high % WORD_BITS != 0 {
                // Chunks from `high` on are untouched: free, whatever the
                // padding bits past `chunks` say.
                used &= (1u64 << (high % WORD_BITS)) - 1;
            }
            if used == 0 {
                run_len += WORD_BITS;
                continue;
            }
            let low = used.trailing_zeros() as usize;
            let top = used.leading_zeros() as usize;
            consider(run_start, run_len + low);
            // Runs inside the word, touching neither end, if one is long enough.
            let mut inner = !used & (!0u64 << low) & (!0u64 >> top);
            if n < WORD_BITS - 1 && inner != 0 && runs_of(inner, n) != 0 {
                while inner != 0 {
                    let at = inner.trailing_zeros() as usize;
                    // Bit 63 of `inner` is clear, so the run ends below it.
                    let len = (!(inner >> at)).trailing_zeros() as usize;
                    consider(word * WORD_BITS + at, len);
                    inner &= !(((1u64 << len) - 1) << at);
                }
            }
            run_start = (word + 1) * WORD_BITS - top;
            run_len = top;
        }
        if high < self.chunks {
            // The open run reaches untouched space: the fallback.
            return best
                .map(|(_, s)| s)
                .or_else(|| self.untouched(run_start, n));
        }
        consider(run_start, run_len);
        best.map(|(_, start)| start)
            .or_else(|| self.untouched(high, n))
    }

    /// [`Backend::find_best_fit`] for `n >= INDEXED_BEST_FIT`, with the
    /// same result when no claim or free is in progress, reading the
    /// free-blocks index instead of every word: every run that long holds
    /// a free block, and a run is its free blocks, the free chunks just
    /// below the first of them and those at the bottom of the first block
    /// after them that is not free. Under races the index may be stale, so
    /// a result may not be free: the caller's claim checks, and searches
    /// the bitmap itself if it fails.
    fn find_best_fit_indexed(&self, n: usize, from_word: usize) -> Option<usize> {
        debug_assert!(n >= INDEXED_BEST_FIT);
        let high = self.high_water().min(self.chunks);
        let lo = from_word.min(high.div_ceil(WORD_BITS)) * WORD_BITS;
        // Blocks holding a chunk below `high`.
        let end_block = high.div_ceil(BLOCK);
        let mut best: Option<(usize, usize)> = None; // (run length, run start)
        for (b, next_used) in self.free_block_runs(lo / BLOCK, end_block) {
            if let Some(c) = next_used {
                // The run is its free blocks and less than a block on
                // either side: skip it unless it may hold `n` and be no
                // longer than the best so far, or it may reach `high`.
                let blocks = (c - b) * BLOCK;
                let may_fit = blocks + 2 * (BLOCK - 1) >= n;
                let may_win = best.map_or(true, |(len, _)| blocks <= len);
                if !(may_fit && may_win) && (c + 1) * BLOCK < high {
                    continue;
                }
            }
            let first = b * BLOCK;
            let start = first - self.free_len_before(first, (first - lo).min(BLOCK));
            let end = match next_used {
                Some(c) => c * BLOCK + self.free_run_len(c * BLOCK, BLOCK),
                None => self.chunks.min(end_block * BLOCK),
            };
            if high < self.chunks && end >= high {
                // The run reaching untouched space: never a candidate.
                return best
                    .map(|(len, s)| s + len - n)
                    .or_else(|| self.untouched(start, n));
            }
            let len = end - start;
            if len >= n && best.map_or(true, |(b, _)| len <= b) {
                best = Some((len, start));
            }
        }
        match best {
            Some((len, start)) => Some(start + len - n),
            None if high < self.chunks => {
                let open = if lo >= high {
                    lo
                } else {
                    high - self.free_len_before(high, high - lo)
                };
                self.untouched(open, n)
            }
            None => self.untouched(high, n),
        }
    }

    /// The runs of free blocks in `[from, end)` by the index (a racy read),
    /// lowest first: (first block, first block after it that is not free,
    /// or `None` if they reach `end`).
    fn free_block_runs(&self, from: usize, end: usize) -> FreeBlockRuns<'_> {
        let word = from / WORD_BITS;
        let bits = if from < end {
            self.index_bits(word, end) & (!0u64 << (from % WORD_BITS))
        } else {
            0
        };
        FreeBlockRuns {
            backend: self,
            word,
            bits,
            end,
        }
    }

    /// Index word `word`, without the blocks from `end` on.
    #[inline]
    fn index_bits(&self, word: usize, end: usize) -> u64 {
        // SAFETY: callers pass `word * 64 < end <= block_words(chunks) * 64`.
        let bits = unsafe { &*self.blocks.add(word) }.load(Ordering::Relaxed);
        let keep = end - word * WORD_BITS;
        if keep < WORD_BITS {
            bits & ((1u64 << keep) - 1)
        } else {
            bits
        }
    }

    /// Where `n` chunks go in the untouched space from `start` to the end:
    /// its bottom, so an OS reservation's high-water mark grows only as
    /// needed.
    fn untouched(&self, start: usize, n: usize) -> Option<usize> {
        (start + n <= self.chunks).then_some(start)
    }

    /// With nothing in progress, the free-blocks index says exactly which
    /// blocks are free.
    #[cfg(test)]
    fn assert_index_exact(&self) {
        for block in 0..self.chunks.div_ceil(BLOCK) {
            let chunks = block * BLOCK..block * BLOCK + BLOCK;
            let free = chunks.end <= self.chunks && chunks.into_iter().all(|c| self.is_free(c));
            // SAFETY: `block / 64 < block_words(chunks)`.
            let word = unsafe { &*self.blocks.add(block / WORD_BITS) }.load(Ordering::Relaxed);
            assert_eq!(word >> (block % WORD_BITS) & 1 == 1, free, "block {block}");
        }
    }

    #[cfg(test)]
    fn is_free(&self, chunk: usize) -> bool {
        !self.chunk_in_use(chunk)
    }

    /// Whether `chunk`'s used bit is set (a racy read).
    pub(crate) fn chunk_in_use(&self, chunk: usize) -> bool {
        self.used(chunk / WORD_BITS).load(Ordering::Relaxed) >> (chunk % WORD_BITS) & 1 == 1
    }

    /// Extends the run `[start, start + old_n)` in place to `new_n` chunks if
    /// the chunks after it are free.
    pub(crate) fn try_grow(&self, start: usize, old_n: usize, new_n: usize) -> bool {
        debug_assert!(new_n > old_n);
        let extra = new_n - old_n;
        let tail = start + old_n;
        if tail + extra > self.chunks || !self.try_claim(tail, extra) {
            return false;
        }
        self.claimed(tail, extra);
        true
    }

    /// Returns `[start, start + n)` to the free pool.
    pub(crate) fn free_run(&self, start: usize, n: usize) {
        debug_assert!(n > 0 && start + n <= self.chunks);
        // Whether this free ends a quiet time (see the module documentation):
        // the time is read before the free counts as a change.
        let mut quiet = false;
        if self.decommits {
            self.set_dirty(start, n);
            self.dirty_chunks.fetch_add(n, Ordering::Relaxed);
            let now = platform::now_ms();
            // Relaxed: a purge heuristic; a stale read only delays a purge.
            let before = self.last_dirty_change_ms.swap(now, Ordering::Relaxed);
            quiet = now.saturating_sub(before) >= self.decommit_delay_ms;
        }
        // Uncounted before the bits are released: a claimer that takes
        // these chunks (acquiring the release below) counts them after our
        // subtraction, so the count, and the peak raised from it, never
        // holds a chunk twice. (Counted the other way round, a thread
        // preempted between the two let the peak pass the heap's size.)
        self.reserved_chunks.fetch_sub(n, Ordering::Relaxed);
        self.release_bits(start, n);
        self.lower_hints(start, n);
        self.decommit_if_due(quiet);
    }

    fn set_dirty(&self, start: usize, n: usize) {
        let end = start + n;
        let mut pos = start;
        while pos < end {
            let (word, mask, take) = segment(pos, end);
            // Relaxed: a hint for the purger (see `clear_dirty`).
            self.dirty(word).fetch_or(mask, Ordering::Relaxed);
            pos += take;
        }
    }

    /// Gives dirty chunks back to the OS when the backend was quiet, they
    /// stayed unused for an epoch, or there are too many (see the module
    /// documentation). One thread at a time; others go on at once.
    fn maybe_decommit(&self) {
        self.decommit_if_due(false);
    }

    /// As [`Backend::maybe_decommit`]; `quiet` if the caller's free came
    /// after `decommit_delay_ms` without a change to the dirty chunks.
    fn decommit_if_due(&self, quiet: bool) {
        if !self.decommits {
            return;
        }
        let dirty = self.dirty_chunks.load(Ordering::Relaxed);
        if dirty == 0 {
            return;
        }
        let now = platform::now_ms();
        let reserved = self.reserved_chunks.load(Ordering::Relaxed);
        let limit = self.dirty_limit(reserved);
        let over = dirty > limit && dirty > self.stuck_dirty.load(Ordering::Relaxed) + limit / 4;
        let quiet = quiet
            || now.saturating_sub(self.last_dirty_change_ms.load(Ordering::Relaxed))
                >= self.decommit_delay_ms;
        let epoch_over =
            now.saturating_sub(self.epoch_ms.load(Ordering::Relaxed)) >= self.decommit_epoch_ms;
        // Acquire pairs with the Release store at the end.
        if (!over && !quiet && !epoch_over) || self.purging.swap(true, Ordering::Acquire) {
            return;
        }
        // Chunks to keep: none after a quiet time; at the end of an epoch,
        // the ones it needed at some moment; over the limit, at most three
        // quarters of it, so that purges come in batches.
        let mut keep = dirty;
        if quiet {
            keep = 0;
        } else if epoch_over {
            keep = dirty.saturating_sub(self.epoch_low_dirty.load(Ordering::Relaxed));
        }
        if over {
            keep = keep.min(limit - limit / 4);
        }
        // Over the limit alone, only runs of at least MIN_PURGE_CHUNKS are
        // worth a system call; short holes are reused soon. Unused chunks
        // go whatever their run.
        self.purge_from_top(dirty.saturating_sub(keep), !quiet && !epoch_over);
        let left = self.dirty_chunks.load(Ordering::Relaxed);
        if over {
            let limit = self.dirty_limit(self.reserved_chunks.load(Ordering::Relaxed));
            self.stuck_dirty
                .store(if left > limit { left } else { 0 }, Ordering::Relaxed);
            // A claim that reused dirty chunks since we read `left` lowered
            // the mark; our store may have raised it again.
            lower_to(&self.stuck_dirty, self.dirty_chunks.load(Ordering::Relaxed));
        } else {
            // A quiet or epoch purge gave chunks back: never wait for more
            // than is left (else the over-limit rule could stay off).
            lower_to(&self.stuck_dirty, left);
        }
        if epoch_over {
            // Relaxed: heuristics; a claim racing with these stores only
            // makes the next epoch's low mark or peak slightly off.
            self.epoch_ms.store(now, Ordering::Relaxed);
            self.epoch_low_dirty.store(left, Ordering::Relaxed);
            let peak = self.epoch_peak_reserved.swap(
                self.reserved_chunks.load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
            self.prev_peak_reserved.store(peak, Ordering::Relaxed);
        }
        // Release pairs with the Acquire swap above.
        self.purging.store(false, Ordering::Release);
    }

    /// Most dirty chunks kept at once with `reserved` chunks in use: the
    /// configured floor, a quarter of those in use, or the room up to the
    /// recent peak of chunks in use but no more than those in use,
    /// whichever is most. So a phase's memory freed while the next phase
    /// is about as big stays resident, but a program that frees nearly
    /// everything gives it back at once (it may make no backend operation
    /// afterwards that could end a quiet time or an epoch).
    fn dirty_limit(&self, reserved: usize) -> usize {
        let recent_peak = self
            .epoch_peak_reserved
            .load(Ordering::Relaxed)
            .max(self.prev_peak_reserved.load(Ordering::Relaxed));
        self.dirty_limit_chunks
            .max(reserved / 4)
            .max(recent_peak.saturating_sub(reserved).min(reserved))
    }

    /// Gives every dirty free chunk back to the OS now, whatever the
    /// purge policy says (`malloc_trim`), after waiting for a purge in
    /// progress in another thread to end. Nothing for a source that never
    /// decommits.
    pub(crate) fn purge_free(&self) {
        if !self.decommits {
            return;
        }
        // Acquire pairs with the Release stores that end a purge. The
        // holder is another thread (no purge calls this), in the middle of
        // a bounded purge or a fork.
        while self.purging.swap(true, Ordering::Acquire) {
            crate::platform::yield_now();
        }
        self.purge_from_top(self.dirty_chunks.load(Ordering::Relaxed), false);
        // Relaxed: a purge heuristic (see `decommit_if_due`).
        lower_to(&self.stuck_dirty, self.dirty_chunks.load(Ordering::Relaxed));
        // Release pairs with the Acquire swaps that start a purge.
        self.purging.store(false, Ordering::Release);
    }

    /// Chunks given back to the OS so far, by every purge (a statistic).
    pub(crate) fn decommitted_chunks(&self) -> usize {
        self.decommitted.load(Ordering::Relaxed)
    }

    /// Gives back about `target` dirty chunks (more by less than a run),
    /// highest first, passing over runs shorter than `MIN_PURGE_CHUNKS`
    /// if `long_runs_only`. The caller holds the `purging` flag.
    fn purge_from_top(&self, target: usize, long_runs_only: bool) {
        // Chunks above the high-water mark were never used, so never dirty.
        // Scan down by chunk position, so that runs skipped or lost to a
        // racing claim are passed over, never revisited.
        let mut end = self.high_water().min(self.chunks);
        let mut purged = 0;
        while end > 0 && purged < target {
            let top = end - 1;
            let word = top / WORD_BITS;
            let below_end = !0u64 >> (WORD_BITS - 1 - top % WORD_BITS);
            let d = self.dirty(word).load(Ordering::Relaxed)
                & !self.used(word).load(Ordering::Relaxed)
                & below_end;
            if d == 0 {
                end = word * WORD_BITS;
                continue;
            }
            let last = word * WORD_BITS + (WORD_BITS - 1 - d.leading_zeros() as usize);
            let run = last + 1 - self.dirty_free_run_start(last, MAX_PURGE_RUN_CHUNKS);
            // Age purges take only what they need, from the top of the run.
            let len = if long_runs_only {
                run
            } else {
                run.min(target - purged)
            };
            let start = last + 1 - len;
            end = start;
            // `len == 0`: `last` was claimed between the two reads.
            if len == 0 || (long_runs_only && len < MIN_PURGE_CHUNKS) {
                continue;
            }
            // Counted while held, like a claim across words (see
            // `claim_retrying`), until the bump below.
            self.holding.fetch_add(1, Ordering::SeqCst);
            if !self.try_claim(start, len) {
                self.holding.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            let cleared = self.clear_dirty(start, len);
            let left = self.dirty_chunks.fetch_sub(cleared, Ordering::Relaxed) - cleared;
            // The epoch's low mark follows purges too, so that chunks freed
            // after one are not taken for chunks unused all epoch long.
            lower_to(&self.epoch_low_dirty, left);
            purged += cleared;
            let addr = (self.base + (start << self.chunk_shift)) as *mut u8;
            // SAFETY: these chunks are free chunks of this heap's source,
            // claimed above so nobody else touches them now.
            let given = unsafe { self.source.decommit(addr, len << self.chunk_shift) };
            if given != Decommitted::Whole {
                // Relaxed: the release of these chunks below publishes it
                // to their next claimer.
                self.zero_when_clean.store(false, Ordering::Relaxed);
            }
            if given != Decommitted::Nothing {
                // Relaxed: a statistic.
                self.decommitted.fetch_add(len, Ordering::Relaxed);
            }
            self.release_bits(start, len);
            self.lower_hints(start, len);
            // Release pairs with the Acquire in `alloc_run`: a search
            // that failed while we held these chunks retries.
            self.rollbacks.fetch_add(1, Ordering::Release);
            self.holding.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// First chunk of the run of chunks that read dirty and free (racy),
    /// ending at `last` inclusive, at most `max_len` long.
    fn dirty_free_run_start(&self, last: usize, max_len: usize) -> usize {
        last + 1
            - self.set_run_before(last + 1, max_len, |w| {
                self.dirty(w).load(Ordering::Relaxed) & !self.used(w).load(Ordering::Relaxed)
            })
    }

    /// Puts right, in the child of a `fork`, what claims and frees that
    /// other threads of the parent had not finished left behind; only while
    /// no other thread can claim or free. Their count in `holding` would
    /// make every failed search run all its passes, and a block's bit in
    /// the free-blocks index could stay stale until the block changes
    /// again: the count goes to zero (chunks those claims hold are lost to
    /// the child, like everything else those threads held) and the index
    /// is set from the used bitmap.
    pub(crate) fn reset_in_child(&self) {
        self.holding.store(0, Ordering::SeqCst);
        for i in 0..block_words(self.chunks) {
            let free = (0..8)
                .filter(|j| i * 8 + j < self.words)
                .fold(0, |free, j| {
                    let used = self.used(i * 8 + j).load(Ordering::Relaxed);
                    free | zero_bytes(used) << (j * 8)
                });
            // SAFETY: `i < block_words(chunks)`, the index's length.
            unsafe { &*self.blocks.add(i) }.store(free, Ordering::Relaxed);
        }
    }

    /// Stops decommitting until [`Backend::unlock_after_fork`], so that a
    /// `fork` never copies a purge in progress.
    pub(crate) fn lock_for_fork(&self) {
        // Acquire pairs with the Release stores that end a purge.
        while self.purging.swap(true, Ordering::Acquire) {
            spin_hint();
        }
    }

    /// # Safety
    /// Must follow [`Backend::lock_for_fork`] by this thread, or by the
    /// thread that forked this process.
    pub(crate) unsafe fn unlock_after_fork(&self) {
        // Release pairs with the Acquire swaps of later purges.
        self.purging.store(false, Ordering::Release);
    }

    /// Free chunk runs by length, their total and the longest (a racy
    /// snapshot). Chunks above the high-water mark were never used: they
    /// extend the free run that reaches the mark.
    pub(crate) fn free_summary(&self) -> FreeSummary {
        let high = self.high_water().min(self.chunks);
        let mut summary = FreeSummary::default();
        let mut run = 0;
        for chunk in 0..=high {
            let in_use = chunk == high
                || self.used(chunk / WORD_BITS).load(Ordering::Relaxed) >> (chunk % WORD_BITS) & 1
                    == 1;
            if in_use {
                if chunk == high {
                    // The free run below the high-water mark continues into
                    // the untouched chunks above it.
                    run += self.chunks - high;
                }
                summary.add_run(run);
                run = 0;
            } else {
                run += 1;
            }
        }
        summary
    }
}

/// A run of chunks a claim took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    /// Its first chunk.
    pub(crate) start: usize,
    /// Whether every byte of it reads zero (chunks never used since the
    /// OS zeroed them).
    pub(crate) zeroed: bool,
}

/// Iterator of [`Backend::free_block_runs`]: `bits` holds the index bits of
/// word `word` not yet visited.
struct FreeBlockRuns<'a> {
    backend: &'a Backend,
    word: usize,
    bits: u64,
    end: usize,
}

impl Iterator for FreeBlockRuns<'_> {
    type Item = (usize, Option<usize>);

    fn next(&mut self) -> Option<(usize, Option<usize>)> {
        while self.bits == 0 {
            self.word += 1;
            if self.word * WORD_BITS >= self.end {
                return None;
            }
            self.bits = self.backend.index_bits(self.word, self.end);
        }
        let first = self.word * WORD_BITS + self.bits.trailing_zeros() as usize;
        // Clear bits from the run's first block on.
        let mut clear = !self.bits & (!0u64 << self.bits.trailing_zeros());
        loop {
            if clear != 0 {
                let at = clear.trailing_zeros();
                self.bits &= !0u64 << at;
                let after = self.word * WORD_BITS + at as usize;
                return Some((first, (after < self.end).then_some(after)));
            }
            self.word += 1;
            if self.word * WORD_BITS >= self.end {
                self.bits = 0;
                return Some((first, None));
            }
            self.bits = self.backend.index_bits(self.word, self.end);
            clear = !self.bits;
        }
    }
}

/// Free chunk runs of a backend by length: `runs[b]` and `chunks[b]` count
/// the runs of `2^b ..= 2^(b+1) - 1` chunks (the last bucket takes every
/// longer run).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FreeSummary {
    pub(crate) runs: [usize; FREE_RUN_BUCKETS],
    pub(crate) chunks: [usize; FREE_RUN_BUCKETS],
    pub(crate) free: usize,
    pub(crate) longest: usize,
}

/// Buckets of [`FreeSummary`]: 1, 2-3, 4-7, ... chunks, the last open-ended.
pub(crate) const FREE_RUN_BUCKETS: usize = 10;

impl FreeSummary {
    fn add_run(&mut self, run: usize) {
        if run == 0 {
            return;
        }
        let bucket = (usize::BITS - 1 - run.leading_zeros()) as usize;
        let bucket = bucket.min(FREE_RUN_BUCKETS - 1);
        self.runs[bucket] += 1;
        self.chunks[bucket] += run;
        self.free += run;
        self.longest = self.longest.max(run);
    }
}

/// A backend that owns its bitmaps, over an imaginary region at `base` (its
/// chunks are never touched: a fixed source never decommits). For tests,
/// loom models and the backend benchmark.
#[cfg(any(test, feature = "internals"))]
pub(crate) struct OwnedBackend {
    backend: Backend,
    _bitmaps: [alloc::vec::Vec<AtomicU64>; 3],
}

#[cfg(any(test, feature = "internals"))]
extern crate alloc;

#[cfg(any(test, feature = "internals"))]
impl OwnedBackend {
    /// All `chunks` chunks free; chunk `i` at `base + i * 4 KiB`.
    pub(crate) fn new(chunks: usize, base: usize) -> OwnedBackend {
        let words = bitmap_words(chunks);
        let mut used: alloc::vec::Vec<AtomicU64> = (0..words).map(|_| AtomicU64::new(0)).collect();
        let mut dirty: alloc::vec::Vec<AtomicU64> = (0..words).map(|_| AtomicU64::new(0)).collect();
        let mut blocks: alloc::vec::Vec<AtomicU64> = (0..block_words(chunks))
            .map(|_| AtomicU64::new(0))
            .collect();
        // SAFETY: the vectors hold `words` and `block_words(chunks)` words
        // and live as long as the backend beside them (moving a Vec does not
        // move its buffer).
        let backend = unsafe {
            Backend::new(
                used.as_mut_ptr(),
                dirty.as_mut_ptr(),
                blocks.as_mut_ptr(),
                chunks,
                base,
                12,
                &crate::source::FIXED_REGION,
                &Config::for_region(1 << 20),
            )
        };
        OwnedBackend {
            backend,
            _bitmaps: [used, dirty, blocks],
        }
    }
}

#[cfg(any(test, feature = "internals"))]
impl core::ops::Deref for OwnedBackend {
    type Target = Backend;
    fn deref(&self) -> &Backend {
        &self.backend
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::OS_REGION;
    extern crate std;

    /// The next value of a xorshift generator (test data only).
    fn xorshift(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }
    use std::vec::Vec;

    #[test]
    fn first_fit_and_merge() {
        let b = OwnedBackend::new(200, 0x1000_0000);
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
        assert_eq!(
            (b.free_summary().free, b.free_summary().longest),
            (200, 200)
        );
        // The whole region is one run again.
        assert_eq!(b.alloc_run(200, 0), Some(0));
        assert_eq!(b.alloc_run(1, 0), None);
    }

    #[test]
    fn word_level_search_matches_a_bit_by_bit_search() {
        // Region sizes with and without padding bits in the last word, and
        // fragmentation that fills the region or stops below its top (so
        // the untouched-space fallback of best fit is exercised).
        // Longer claims leave longer runs, for the indexed best fit.
        for (chunks, claims, longest) in [
            (1000, 400, 7),
            (1024, 400, 7),
            (1000, 120, 7),
            (1024, 90, 7),
            (64, 9, 7),
            (3000, 150, 40),
            (4096, 120, 90),
        ] {
            let b = OwnedBackend::new(chunks, 0x1000_0000);
            let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ chunks as u64 ^ claims;
            let mut held = Vec::new();
            for _ in 0..claims {
                xorshift(&mut x);
                let n = 1 + (x % longest) as usize;
                if let Some(s) = b.alloc_run(n, 0) {
                    held.push((s, n));
                }
            }
            for (i, &(s, n)) in held.iter().enumerate() {
                if i % 3 != 0 {
                    b.free_run(s, n);
                }
            }
            check_searches(&b, chunks);
        }
    }

    #[test]
    fn highest_claims_stack_down_from_the_top_and_fill_the_highest_hole() {
        let chunks = 200;
        let b = OwnedBackend::new(chunks, 0x1000_0000);
        // Untouched region: the first claims stack down from the top.
        assert_eq!(b.alloc_run_highest(1), Some(199));
        assert_eq!(b.alloc_run_highest(2), Some(197));
        // Fill the rest, then open a hole of 1 chunk at 150 and one of 3 at
        // 180.
        assert_eq!(b.alloc_run(97, 0), Some(0));
        assert_eq!(b.alloc_run(97, 0), Some(97));
        assert_eq!(b.alloc_run(3, 0), Some(194));
        b.free_run(150, 1);
        b.free_run(180, 3);
        // One chunk goes to the top end of the highest hole, not to the
        // lower one-chunk hole that best fit would take; two go to the top
        // end of the highest hole that holds them; with no hole long
        // enough, nothing is claimed.
        assert_eq!(b.alloc_run_highest(1), Some(182));
        assert_eq!(b.alloc_run_highest(2), Some(180));
        assert_eq!(b.alloc_run_highest(2), None);
        assert_eq!(b.alloc_run_highest(1), Some(150));
        assert_eq!(b.reserved_chunks(), chunks);
        assert_eq!(b.alloc_run_highest(1), None);
    }

    #[test]
    fn hinted_first_fit_is_first_fit() {
        // One thread: the per-length hints never skip a run, so every claim
        // lands where a naive scan finds the first fit, through thousands
        // of claims and frees of runs shorter and longer than `HINTS`.
        let chunks = 700;
        let b = OwnedBackend::new(chunks, 0x1000_0000);
        let naive = |n: usize| (0..=chunks - n).find(|&s| (s..s + n).all(|c| b.is_free(c)));
        let mut held = Vec::new();
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        // Miri runs this about a thousand times slower.
        let rounds = if cfg!(miri) { 300 } else { 20_000 };
        for _ in 0..rounds {
            xorshift(&mut x);
            if !held.is_empty() && x % 5 < 2 {
                let (s, n) = held.swap_remove((x >> 8) as usize % held.len());
                b.free_run(s, n);
            } else {
                let n = 1 + (x >> 16) as usize % (2 * HINTS + 4);
                let want = naive(n);
                assert_eq!(b.alloc_run(n, 0), want, "run of {n}");
                if let Some(s) = want {
                    held.push((s, n));
                }
            }
        }
    }

    /// One thread: best-fit claims of long runs (indexed search) land where
    /// a naive bit-by-bit best fit says, through thousands of claims and
    /// frees of short and long runs, and the free-blocks index stays exact.
    #[test]
    fn indexed_best_fit_is_best_fit() {
        let chunks = 3000;
        let b = OwnedBackend::new(chunks, 0x1000_0000);
        let mut held = Vec::new();
        let mut x = 0x853C_49E6_748F_EA9Bu64;
        let rounds = if cfg!(miri) { 200 } else { 20_000 };
        for round in 0..rounds {
            xorshift(&mut x);
            if !held.is_empty() && x % 9 < 4 {
                let (s, n) = held.swap_remove((x >> 8) as usize % held.len());
                b.free_run(s, n);
            } else if x % 9 < 7 {
                let n = 1 + (x >> 16) as usize % 12;
                if let Some(s) = b.alloc_run(n, 0) {
                    held.push((s, n));
                }
            } else {
                let n = INDEXED_BEST_FIT + (x >> 16) as usize % 150;
                let want = naive_best_fit(&b, chunks, n);
                assert_eq!(b.alloc_run_best(n), want, "run of {n}, round {round}");
                if let Some(s) = want {
                    held.push((s, n));
                }
            }
            if round % 64 == 0 {
                check_blocks(&b, chunks);
            }
        }
        check_blocks(&b, chunks);
    }

    /// Indexed best fit against the word scan with nothing in progress:
    /// region sizes that are not multiples of 8 or 64, every `from_word`,
    /// high-water marks off block boundaries, every n from 15 to 104.
    #[test]
    fn indexed_best_fit_matches_the_word_scan_everywhere() {
        let mut x = 0x1234_5678_9ABC_DEF1u64;
        let mut rnd = move || xorshift(&mut x);
        let rounds = if cfg!(miri) { 1 } else { 40 };
        for chunks in [
            15, 16, 23, 64, 65, 100, 127, 128, 129, 511, 512, 513, 1003, 1024, 1031, 2049,
        ] {
            for _ in 0..rounds {
                let b = OwnedBackend::new(chunks, 0x1000_0000);
                // Random runs held below `top`, everything above it free.
                let top = rnd() as usize % (chunks + 1);
                let (mut pos, mut highest_used) = (0, 0);
                while pos < top {
                    let longest = [3, 9, 17, 40][rnd() as usize % 4];
                    let len = (1 + rnd() as usize % longest).min(top - pos);
                    if rnd() % 2 == 0 {
                        assert!(b.try_claim(pos, len));
                        highest_used = pos + len;
                    }
                    pos += len;
                }
                b.assert_index_exact();
                let high = highest_used + rnd() as usize % (chunks - highest_used + 1);
                b.high_water.store(high, Ordering::Relaxed);
                let lengths = INDEXED_BEST_FIT..(INDEXED_BEST_FIT + 90).min(chunks + 1);
                for n in lengths.step_by(if cfg!(miri) { 30 } else { 1 }) {
                    for from in 0..bitmap_words(chunks) + 2 {
                        assert_eq!(
                            b.find_best_fit_indexed(n, from),
                            b.find_best_fit(n, from),
                            "{chunks} chunks, high {high}, n {n}, from word {from}"
                        );
                    }
                }
            }
        }
    }

    /// The index rebuilt from the bitmap (as in a forked child) is exact,
    /// whatever it said before.
    #[test]
    fn rebuilt_index_is_exact() {
        let chunks = 1003;
        let b = OwnedBackend::new(chunks, 0x1000_0000);
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut held = Vec::new();
        for _ in 0..300 {
            let n = 1 + xorshift(&mut x) as usize % 20;
            if let Some(s) = b.alloc_run(n, 0) {
                held.push((s, n));
            }
        }
        for &(s, n) in held.iter().step_by(2) {
            b.free_run(s, n);
        }
        // A stale picture: every bit flipped, as half-done updates might leave.
        for i in 0..block_words(chunks) {
            // SAFETY: `i < block_words(chunks)`.
            let word = unsafe { &*b.blocks.add(i) };
            word.store(!word.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        // A claim across words that a fork cut short.
        b.holding.fetch_add(1, Ordering::SeqCst);
        b.reset_in_child();
        b.assert_index_exact();
        assert_eq!(b.holding.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn byte_flags_mark_exactly_the_zero_bytes() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for i in 0..if cfg!(miri) { 2_000u64 } else { 100_000 } {
            xorshift(&mut x);
            // Mostly sparse words, so that zero bytes are common.
            let v = x & (x >> 3) & (x >> 7) & (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 0x0101);
            let want = (0..8).fold(0, |m, j| m | (((v >> (8 * j)) & 0xff == 0) as u64) << j);
            assert_eq!(zero_bytes(v), want, "{v:#x}");
            assert_eq!(gather_flags(nonzero_flags(v)), !want & 0xff, "{v:#x}");
        }
        for v in [
            0,
            !0,
            0x80,
            0x0100,
            0x8000_0000_0000_0000,
            0x0101_0101_0101_0101,
        ] {
            let want = (0..8).fold(0, |m, j| m | (((v >> (8 * j)) & 0xff == 0) as u64) << j);
            assert_eq!(zero_bytes(v), want, "{v:#x}");
        }
    }

    fn check_blocks(b: &Backend, chunks: usize) {
        assert_eq!(b.chunks(), chunks);
        b.assert_index_exact();
    }

    /// Best fit by a bit-by-bit scan: the end of the shortest run below the
    /// high-water mark that holds n, highest of equals; else the start of
    /// the run reaching past the mark.
    fn naive_best_fit(b: &Backend, chunks: usize, n: usize) -> Option<usize> {
        let high = b.high_water();
        let mut runs = Vec::new(); // (length, start) of runs below `high`
        let mut open = high; // start of the run reaching past `high`
        let mut c = 0;
        while c < chunks {
            if !b.is_free(c) {
                c += 1;
                continue;
            }
            let s = c;
            while c < chunks && b.is_free(c) {
                c += 1;
            }
            if c < chunks && c > high || c == chunks && high < chunks {
                open = s.min(high);
            } else if s < high {
                runs.push((c - s, s));
            }
        }
        runs.iter()
            .filter(|r| r.0 >= n)
            .min_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
            .map(|&(len, s)| s + len - n)
            .or_else(|| (open + n <= chunks).then_some(open))
    }

    /// Checks first fit and best fit against naive bit-by-bit versions.
    fn check_searches(b: &Backend, chunks: usize) {
        check_blocks(b, chunks);
        let naive =
            |n: usize| (0..=chunks.saturating_sub(n)).find(|&s| (s..s + n).all(|c| b.is_free(c)));
        // Miri runs this about a thousand times slower: fewer lengths there.
        for n in (1..=150.min(chunks)).step_by(if cfg!(miri) { 23 } else { 1 }) {
            assert_eq!(
                b.find_free_run(n, 0),
                naive(n),
                "first fit of {n} in {chunks}"
            );
        }
        let naive_highest = |n: usize| {
            (0..=chunks.saturating_sub(n))
                .rev()
                .find(|&s| s + n <= chunks && (s..s + n).all(|c| b.is_free(c)))
        };
        for n in [1, 2, 3, 7, 63, 64, 65, 130, 300] {
            assert_eq!(
                b.find_highest_run(n),
                naive_highest(n),
                "highest run of {n} in {chunks}"
            );
        }
        let high = b.high_water();
        for n in [1, 3, 15, 16, 24, 40, 62, 63, 64, 65, 100, 300] {
            let want = naive_best_fit(b, chunks, n);
            assert_eq!(
                b.find_best_fit(n, 0),
                want,
                "best fit of {n} in {chunks}, high {high}"
            );
            if n >= INDEXED_BEST_FIT {
                assert_eq!(
                    b.find_best_fit_indexed(n, 0),
                    want,
                    "indexed best fit of {n} in {chunks}, high {high}"
                );
            }
            // Searches for runs of `HINTS` or more may start at the word
            // of the lowest such run, as `claim_best_fit` does.
            if n >= HINTS {
                let from = naive(HINTS).map_or(0, |s| s / WORD_BITS);
                assert_eq!(
                    b.find_best_fit(n, from),
                    want,
                    "best fit of {n} from word {from} in {chunks}, high {high}"
                );
                if n >= INDEXED_BEST_FIT {
                    assert_eq!(
                        b.find_best_fit_indexed(n, from),
                        want,
                        "indexed best fit of {n} from word {from} in {chunks}, high {high}"
                    );
                }
            }
        }
    }

    #[test]
    fn free_summary_buckets_runs_by_length() {
        let b = OwnedBackend::new(200, 0x1000_0000);
        // In use: 0, 2..5, 9..11; free: 1 (1 chunk), 5..9 (4), 11..200 (189).
        assert_eq!(b.alloc_run(1, 0), Some(0));
        assert_eq!(b.alloc_run(10, 0), Some(1));
        b.free_run(1, 1);
        b.free_run(5, 4);
        let s = b.free_summary();
        assert_eq!((s.free, s.longest), (194, 189));
        let mut runs = [0; FREE_RUN_BUCKETS];
        (runs[0], runs[2], runs[7]) = (1, 1, 1);
        assert_eq!(s.runs, runs);
        let mut chunks = [0; FREE_RUN_BUCKETS];
        (chunks[0], chunks[2], chunks[7]) = (1, 4, 189);
        assert_eq!(s.chunks, chunks);
    }

    #[test]
    fn aligned_runs_and_growth() {
        let b = OwnedBackend::new(300, 0x1000_0000);
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

    /// A backend over a real mapping of `chunks` 4 KiB chunks, so that
    /// madvise has something to act on, with the given purge settings.
    #[cfg(feature = "std")]
    const NEVER_MS: u64 = 1_000_000;

    #[cfg(feature = "std")]
    struct OsBackend {
        backend: Backend,
        _bitmaps: [Vec<AtomicU64>; 3],
        region: core::ptr::NonNull<u8>,
        bytes: usize,
    }

    #[cfg(feature = "std")]
    impl OsBackend {
        fn new(
            chunks: usize,
            dirty_limit_chunks: usize,
            decommit_delay_ms: u64,
            decommit_epoch_ms: u64,
        ) -> OsBackend {
            Self::with_source(
                chunks,
                dirty_limit_chunks,
                decommit_delay_ms,
                decommit_epoch_ms,
                &OS_REGION,
            )
        }

        fn with_source(
            chunks: usize,
            dirty_limit_chunks: usize,
            decommit_delay_ms: u64,
            decommit_epoch_ms: u64,
            source: &'static dyn Source,
        ) -> OsBackend {
            let words = bitmap_words(chunks);
            let mut used: Vec<AtomicU64> = (0..words).map(|_| AtomicU64::new(0)).collect();
            let mut dirty: Vec<AtomicU64> = (0..words).map(|_| AtomicU64::new(0)).collect();
            let mut blocks: Vec<AtomicU64> = (0..block_words(chunks))
                .map(|_| AtomicU64::new(0))
                .collect();
            let bytes = chunks << 12;
            let region = crate::platform::reserve(bytes).expect("reserve");
            // SAFETY: the bitmaps hold `words` and `block_words(chunks)`
            // words and live as long as the backend beside them (moving a
            // Vec does not move its buffer).
            let backend = unsafe {
                Backend::new(
                    used.as_mut_ptr(),
                    dirty.as_mut_ptr(),
                    blocks.as_mut_ptr(),
                    chunks,
                    region.as_ptr() as usize,
                    12,
                    source,
                    &Config {
                        dirty_limit_bytes: dirty_limit_chunks << 12,
                        decommit_delay_ms,
                        decommit_epoch_ms,
                        ..Config::for_os()
                    },
                )
            };
            OsBackend {
                backend,
                _bitmaps: [used, dirty, blocks],
                region,
                bytes,
            }
        }

        /// Writes to every page of chunks `[start, start + n)`.
        fn touch(&self, start: usize, n: usize) {
            // SAFETY: chunk memory of our own mapping, held by the test.
            unsafe { core::ptr::write_bytes(self.region.as_ptr().add(start << 12), 0xAB, n << 12) };
        }

        /// Whether chunk `i` still holds what `touch` wrote (decommitted
        /// pages read as zero).
        fn resident(&self, i: usize) -> bool {
            // SAFETY: inside our own mapping, which stays mapped.
            unsafe { *self.region.as_ptr().add(i << 12) == 0xAB }
        }

        fn dirty_chunks(&self) -> usize {
            self.backend.dirty_chunks.load(Ordering::Relaxed)
        }
    }

    #[cfg(feature = "std")]
    impl Drop for OsBackend {
        fn drop(&mut self) {
            // SAFETY: the reservation made in `new`, no longer used.
            unsafe { crate::platform::release(self.region.as_ptr(), self.bytes) };
        }
    }

    /// A claim says a run reads zero exactly when no chunk of it was used
    /// since the OS zeroed it: fresh, or decommitted by a purge; never for
    /// a region that is not decommitted.
    #[test]
    #[cfg(feature = "std")]
    #[cfg_attr(miri, ignore = "Miri does not model MAP_NORESERVE or madvise")]
    fn a_claim_knows_when_its_run_reads_zero() {
        if crate::platform::page_size() > 1 << 12 || !crate::platform::decommit_zeroes() {
            // 4 KiB chunks hold no whole page to give back, or the OS does
            // not zero what it is given (then nothing is known zero).
            std::eprintln!("SKIPPED: pages over 4 KiB, or madvise does not zero");
            return;
        }
        let b = OsBackend::new(100, 1000, NEVER_MS, NEVER_MS);
        let fresh = b.backend.claim_first_fit(10, 0).expect("room");
        assert_eq!(
            fresh,
            Run {
                start: 0,
                zeroed: true
            }
        );
        b.touch(0, 10);
        b.backend.free_run(0, 10);
        // Dirty (kept resident: the limit is high): not zero, and dirty
        // chunks at the start of a longer run spoil all of it.
        assert_eq!(
            b.backend.claim_first_fit(4, 0),
            Some(Run {
                start: 0,
                zeroed: false
            })
        );
        assert_eq!(
            b.backend.claim_best_fit(20),
            Some(Run {
                start: 4,
                zeroed: false
            })
        );
        b.backend.free_run(4, 20);
        assert!(b.dirty_chunks() > 0);
        b.backend.purge_free();
        assert_eq!(b.dirty_chunks(), 0);
        let purged = b.backend.claim_best_fit(20).expect("room");
        assert!(purged.zeroed, "{purged:?}");
        assert!((0..20).all(|i| !b.resident(purged.start + i)));
        let fixed = OwnedBackend::new(100, 0x1000_0000);
        assert_eq!(
            fixed.claim_first_fit(1, 0),
            Some(Run {
                start: 0,
                zeroed: false
            })
        );
    }

    /// A source that decommits but says its decommits leave data behind
    /// (as with chunks smaller than the page, or locked memory).
    #[cfg(feature = "std")]
    struct LeakyDecommit;

    #[cfg(feature = "std")]
    impl Source for LeakyDecommit {
        fn decommits(&self) -> bool {
            true
        }
        fn zeroes(&self) -> bool {
            true
        }
        unsafe fn decommit(&self, _base: *mut u8, _bytes: usize) -> Decommitted {
            Decommitted::Partly
        }
    }

    /// One decommit that leaves data behind, and no run is known to read
    /// zero again, untouched ones included.
    #[test]
    #[cfg(feature = "std")]
    #[cfg_attr(miri, ignore = "Miri does not model MAP_NORESERVE")]
    fn a_decommit_that_leaves_data_ends_zero_knowledge() {
        static LEAKY: LeakyDecommit = LeakyDecommit;
        let b = OsBackend::with_source(100, 1000, NEVER_MS, NEVER_MS, &LEAKY);
        assert_eq!(
            b.backend.claim_first_fit(10, 0),
            Some(Run {
                start: 0,
                zeroed: true
            })
        );
        b.touch(0, 10);
        b.backend.free_run(0, 10);
        b.backend.purge_free();
        assert_eq!(b.dirty_chunks(), 0);
        assert!(b.resident(0), "the leaky source kept the data");
        assert_eq!(
            b.backend.claim_first_fit(10, 0),
            Some(Run {
                start: 0,
                zeroed: false
            })
        );
        assert_eq!(
            b.backend.claim_first_fit(10, 0),
            Some(Run {
                start: 10,
                zeroed: false
            })
        );
    }

    #[test]
    #[cfg(feature = "std")]
    #[cfg_attr(miri, ignore = "Miri does not model MAP_NORESERVE or madvise")]
    fn decommit_source_tracks_dirty_chunks() {
        let b = OsBackend::new(100, 8, NEVER_MS, NEVER_MS);
        let start = b.backend.alloc_run(20, 0).expect("room");
        b.touch(start, 20);
        b.backend.free_run(start, 20);
        // 20 chunks exceed the 8-chunk dirty limit with nothing in use: all
        // were given back.
        assert_eq!(b.dirty_chunks(), 0);
        assert!(!b.resident(5));
        assert_eq!(
            (
                b.backend.free_summary().free,
                b.backend.free_summary().longest
            ),
            (100, 100)
        );
    }

    #[test]
    #[cfg(feature = "std")]
    #[cfg_attr(miri, ignore = "Miri does not model MAP_NORESERVE or madvise")]
    fn a_phase_freed_below_the_recent_peak_stays_resident() {
        let b = OsBackend::new(200, 8, NEVER_MS, NEVER_MS);
        assert_eq!(b.backend.alloc_run(40, 0), Some(0));
        assert_eq!(b.backend.alloc_run(40, 0), Some(40));
        b.touch(0, 80);
        b.backend.free_run(40, 40);
        // 40 dirty, 40 in use, peak 80: within the room to the peak.
        assert_eq!(b.dirty_chunks(), 40);
        assert!(b.resident(79));
        // The next phase reuses it without faulting it in again.
        assert_eq!(b.backend.alloc_run(40, 0), Some(40));
        assert_eq!(b.dirty_chunks(), 0);
        assert!(b.resident(79));
        // Freeing everything leaves no room: given back at once.
        b.backend.free_run(40, 40);
        b.backend.free_run(0, 40);
        assert_eq!(b.dirty_chunks(), 0);
        assert!(!b.resident(0) && !b.resident(79));
    }

    #[test]
    #[cfg(feature = "std")]
    #[cfg_attr(miri, ignore = "Miri does not model MAP_NORESERVE or madvise")]
    fn dirty_chunks_that_stopped_a_purge_and_were_reused_do_not_stop_the_next() {
        let b = OsBackend::new(200, 8, NEVER_MS, NEVER_MS);
        for i in 0..120 {
            assert_eq!(b.backend.alloc_run(1, 0), Some(i));
        }
        b.touch(0, 120);
        // Two chunks of every three freed: 80 dirty in runs of two, too
        // short for an over-limit purge, which notes where it got stuck.
        for i in (0..120).filter(|i| i % 3 != 0) {
            b.backend.free_run(i, 1);
        }
        assert_eq!(b.dirty_chunks(), 80);
        assert!(b.backend.stuck_dirty.load(Ordering::Relaxed) > 0);
        // The next phase reuses every one of them.
        for _ in 0..80 {
            assert!(b.backend.alloc_run(1, 0).is_some());
        }
        assert_eq!(b.dirty_chunks(), 0);
        // 70 chunks freed as one run, 50 left in use: over the limit of
        // 50, and long enough to give back. (With the stuck mark left at
        // 70 from before, nothing was given back.)
        b.backend.free_run(0, 70);
        assert!(b.dirty_chunks() < 70, "{} dirty", b.dirty_chunks());
        assert!(!b.resident(69));
        assert!(b.resident(70));
    }

    #[test]
    #[cfg(feature = "std")]
    #[cfg_attr(miri, ignore = "Miri does not model MAP_NORESERVE or madvise")]
    fn an_epoch_gives_back_what_stayed_unused_throughout() {
        // Epochs long enough that a loaded machine's pauses between two
        // calls (which would end an epoch early) do not matter.
        let epoch_ms = 1500;
        let pause = || std::thread::sleep(std::time::Duration::from_millis(epoch_ms + 200));
        // A dirty floor of 100 chunks keeps the over-limit rule out of it.
        let b = OsBackend::new(200, 100, NEVER_MS, epoch_ms);
        assert_eq!(b.backend.alloc_run(1, 0), Some(0));
        assert_eq!(b.backend.alloc_run(20, 0), Some(1));
        assert_eq!(b.backend.alloc_run(20, 0), Some(21));
        b.touch(0, 41);
        pause();
        // Ends the first epoch (nothing was dirty in it); 20 dirty after.
        b.backend.free_run(21, 20);
        // Within the new epoch.
        b.backend.free_run(1, 20);
        assert_eq!(b.dirty_chunks(), 40);
        pause();
        // Ends the second epoch, which had at least 20 dirty chunks all
        // along: 20 are given back, from the top; the rest were freed within
        // it, and chunk 0 just now.
        b.backend.free_run(0, 1);
        assert_eq!(b.dirty_chunks(), 21);
        assert!(b.resident(0) && b.resident(20));
        assert!(!b.resident(21) && !b.resident(40));
    }

    #[test]
    #[cfg(feature = "std")]
    #[cfg_attr(miri, ignore = "Miri does not model MAP_NORESERVE or madvise")]
    fn a_quiet_time_gives_everything_back() {
        // Long enough that a loaded machine's pauses between two calls do
        // not make a quiet time.
        let delay_ms = 2000;
        let b = OsBackend::new(200, 100, delay_ms, NEVER_MS);
        assert_eq!(b.backend.alloc_run(40, 0), Some(0));
        assert_eq!(b.backend.alloc_run(1, 0), Some(40));
        b.touch(0, 41);
        b.backend.free_run(0, 40);
        // Freed just now: kept for reuse.
        assert_eq!(b.dirty_chunks(), 40);
        // Reusing a dirty chunk is a change: the quiet time starts again.
        assert_eq!(b.backend.alloc_run(1, 0), Some(0));
        assert_eq!(b.dirty_chunks(), 39);
        std::thread::sleep(std::time::Duration::from_millis(delay_ms + 200));
        // No dirty chunk was freed or reused for a whole delay: the next
        // operation gives every dirty chunk back.
        b.backend.free_run(40, 1);
        assert_eq!(b.dirty_chunks(), 0);
        assert!(b.resident(0));
        assert!(!b.resident(1) && !b.resident(39) && !b.resident(40));
    }
}

/// Model checks (run with `RUSTFLAGS="--cfg loom"`, see `.ci/loom`).
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    extern crate std;
    use loom::sync::Arc;

    fn backend(chunks: usize) -> Arc<OwnedBackend> {
        Arc::new(OwnedBackend::new(chunks, 1 << 20))
    }

    fn overlap(a: (usize, usize), b: (usize, usize)) -> bool {
        a.0 < b.0 + b.1 && b.0 < a.0 + a.1
    }

    /// Two threads claim runs, one of them two words long: they never
    /// overlap, and a claim fails only if no run long enough is left. (A
    /// claim in progress holds its low word for a moment, so the short
    /// claim may land above it and split the space: first fit is a
    /// preference under contention, not a promise.)
    #[test]
    fn claims_never_overlap() {
        loom::model(|| {
            let b = backend(128);
            let b2 = Arc::clone(&b);
            let t = loom::thread::spawn(move || b2.alloc_run(70, 0).map(|s| (s, 70)));
            let mine = (b.alloc_run(3, 0).expect("room for 3 of 128"), 3);
            match t.join().expect("claimer") {
                Some(theirs) => {
                    assert!(!overlap(mine, theirs), "{mine:?} overlaps {theirs:?}");
                    b.free_run(theirs.0, theirs.1);
                }
                None => assert!(
                    b.free_summary().longest < 70,
                    "70 chunks were free, yet the claim failed"
                ),
            }
            b.free_run(mine.0, mine.1);
            assert_eq!(
                (b.free_summary().free, b.free_summary().longest),
                (128, 128)
            );
            assert_eq!(b.reserved_chunks(), 0);
            b.assert_index_exact();
        });
    }

    /// A highest claim (allocator metadata) races with a first-fit claim
    /// across two words for the same free run, too short for both: exactly
    /// one of them gets its chunks, they never overlap, and the one that
    /// fails does so only because no run long enough is left.
    #[test]
    fn highest_and_first_fit_claims_never_overlap() {
        let mut model = loom::model::Builder::new();
        // Three words and their index, read whole by the checks: longer
        // paths than the default bound allows, none of them a spin.
        model.max_branches = 20_000;
        model.check(|| {
            let b = backend(192);
            // Chunks 0..64 held, 64..192 free.
            assert_eq!(b.alloc_run(64, 0), Some(0));
            let b2 = Arc::clone(&b);
            let t = loom::thread::spawn(move || b2.alloc_run(100, 0).map(|s| (s, 100)));
            let top = b.alloc_run_highest(40).map(|s| (s, 40));
            let low = t.join().expect("claimer");
            match (low, top) {
                (Some(low), None) => {
                    assert_eq!(low, (64, 100));
                    assert!(b.free_summary().longest < 40, "40 chunks were free");
                    b.free_run(low.0, low.1);
                }
                (None, Some(top)) => {
                    assert_eq!(top, (152, 40));
                    assert!(b.free_summary().longest < 100, "100 chunks were free");
                    b.free_run(top.0, top.1);
                }
                other => panic!("one claim must win, one fail: {other:?}"),
            }
            b.free_run(0, 64);
            assert_eq!(
                (b.free_summary().free, b.free_summary().longest),
                (192, 192)
            );
            assert_eq!(b.reserved_chunks(), 0);
            b.assert_index_exact();
        });
    }

    /// A claim that takes the last free chunks of a block races with a
    /// free that frees the block's other chunks, and with a free of a
    /// whole block beside it: once both are done, the free-blocks index
    /// is exact (the claim's clear cannot undo the free's set for good),
    /// and the best fit it guides finds the freed run.
    #[test]
    fn free_blocks_index_survives_racing_claims_and_frees() {
        loom::model(|| {
            let b = backend(64);
            // Chunks 0..4 free, 4..8 held, 8..16 held, the rest held.
            assert_eq!(b.alloc_run(64, 0), Some(0));
            b.free_run(0, 4);
            let b2 = Arc::clone(&b);
            let t = loom::thread::spawn(move || {
                b2.free_run(4, 4);
                b2.free_run(8, 8);
            });
            let mine = b.alloc_run(4, 0).expect("4 chunks are free");
            t.join().expect("freer");
            b.assert_index_exact();
            b.free_run(mine, 4);
            b.assert_index_exact();
            assert_eq!(b.alloc_run_best(16), Some(0));
        });
    }

    /// Two threads race for the same single free run of 2 chunks (one of
    /// them, spanning a word boundary, may roll back): exactly one wins.
    #[test]
    fn one_winner_for_the_last_run() {
        loom::model(|| {
            let b = backend(128);
            // Leave only chunks 63 and 64 free: the run spans two words.
            assert_eq!(b.alloc_run(63, 0), Some(0));
            assert_eq!(b.alloc_run(2, 0), Some(63));
            assert_eq!(b.alloc_run(63, 0), Some(65));
            b.free_run(63, 2);
            let b2 = Arc::clone(&b);
            let t = loom::thread::spawn(move || b2.alloc_run(2, 0));
            let mine = b.alloc_run(2, 0);
            let theirs = t.join().expect("claimer");
            assert!(mine.is_some() != theirs.is_some(), "{mine:?} {theirs:?}");
            assert_eq!(mine.or(theirs), Some(63));
        });
    }

    /// A claim across two words holds the first while a one-chunk claim
    /// takes a chunk of the second, so it rolls back; a search for three
    /// chunks that fails meanwhile (only two free chunks in sight) must
    /// look again: it may fail only if the long claim succeeded. (Before
    /// the count of holders, a search retried only if a roll-back had
    /// already happened, and reported out of memory with 64 chunks free.)
    #[test]
    fn a_search_that_meets_a_claim_in_progress_does_not_fail_falsely() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.max_branches = 100_000;
        model.check(|| {
            let b = backend(128);
            // Chunks 0..67 free, the rest held.
            assert_eq!(b.alloc_run(128, 0), Some(0));
            b.free_run(0, 67);
            let (b2, b3) = (Arc::clone(&b), Arc::clone(&b));
            let long = loom::thread::spawn(move || b2.alloc_run(67, 0));
            let one = loom::thread::spawn(move || b3.alloc_run(1, 0));
            let three = b.alloc_run(3, 0);
            let long = long.join().expect("long claim");
            let one = one.join().expect("one-chunk claim");
            assert!(
                three.is_some() || long.is_some(),
                "3 chunks refused while 67 were free ({long:?}, {one:?})"
            );
        });
    }

    /// A free races with a claim of the same chunks: the count never holds
    /// them twice, so the peak stays at the backend's size (it reached 16
    /// of 8 with the free's subtraction after its release).
    #[test]
    fn a_run_freed_and_claimed_at_once_is_counted_once() {
        loom::model(|| {
            let b = backend(8);
            assert_eq!(b.alloc_run(8, 0), Some(0));
            let b2 = Arc::clone(&b);
            let t = loom::thread::spawn(move || b2.free_run(0, 8));
            let mine = loop {
                if let Some(start) = b.alloc_run(8, 0) {
                    break start;
                }
                loom::thread::yield_now();
            };
            t.join().expect("freer");
            assert_eq!(b.peak_reserved_chunks(), 8);
            assert_eq!(b.reserved_chunks(), 8);
            b.free_run(mine, 8);
        });
    }

    /// Frees of two neighbouring runs race with a claim of their union; once
    /// both frees are done, the union can be claimed (merging is implicit).
    #[test]
    fn frees_merge_with_neighbours() {
        loom::model(|| {
            let b = backend(64);
            assert_eq!(b.alloc_run(32, 0), Some(0));
            assert_eq!(b.alloc_run(32, 0), Some(32));
            let b2 = Arc::clone(&b);
            let t = loom::thread::spawn(move || b2.free_run(0, 32));
            b.free_run(32, 32);
            t.join().expect("freer");
            b.assert_index_exact();
            assert_eq!(b.alloc_run(64, 0), Some(0));
        });
    }
}
