//! Pagemap: one [`ChunkMeta`] per chunk of the heap, found from any address
//! in the chunk by a subtraction and a shift.
//!
//! A chunk is free, a chunk of a slab (the head, or one pointing back to
//! it), the head of a large object, allocator metadata (the head, or a
//! tail chunk pointing back to it), or a half chunk (two objects of half a
//! chunk, owned by nobody; see the `half` module), whose descriptor word is
//! also its state. The other chunks of a large object stay described as
//! free: every lookup of a large object is by its start, so writing one
//! descriptor per chunk (up to 128 cache lines for a 512 KiB object, at
//! allocation and again at free) would buy nothing but a better message
//! for a misused interior pointer, which `HeapInner::locate` finds instead
//! by looking back for the head. The
//! head entry of a slab doubles as the slab's metadata: its free list, its
//! count of objects in use and its links in the owner's list of slabs of
//! that class. Slab metadata therefore costs nothing inside the slab, and
//! every object in a slab is usable.

use crate::half::{self, HalfStates};
use crate::sync::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

/// "No chunk" in the 32-bit chunk-index links.
pub(crate) const NIL: u32 = u32::MAX;

/// What a chunk is used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    Free = 0,
    Slab = 1,
    Large = 2,
    Tail = 3,
    Meta = 4,
    Half = 5,
}

/// A chunk's descriptor, packed into one word so that any thread can read it
/// with one atomic load: kind (bits 0-7), size class (8-15), owner
/// allocator (16-31), and the run (32-63). Every chunk of a slab is `Slab`
/// with the slab's class and owner, and its run is its distance back to the
/// slab's first chunk (0 for the head), so a free finds its slab and owner
/// in one load. A large object's head holds its chunk count; its other
/// chunks are `Tail`, with their distance back to the head. A half chunk
/// holds the halves in use (`half::LOW`, `half::HIGH` or both) in its run
/// field, and nothing else: no class, no owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Desc(u64);

impl Desc {
    pub(crate) const FREE: Desc = Desc(0);

    #[inline]
    pub(crate) fn new(kind: Kind, class: usize, owner: u16, run: u32) -> Desc {
        debug_assert!(class < 256);
        Desc(kind as u64 | (class as u64) << 8 | (owner as u64) << 16 | (run as u64) << 32)
    }
    #[inline(always)]
    pub(crate) fn kind(self) -> Kind {
        match self.0 as u8 {
            1 => Kind::Slab,
            2 => Kind::Large,
            3 => Kind::Tail,
            4 => Kind::Meta,
            5 => Kind::Half,
            _ => Kind::Free,
        }
    }
    #[inline(always)]
    pub(crate) fn is_slab(self) -> bool {
        self.0 as u8 == Kind::Slab as u8
    }
    #[inline(always)]
    pub(crate) fn class(self) -> usize {
        (self.0 >> 8) as u8 as usize
    }
    #[inline(always)]
    pub(crate) fn owner(self) -> u16 {
        (self.0 >> 16) as u16
    }
    #[inline(always)]
    pub(crate) fn run(self) -> u32 {
        (self.0 >> 32) as u32
    }
    /// The descriptor of a half chunk with halves `used` (1 to 3) in use.
    #[inline]
    pub(crate) fn half(used: u64) -> Desc {
        debug_assert!((1..=half::BOTH).contains(&used));
        Desc(Kind::Half as u64 | used << 32)
    }
    /// The halves in use if this is a half chunk, else 0.
    #[inline]
    pub(crate) fn half_used(self) -> u64 {
        if self.0 as u8 == Kind::Half as u8 {
            self.0 >> 32
        } else {
            0
        }
    }
}

/// An object on a free list: its first word links to the next.
#[repr(C)]
pub(crate) struct FreeObject {
    pub(crate) next: *mut FreeObject,
}

