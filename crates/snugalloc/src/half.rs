//! Half chunks: chunks split into two objects of half a chunk each, owned by
//! no allocator, so that any thread can take a half or give one back with
//! one compare-and-swap, and a chunk whose halves are both free goes back to
//! the backend at once.
//!
//! In small fixed heaps objects up to 1 KiB come from slabs and larger ones
//! are runs of whole 4 KiB chunks, so an object of 1-2 KiB wasted 2-3 KiB.
//! Slab objects would waste less, but a slab object freed by another thread
//! waits in its owner's inbox while the owner is descheduled; a half has no
//! owner, so it is free the moment any thread frees it.
//!
//! **State.** A half chunk's state is the set of its halves in use, `LOW`
//! (bit 0), `HIGH` (bit 1) or both, kept in the chunk's own pagemap
//! descriptor (kind `Half`); see [`HalfStates`]. It is the only source of
//! truth, and every change is one compare-and-swap of that word:
//!
//! ```text
//!   backend claim ─start─▶ {LOW} ─take─▶ {LOW,HIGH} ─release─▶ {LOW} or {HIGH}
//!                          {LOW} or {HIGH} ─release─▶ chunk Free ─▶ backend free
//! ```
//!
//! The CAS compares the whole descriptor, so a thread acting on a stale
//! picture of a chunk (it went back to the backend and became a slab or a
//! large object meanwhile) fails instead of corrupting it; if it became a
//! half chunk again, the state it sees is the chunk's real state, and the
//! CAS acts on that.
//!
//! **Finding a free half.** `open` is a bitmap with one bit per chunk, a
//! hint that the chunk may have a free half; `hint` is a lower bound of the
//! first word of `open` with a bit set, packed with a count of publications
//! (see [`Halves::publish`]) so that a search that raises it fails to when
//! a chunk was published below meanwhile. A search takes the lowest chunk
//! with a bit, so halves are packed at the bottom like first fit does with
//! chunks, and a thread that opens a fresh chunk finds its other half next.
//!
//! Invariants (with `s(c)` the state of chunk `c`):
//! - `s(c)` is `Half` only while the chunk's backend bit is set; the chunk
//!   goes back to the backend only after the CAS that took `s(c)` from one
//!   half to `Free`, done by the thread that freed the last half.
//! - A half is handed out only by the CAS that added it to `s(c)`, and
//!   given back only by the CAS that removed it: no half is held twice.
//! - If `s(c)` has exactly one half in use, `open` has bit `c` set, except
//!   while the thread whose CAS made it so has yet to publish it. Bits may
//!   also be set for chunks with no free half (stale); a search that meets
//!   one clears it and re-reads `s(c)`, publishing it again if a half was
//!   freed meanwhile. Of a clear and a concurrent publication (both
//!   read-modify-writes of the same word, so one comes first) either the
//!   publication comes last, or the clear reads from it (Acquire against
//!   its Release) and so sees the state change made before it.
//! - If a bit below word `hint.word` is set, a publication that will lower
//!   `hint` is in progress: a search that read the hint before a
//!   publication's CAS of it fails to raise it (the count changed), and one
//!   that read it after sees the publication's bit (Acquire against
//!   Release). A missed half would cost memory, never correctness.
//!
//! `loom_tests` model-checks the races: a take against the release of the
//! other half, the last release against a take, and two last releases.

use crate::sync::model::{AtomicU64, Ordering};
use crate::sync::CachePadded;

/// The lower half of a chunk.
pub(crate) const LOW: u64 = 1;
/// The upper half of a chunk.
pub(crate) const HIGH: u64 = 2;
/// Both halves.
pub(crate) const BOTH: u64 = LOW | HIGH;

const WORD_BITS: usize = 64;

/// Per-chunk half states, as the protocol sees them: in the heap, the
/// pagemap's descriptor words; in loom models, a plain array.
///
/// `halves` must be an Acquire load, `replace` an AcqRel CAS (a release
/// of a half happens before the take that hands it out again) and `start`
/// a Release store.
pub(crate) trait HalfStates {
    /// The halves of chunk `chunk` in use (`LOW`, `HIGH` or `BOTH`) if it
    /// is a half chunk, else 0.
    fn halves(&self, chunk: usize) -> u64;
    /// Replaces state `old` (1 to 3) of chunk `chunk` by `new` (0 = no
    /// longer a half chunk: free in the pagemap) if it still has it.
    fn replace(&self, chunk: usize, old: u64, new: u64) -> bool;
    /// Makes chunk `chunk`, just claimed from the backend, a half chunk with
    /// `LOW` in use.
    fn start(&self, chunk: usize);
}