/// Metadata of one chunk.
///
/// Invariants:
/// - `desc` may be read by any thread; it is written only by whoever holds
///   the chunk (the allocator that claimed it from the backend, or the
///   owner of the slab it belongs to), except that a half chunk's `desc` is
///   changed by any thread, only by compare-and-swap (see `half`), and its
///   other fields are unused.
/// - For a slab head, `free`, `used`, `carved`, `next` and `prev` are read
///   and written only by the owning allocator (statistics may read `used`
///   and `carved` racily); objects counted by `used` are handed out,
///   `used + |free| == carved <= capacity`, and `free` links objects inside
///   this slab only.
/// - A slab with an object to give (`free` non-empty or `carved <
///   capacity`) is on its owner's list for its class; see the allocator
///   module for the one exception the other way.
#[repr(C, align(32))]
pub(crate) struct ChunkMeta {
    pub(crate) desc: AtomicU64,
    pub(crate) free: AtomicPtr<FreeObject>,
    pub(crate) used: AtomicU32,
    pub(crate) carved: AtomicU32,
    pub(crate) next: AtomicU32,
    pub(crate) prev: AtomicU32,
}

impl ChunkMeta {
    /// An entry for no chunk at all; bins point at one while empty, so the
    /// fast path finds an empty free list instead of a null pointer.
    pub(crate) const fn empty() -> ChunkMeta {
        ChunkMeta {
            desc: AtomicU64::new(0),
            free: AtomicPtr::new(core::ptr::null_mut()),
            used: AtomicU32::new(0),
            carved: AtomicU32::new(0),
            next: AtomicU32::new(NIL),
            prev: AtomicU32::new(NIL),
        }
    }

    #[inline(always)]
    pub(crate) fn desc(&self) -> Desc {
        // Relaxed: the descriptor of a live object's chunk was written before
        // the object was handed out, and the client's own synchronisation
        // orders that before any free of it.
        Desc(self.desc.load(Ordering::Relaxed))
    }

    #[inline]
    pub(crate) fn set_desc(&self, d: Desc) {
        // Relaxed: see `desc`.
        self.desc.store(d.0, Ordering::Relaxed);
    }
}

/// The table of [`ChunkMeta`], and the geometry of the chunk area it
/// describes.
///
/// Invariant: `entries` points to `chunks` initialised entries that live as
/// long as the heap, and chunk `i` covers
/// `[base + i * chunk_bytes, base + (i + 1) * chunk_bytes)`.
#[derive(Clone, Copy)]
pub(crate) struct Pagemap {
    pub(crate) entries: *const ChunkMeta,
    pub(crate) chunks: usize,
    pub(crate) base: usize,
    pub(crate) chunk_shift: u32,
}

impl Pagemap {
    /// The chunk holding `addr`, if the heap has one.
    #[inline(always)]
    pub(crate) fn index_of(&self, addr: usize) -> Option<usize> {
        let index = addr.wrapping_sub(self.base) >> self.chunk_shift;
        (index < self.chunks).then_some(index)
    }

    /// The entry of chunk `index`.
    #[inline(always)]
    pub(crate) fn entry(&self, index: usize) -> &ChunkMeta {
        debug_assert!(index < self.chunks, "chunk {index} of {}", self.chunks);
        // SAFETY: `index < chunks` (checked by every caller, re-checked in
        // debug builds), and the type invariant says those entries are valid
        // for the heap's lifetime.
        unsafe { &*self.entries.add(index) }
    }

    /// First address of chunk `index`.
    #[inline(always)]
    pub(crate) fn chunk_addr(&self, index: usize) -> usize {
        self.base + (index << self.chunk_shift)
    }

    /// Marks large object `[head, head + run)`: its head only (see the
    /// module documentation).
    pub(crate) fn set_large(&self, head: usize, run: usize, owner: u16) {
        self.entry(head)
            .set_desc(Desc::new(Kind::Large, 0, owner, run as u32));
    }

    /// Marks `[head, head + run)` as one allocation described by `head_desc`.
    pub(crate) fn set_run(&self, head: usize, run: usize, head_desc: Desc) {
        for i in 1..run {
            self.entry(head + i)
                .set_desc(Desc::new(Kind::Tail, 0, 0, i as u32));
        }
        self.entry(head).set_desc(head_desc);
    }