/// What [`Halves::release`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Release {
    /// The other half is in use; this one is free for anybody.
    HalfFree,
    /// Both halves are free: the chunk is marked free in the pagemap and the
    /// caller must give it back to the backend.
    ChunkFree,
    /// The half was not in use (a double free, or a foreign pointer).
    NotInUse,
}

/// The shared index of half chunks with a free half. See the module
/// documentation.
///
/// Invariant: `open` points to `words` initialised words that live as long
/// as the heap (`words` is 0 when the heap serves no halves).
pub(crate) struct Halves {
    open: *const AtomicU64,
    words: usize,
    /// `word << 32 | publications` (the count wraps).
    hint: CachePadded<AtomicU64>,
}

// SAFETY: all state is atomics; the raw pointer only names a bitmap that
// lives as long as the heap.
unsafe impl Sync for Halves {}
// SAFETY: as above.
unsafe impl Send for Halves {}

/// Words of `open` for `chunks` chunks.
pub(crate) const fn open_words(chunks: usize) -> usize {
    chunks.div_ceil(WORD_BITS)
}

impl Halves {
    /// An index with no chunk open.
    ///
    /// # Safety
    /// `open` must be valid for `words` words, zeroed (or all clear), and
    /// used by nothing else for as long as the index lives.
    pub(crate) unsafe fn new(open: *const AtomicU64, words: usize) -> Halves {
        Halves {
            open,
            words,
            hint: CachePadded(AtomicU64::new(0)),
        }
    }

    #[inline]
    fn word(&self, w: usize) -> &AtomicU64 {
        debug_assert!(w < self.words, "word {w} of {}", self.words);
        // SAFETY: `w < words` (checked by every caller, re-checked in debug
        // builds), and the type invariant says those words are valid.
        unsafe { &*self.open.add(w) }
    }

    /// Takes a free half of the lowest open chunk: the chunk and `LOW` or
    /// `HIGH`, or `None` when no chunk has a free half (as far as the hints
    /// say).
    pub(crate) fn claim(&self, states: &impl HalfStates) -> Option<(usize, u64)> {
        // Acquire: pairs with the CAS in `publish`, so the bit of a
        // publication that lowered the hint to `h` is seen below.
        let h = self.hint.load(Ordering::Acquire);
        let from = (h >> 32) as usize;
        for w in from..self.words {
            loop {
                // Acquire: pairs with the `fetch_or` of `publish`.
                let bits = self.word(w).load(Ordering::Acquire);
                if bits == 0 {
                    break;
                }
                let chunk = w * WORD_BITS + bits.trailing_zeros() as usize;
                if let Some(half) = self.take(states, chunk) {
                    self.raise_hint(h, w);
                    return Some((chunk, half));
                }
                // Stale: nothing to take there now.
                self.close(states, chunk);
            }
        }
        self.raise_hint(h, self.words);
        None
    }

    /// Takes a free half of `chunk` if it has one.
    fn take(&self, states: &impl HalfStates, chunk: usize) -> Option<u64> {
        loop {
            let used = states.halves(chunk);
            if used == 0 || used == BOTH {
                return None;
            }
            let half = if used & LOW == 0 { LOW } else { HIGH };
            if states.replace(chunk, used, used | half) {
                if used | half == BOTH {
                    self.close(states, chunk);
                }
                return Some(half);
            }
        }
    }

    /// Clears `chunk`'s bit, then publishes it again if it has a free half
    /// (a release may have freed one between our look and the clear).
    fn close(&self, states: &impl HalfStates, chunk: usize) {
        let (w, bit) = (chunk / WORD_BITS, 1u64 << (chunk % WORD_BITS));
        // AcqRel: a publication of `chunk` is either after this clear in
        // the word's order, or this clear reads from it (Acquire against
        // the Release of its `fetch_or`) and the load below sees the state
        // change made before it.
        self.word(w).fetch_and(!bit, Ordering::AcqRel);
        let used = states.halves(chunk);
        if used == LOW || used == HIGH {
            self.publish(chunk);
        }
    }

    /// Marks `chunk` as having a free half and lowers the hint to its word,
    /// counting the publication so that a concurrent search cannot raise
    /// the hint past it.
    fn publish(&self, chunk: usize) {
        let (w, bit) = (chunk / WORD_BITS, 1u64 << (chunk % WORD_BITS));
        // AcqRel: the release half pairs with the loads of `claim` and the
        // clear in `close`, which then see the state change that made the
        // half free; the acquire half is what the argument in the module
        // documentation (a clear and a concurrent set of one word) needs.
        self.word(w).fetch_or(bit, Ordering::AcqRel);
        // Relaxed: only the starting value of the CAS loop.
        let mut h = self.hint.load(Ordering::Relaxed);
        loop {
            let word = ((h >> 32) as usize).min(w) as u64;
            let count = (h as u32).wrapping_add(1) as u64;
            // AcqRel: pairs with the load in `claim` (a search that reads
            // this value sees our bit); a search that read the hint before
            // this CAS fails its own in `raise_hint` (the count changed).
            match self.hint.compare_exchange_weak(
                h,
                word << 32 | count,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => h = now,
            }
        }
    }

    /// After a search that started from hint `h` and found no open chunk
    /// below word `w`: raises the hint to `w`, unless anything was published
    /// since the search read `h` (then the hint stays as it is).
    fn raise_hint(&self, h: u64, w: usize) {
        if w > (h >> 32) as usize {
            let raised = (w as u64) << 32 | (h & 0xFFFF_FFFF);
            // Relaxed: the hint orders nothing we wrote (see `publish`).
            // Failure is fine: somebody published.
            let _ = self
                .hint
                .compare_exchange(h, raised, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// Makes `chunk`, just claimed from the backend (and free in the
    /// pagemap), a half chunk whose `LOW` half the caller holds, and opens
    /// its `HIGH` half to everybody.
    pub(crate) fn start(&self, states: &impl HalfStates, chunk: usize) {
        debug_assert_eq!(states.halves(chunk), 0);
        states.start(chunk);
        self.publish(chunk);
    }

    /// Gives back half `half` of `chunk`.
    pub(crate) fn release(&self, states: &impl HalfStates, chunk: usize, half: u64) -> Release {
        debug_assert!(half == LOW || half == HIGH);
        loop {
            let used = states.halves(chunk);
            if used & half == 0 {
                return Release::NotInUse;
            }
            let left = used & !half;
            if states.replace(chunk, used, left) {
                if left == 0 {
                    // The chunk is ours until we give it to the backend, so
                    // nobody can open it again before this clear.
                    let (w, bit) = (chunk / WORD_BITS, 1u64 << (chunk % WORD_BITS));
                    // Relaxed: a hint only; the caller's backend free
                    // orders it before the chunk's next life.
                    self.word(w).fetch_and(!bit, Ordering::Relaxed);
                    return Release::ChunkFree;
                }
                self.publish(chunk);
                return Release::HalfFree;
            }
        }
    }

    /// Chunks whose bit in `open` is set.
    #[cfg(test)]
    pub(crate) fn open_count(&self) -> usize {
        (0..self.words)
            // Relaxed: statistics only.
            .map(|w| self.word(w).load(Ordering::Relaxed).count_ones() as usize)
            .sum()
    }

    /// Checks that every chunk with exactly one free half is open; for
    /// tests and debug builds when no other thread is active.
    #[cfg(test)]
    pub(crate) fn check_quiescent(&self, states: &impl HalfStates, chunks: usize) {
        for c in 0..chunks.min(self.words * WORD_BITS) {
            let used = states.halves(c);
            // Acquire: quiescent, any ordering would do.
            let open = self.word(c / WORD_BITS).load(Ordering::Acquire) & (1 << (c % WORD_BITS));
            assert!(
                !(used == LOW || used == HIGH) || open != 0,
                "half chunk {c} has a free half but is not open"
            );
        }
    }
}

/// A `Halves` over a bitmap it owns, and plain per-chunk states: for tests
/// and loom models.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    /// States of `n` chunks: 0 = free, 1-3 = halves in use.
    pub(crate) struct Chunks {
        pub(crate) state: Vec<AtomicU64>,
    }

    impl Chunks {
        pub(crate) fn new(n: usize) -> Chunks {
            Chunks {
                state: (0..n).map(|_| AtomicU64::new(0)).collect(),
            }
        }
    }

    impl HalfStates for Chunks {
        fn halves(&self, chunk: usize) -> u64 {
            // Acquire, AcqRel, Release: the orderings the trait requires.
            self.state[chunk].load(Ordering::Acquire)
        }
        fn replace(&self, chunk: usize, old: u64, new: u64) -> bool {
            self.state[chunk]
                .compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        }
        fn start(&self, chunk: usize) {
            self.state[chunk].store(LOW, Ordering::Release);
        }
    }

    /// A `Halves` with its own bitmap for `chunks` chunks.
    pub(crate) struct OwnedHalves {
        pub(crate) halves: Halves,
        _open: Vec<AtomicU64>,
    }

    impl OwnedHalves {
        pub(crate) fn new(chunks: usize) -> OwnedHalves {
            let words = open_words(chunks);
            let open: Vec<AtomicU64> = (0..words).map(|_| AtomicU64::new(0)).collect();
            // SAFETY: `open` holds `words` clear words and lives beside the
            // index (moving a Vec does not move its buffer).
            let halves = unsafe { Halves::new(open.as_ptr(), words) };
            OwnedHalves {
                halves,
                _open: open,
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::testing::{Chunks, OwnedHalves};
    use super::*;
    extern crate std;
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use std::vec::Vec;

    #[test]
    fn a_chunk_serves_two_halves_and_frees_once() {
        let (chunks, h) = (Chunks::new(4), OwnedHalves::new(4));
        let h = &h.halves;
        assert_eq!(h.claim(&chunks), None);
        h.start(&chunks, 1);
        assert_eq!(chunks.halves(1), LOW);
        assert_eq!(h.open_count(), 1);
        assert_eq!(h.claim(&chunks), Some((1, HIGH)));
        assert_eq!(h.open_count(), 0);
        assert_eq!(h.claim(&chunks), None);
        assert_eq!(h.release(&chunks, 1, LOW), Release::HalfFree);
        assert_eq!(h.claim(&chunks), Some((1, LOW)));
        assert_eq!(h.release(&chunks, 1, HIGH), Release::HalfFree);
        assert_eq!(h.release(&chunks, 1, HIGH), Release::NotInUse);
        assert_eq!(h.release(&chunks, 1, LOW), Release::ChunkFree);
        assert_eq!(chunks.halves(1), 0);
        assert_eq!(h.open_count(), 0);
        assert_eq!(h.release(&chunks, 1, LOW), Release::NotInUse);
        h.check_quiescent(&chunks, 4);
    }

    #[test]
    fn the_lowest_open_chunk_serves_first() {
        let (chunks, h) = (Chunks::new(200), OwnedHalves::new(200));
        let h = &h.halves;
        for c in [150, 70, 5, 2] {
            h.start(&chunks, c);
        }
        assert_eq!(h.claim(&chunks), Some((2, HIGH)));
        assert_eq!(h.claim(&chunks), Some((5, HIGH)));
        // A release below the hint lowers it again.
        assert_eq!(h.release(&chunks, 2, LOW), Release::HalfFree);
        assert_eq!(h.claim(&chunks), Some((2, LOW)));
        assert_eq!(h.claim(&chunks), Some((70, HIGH)));
        assert_eq!(h.claim(&chunks), Some((150, HIGH)));
        assert_eq!(h.claim(&chunks), None);
        assert_eq!(h.release(&chunks, 150, LOW), Release::HalfFree);
        assert_eq!(h.claim(&chunks), Some((150, LOW)));
        h.check_quiescent(&chunks, 200);
    }

    #[test]
    fn stale_bits_are_cleared_by_searches() {
        let (chunks, h) = (Chunks::new(130), OwnedHalves::new(130));
        let h = &h.halves;
        // Published, but the chunk has no free half (or is no half chunk).
        chunks.state[3].store(BOTH, Ordering::Relaxed);
        h.publish(3);
        h.publish(129);
        assert_eq!(h.open_count(), 2);
        assert_eq!(h.claim(&chunks), None);
        assert_eq!(h.open_count(), 0);
        // A chunk that became a half chunk again is served from its state.
        chunks.state[129].store(HIGH, Ordering::Relaxed);
        h.publish(129);
        assert_eq!(h.claim(&chunks), Some((129, LOW)));
        assert_eq!(chunks.halves(129), BOTH);
    }

    /// Threads take halves (opening fresh chunks from a shared pool when
    /// none is free) and release them in random order, their own and other
    /// threads': no half is held twice, every chunk goes back to the pool
    /// exactly when both its halves are free, and at the end every chunk
    /// is free.
    #[test]
    fn concurrent_takes_and_releases_hand_out_each_half_once() {
        const CHUNKS: usize = 96;
        const THREADS: usize = 4;
        const ROUNDS: usize = if cfg!(miri) { 200 } else { 300_000 };
        let chunks = Chunks::new(CHUNKS);
        let owned = OwnedHalves::new(CHUNKS);
        let h = &owned.halves;
        // The fake backend: set while a chunk is claimed from it.
        let backend: Vec<AtomicBool> = (0..CHUNKS).map(|_| AtomicBool::new(false)).collect();
        // Holder of each half (thread + 1; 0 = nobody).
        let holder: Vec<AtomicUsize> = (0..2 * CHUNKS).map(|_| AtomicUsize::new(0)).collect();
        // Halves handed from one thread to another for release.
        let mailbox: Vec<AtomicUsize> = (0..THREADS).map(|_| AtomicUsize::new(0)).collect();
        let slot = |c: usize, half: u64| 2 * c + (half == HIGH) as usize;
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (chunks, backend, holder, mailbox) = (&chunks, &backend, &holder, &mailbox);
                s.spawn(move || {
                    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (t as u64 + 1);
                    let mut next = || {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        rng
                    };
                    let mut held: Vec<(usize, u64)> = Vec::new();
                    let release = |c: usize, half: u64| {
                        assert_eq!(holder[slot(c, half)].swap(0, Ordering::Relaxed), t + 1);
                        match h.release(chunks, c, half) {
                            Release::HalfFree => {}
                            Release::ChunkFree => {
                                assert_eq!(chunks.halves(c), 0);
                                assert!(backend[c].swap(false, Ordering::AcqRel));
                            }
                            Release::NotInUse => panic!("half {c}/{half} was in use"),
                        }
                    };
                    for _ in 0..ROUNDS {
                        let r = next();
                        if held.len() < 8 && r % 3 != 0 {
                            let got = h.claim(chunks).or_else(|| {
                                let c = (0..CHUNKS).find(|&c| {
                                    backend[c]
                                        .compare_exchange(
                                            false,
                                            true,
                                            Ordering::AcqRel,
                                            Ordering::Relaxed,
                                        )
                                        .is_ok()
                                })?;
                                h.start(chunks, c);
                                Some((c, LOW))
                            });
                            if let Some((c, half)) = got {
                                assert!(backend[c].load(Ordering::Acquire));
                                assert_eq!(holder[slot(c, half)].swap(t + 1, Ordering::Relaxed), 0);
                                held.push((c, half));
                            }
                        } else if !held.is_empty() {
                            let (c, half) = held.swap_remove((r >> 8) as usize % held.len());
                            if r & 16 != 0 {
                                // Give it to the next thread to release.
                                holder[slot(c, half)].store(0, Ordering::Relaxed);
                                let packed = slot(c, half) + 1;
                                let peer = &mailbox[(t + 1) % THREADS];
                                if peer
                                    .compare_exchange(
                                        0,
                                        packed,
                                        Ordering::AcqRel,
                                        Ordering::Relaxed,
                                    )
                                    .is_err()
                                {
                                    holder[slot(c, half)].store(t + 1, Ordering::Relaxed);
                                    release(c, half);
                                }
                            } else {
                                release(c, half);
                            }
                        }
                        let mail = mailbox[t].swap(0, Ordering::AcqRel);
                        if mail != 0 {
                            let (c, half) =
                                ((mail - 1) / 2, if (mail - 1) % 2 == 0 { LOW } else { HIGH });
                            holder[slot(c, half)].store(t + 1, Ordering::Relaxed);
                            release(c, half);
                        }
                    }
                    for (c, half) in held {
                        release(c, half);
                    }
                });
            }
        });
        // Mail left after a thread finished.
        for (t, m) in mailbox.iter().enumerate() {
            let mail = m.swap(0, Ordering::AcqRel);
            if mail != 0 {
                let (c, half) = ((mail - 1) / 2, if (mail - 1) % 2 == 0 { LOW } else { HIGH });
                assert_eq!(
                    holder[slot(c, half)].load(Ordering::Relaxed),
                    0,
                    "thread {t}"
                );
                if h.release(&chunks, c, half) == Release::ChunkFree {
                    assert!(backend[c].swap(false, Ordering::AcqRel));
                }
            }
        }
        for (c, held) in backend.iter().enumerate() {
            assert_eq!(chunks.halves(c), 0, "chunk {c}");
            assert!(!held.load(Ordering::Relaxed), "chunk {c}");
        }
        h.check_quiescent(&chunks, CHUNKS);
        // Stale bits (published by a release whose chunk was freed by the
        // other half's release) go at the next search.
        assert_eq!(h.claim(&chunks), None);
        assert_eq!(h.open_count(), 0);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::testing::{Chunks, OwnedHalves};
    use super::*;
    use loom::sync::Arc;

    fn setup() -> Arc<(Chunks, OwnedHalves)> {
        Arc::new((Chunks::new(2), OwnedHalves::new(2)))
    }

    /// A search races the release of a half of a full chunk: whatever the
    /// order, the released half is handed out at most once, and if the
    /// search missed it the chunk is open.
    #[test]
    fn search_races_release_of_a_half() {
        loom::model(|| {
            let both = setup();
            let (chunks, h) = (&both.0, &both.1.halves);
            h.start(chunks, 0);
            assert_eq!(h.claim(chunks), Some((0, HIGH)));
            let b = Arc::clone(&both);
            let releaser = loom::thread::spawn(move || b.1.halves.release(&b.0, 0, LOW));
            let got = h.claim(chunks);
            assert_eq!(releaser.join().unwrap(), Release::HalfFree);
            match got {
                Some((0, LOW)) => assert_eq!(chunks.halves(0), BOTH),
                None => assert_eq!(chunks.halves(0), HIGH),
                other => panic!("took {other:?}"),
            }
            h.check_quiescent(chunks, 2);
        });
    }

    /// The release of the last half in use races a take: either the take
    /// wins the free half (and the release leaves the chunk to it) or the
    /// chunk is freed once and the take finds nothing.
    #[test]
    fn last_release_races_take() {
        loom::model(|| {
            let both = setup();
            let (chunks, h) = (&both.0, &both.1.halves);
            h.start(chunks, 0);
            let b = Arc::clone(&both);
            let taker = loom::thread::spawn(move || b.1.halves.claim(&b.0));
            let released = h.release(chunks, 0, LOW);
            let taken = taker.join().unwrap();
            match (released, taken) {
                (Release::HalfFree, Some((0, HIGH))) => assert_eq!(chunks.halves(0), HIGH),
                (Release::ChunkFree, None) => assert_eq!(chunks.halves(0), 0),
                other => panic!("{other:?}"),
            }
            h.check_quiescent(chunks, 2);
        });
    }

    /// Both halves are released at once: exactly one release frees the
    /// chunk, and a later search cleans any stale bit.
    #[test]
    fn two_last_releases_free_the_chunk_once() {
        loom::model(|| {
            let both = setup();
            let (chunks, h) = (&both.0, &both.1.halves);
            h.start(chunks, 0);
            assert_eq!(h.claim(chunks), Some((0, HIGH)));
            let b = Arc::clone(&both);
            let other = loom::thread::spawn(move || b.1.halves.release(&b.0, 0, HIGH));
            let mine = h.release(chunks, 0, LOW);
            let theirs = other.join().unwrap();
            let frees = [mine, theirs]
                .iter()
                .filter(|r| **r == Release::ChunkFree)
                .count();
            assert_eq!(frees, 1, "{mine:?} {theirs:?}");
            assert_eq!(chunks.halves(0), 0);
            assert_eq!(h.claim(chunks), None);
            assert_eq!(h.open_count(), 0);
        });
    }

    /// A publication races a search that would raise the hint past it:
    /// the search either takes the published half or leaves the hint low
    /// enough for the next search to find it.
    #[test]
    fn publication_is_not_hidden_by_a_raised_hint() {
        loom::model(|| {
            let both = Arc::new((Chunks::new(130), OwnedHalves::new(130)));
            let (chunks, h) = (&both.0, &both.1.halves);
            // Chunk 0 (word 0) has both halves taken; chunk 128 (word 2)
            // has a free half.
            h.start(chunks, 0);
            assert_eq!(h.claim(chunks), Some((0, HIGH)));
            h.start(chunks, 128);
            let b = Arc::clone(&both);
            let releaser = loom::thread::spawn(move || b.1.halves.release(&b.0, 0, LOW));
            let first = h.claim(chunks);
            assert_eq!(releaser.join().unwrap(), Release::HalfFree);
            let second = h.claim(chunks);
            let mut got = [first, second];
            got.sort();
            assert_eq!(got, [Some((0, LOW)), Some((128, HIGH))]);
        });
    }
}