    /// Marks `[head, head + run)` as a slab of `class` owned by `owner`.
    pub(crate) fn set_slab(&self, head: usize, run: usize, class: usize, owner: u16) {
        for i in (0..run).rev() {
            self.entry(head + i)
                .set_desc(Desc::new(Kind::Slab, class, owner, i as u32));
        }
    }

    /// Debug check: every chunk of `[head, head + run)` is marked free, as
    /// chunks just claimed from the backend must be.
    pub(crate) fn debug_assert_free(&self, head: usize, run: usize) {
        if cfg!(debug_assertions) {
            for i in head..head + run {
                let d = self.entry(i).desc();
                assert!(d == Desc::FREE, "chunk {i} claimed from the backend is still described as {:?} (run {head}+{run})", d.kind());
            }
        }
    }

    /// Marks `[head, head + run)` free.
    pub(crate) fn clear_run(&self, head: usize, run: usize) {
        for i in 0..run {
            self.entry(head + i).set_desc(Desc::FREE);
        }
    }
}

/// The pagemap's descriptor words are the half chunks' states.
impl HalfStates for Pagemap {
    #[inline]
    fn halves(&self, chunk: usize) -> u64 {
        // Acquire: pairs with the CAS in `replace` and the store in `start`
        // (the orderings `HalfStates` requires).
        Desc(self.entry(chunk).desc.load(Ordering::Acquire)).half_used()
    }

    #[inline]
    fn replace(&self, chunk: usize, old: u64, new: u64) -> bool {
        let new = if new == 0 {
            Desc::FREE
        } else {
            Desc::half(new)
        };
        // AcqRel: pairs with itself and with the loads above: a release of
        // a half happens before the take that hands it out again, so the old
        // holder's writes to it come before the new holder's.
        self.entry(chunk)
            .desc
            .compare_exchange(
                Desc::half(old).0,
                new.0,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    #[inline]
    fn start(&self, chunk: usize) {
        // Release: pairs with the loads and CASes above, by threads that
        // find the chunk through a hint.
        self.entry(chunk)
            .desc
            .store(Desc::half(half::LOW).0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    #[test]
    fn desc_packs_fields() {
        let d = Desc::new(Kind::Slab, 79, 0xBEEF, 0x1234_5678);
        assert_eq!(d.kind(), Kind::Slab);
        assert!(d.is_slab());
        assert_eq!(d.class(), 79);
        assert_eq!(d.owner(), 0xBEEF);
        assert_eq!(d.run(), 0x1234_5678);
        assert_eq!(Desc::FREE.kind(), Kind::Free);
        assert_eq!(core::mem::size_of::<ChunkMeta>(), 32);
    }

    #[test]
    fn lookup_and_runs() {
        let entries: Vec<ChunkMeta> = (0..8).map(|_| ChunkMeta::empty()).collect();
        let map = Pagemap {
            entries: entries.as_ptr(),
            chunks: 8,
            base: 0x10_0000,
            chunk_shift: 12,
        };
        assert_eq!(map.index_of(0x10_0000), Some(0));
        assert_eq!(map.index_of(0x10_1fff), Some(1));
        assert_eq!(map.index_of(0x10_8000), None);
        assert_eq!(map.index_of(0x0f_ffff), None);
        assert_eq!(map.chunk_addr(3), 0x10_3000);
        map.set_slab(5, 2, 7, 9);
        assert!(map.entry(6).desc().is_slab());
        assert_eq!(map.entry(6).desc().owner(), 9);
        assert_eq!(
            (map.entry(6).desc().class(), map.entry(6).desc().run()),
            (7, 1)
        );
        assert_eq!(map.entry(5).desc().run(), 0);
        map.clear_run(5, 2);
        map.set_run(2, 3, Desc::new(Kind::Large, 0, 1, 3));
        assert_eq!(map.entry(2).desc().kind(), Kind::Large);
        assert_eq!(map.entry(4).desc().kind(), Kind::Tail);
        assert_eq!(map.entry(4).desc().run(), 2);
        map.clear_run(2, 3);
        assert!((0..8).all(|i| map.entry(i).desc() == Desc::FREE));
    }
}
