//! Allocator: the per-thread front end. It owns slabs, allocates from them
//! without atomics, frees its own objects onto their slabs, and sends other
//! allocators' objects home as batched messages.
//!
//! ```text
//! alloc ── fast: class table → bin's current slab → pop its free list
//!   └─ alloc_slow (cold) ─┬─ pop a kept foreign object, else take a depot list
//!                         ├─ drain_inbox (frees sent to us)
//!                         ├─ alloc_from_class ─┬─ pop a kept foreign object (see below)
//!                         │                    ├─ pop / carve / drop a full slab from the bin
//!                         │                    └─ new_slab ── claim_run (cache, else backend)
//!                         ├─ alloc_half ── halves.claim, else claim_run(1) + halves.start
//!                         ├─ alloc_large ── claim_run (any length, aligned)
//!                         └─ on failure: find_room (reclaim, retry; then
//!                            yield, reclaim, retry while another thread
//!                            may free, bounded), else null
//! dealloc ── fast: pagemap → slab head → slot check ─┬─ owner == us: push on slab
//!   │                                                └─ else dealloc_remote
//!   ├─ slab_changed (cold): full → partial (relink), empty → back to backend
//!   ├─ dealloc_remote: keep it to hand out again (foreign; to make room,
//!   │    another class's kept list may go to the depot), else the
//!   │    class's kept list with it to the heap's depot, else
//!   │    outgoing.push → full batch: post to owner's inbox
//!   └─ dealloc_slow (cold): large → give_run (cache, else backend);
//!        half → halves.release (both halves free: give_run); else fatal
//! ```
//!
//! Invariants of [`Allocator`] (beyond those of each slab, see
//! [`ChunkMeta`]):
//! - `bins[c]` lists the slabs of class `c` owned by this allocator that
//!   have an object to give, linked through `next`/`prev` (NIL at the ends,
//!   and in both fields of an unlisted slab), from `head` to `tail`. The
//!   head may also be full: the fast path emptied it, and the next slow
//!   path unlinks it. `current` is `head`'s entry, or the heap's empty
//!   sentinel when the list is empty.
//! - A listed slab with no object in use is its bin's head or alone in its
//!   bin (an empty slab is kept only while it is the next to serve its
//!   class), and its class's bit in `empty_mask` is set.
//! - `foreign[c]` lists objects of class `c` freed through this allocator
//!   (or taken from the depot) and kept to be handed out again: objects of
//!   other allocators' slabs, or, from the depot, of ours (their slabs
//!   still count them as in use); `foreign_bytes` is their total
//!   size, at most `foreign_limit` (a list taken from the depot may pass
//!   it until it is handed out), and `foreign_count[c]` the length of
//!   `foreign[c]`. While `foreign[c]` is not empty,
//!   `bins[c].current` is the sentinel, so allocations of class `c` take
//!   the slow path, which hands these out first.
//! - `shared.counters.live` is the bytes allocated minus bytes freed
//!   through this allocator (it can be negative); `published_live` is the
//!   part of it already added to the heap's published total.

use core::cell::UnsafeCell;
use core::ptr::null_mut;

use crate::backend::Run;
use crate::depot::DEPOT_LISTS;
use crate::half::{Release, LOW};
use crate::heap::{hold_idle, HeapInner, Located};
use crate::pagemap::{ChunkMeta, Desc, FreeObject, Pagemap, NIL};
use crate::platform::fatal;
use crate::remote::{Batch, Inbox, Outgoing};
use crate::run_cache::RunCache;
use crate::size_class::{
    class_of_computed, class_size, ClassInfo, LOOKUP_LEN, LOOKUP_LIMIT, NUM_CLASSES,
};
use crate::sync::{AtomicBool, AtomicIsize, AtomicU32, AtomicUsize, CachePadded, Ordering};

/// Alignment every object has without asking.
pub(crate) const MIN_ALIGN: usize = 16;
/// Most objects carved onto a free list at once.
const CARVE_OBJECTS: usize = 64;
/// Bytes of a slab carved at once (so fresh OS pages are touched lazily).
const CARVE_BYTES: usize = 16 * 1024;

/// The part of an allocator that other threads touch.
pub(crate) struct Shared {
    /// Frees sent to this allocator by others.
    pub(crate) inbox: CachePadded<Inbox>,
    /// Link in the pool's idle stack (`id + 1` of the next, 0 = none).
    pub(crate) next_idle: AtomicU32,
    /// Held by the thread attached to this allocator, or by a reclaimer.
    pub(crate) busy: AtomicBool,
    /// Counters the owner writes and statistics read.
    pub(crate) counters: CachePadded<Counters>,
    /// Free runs kept for this allocator's next requests; the holder fills
    /// it, anyone may empty it (see `run_cache`).
    pub(crate) runs: CachePadded<RunCache>,
}

/// Owner-written counters (Relaxed load and store, never read-modify-write).
pub(crate) struct Counters {
    /// Bytes allocated minus bytes freed through this allocator.
    pub(crate) live: AtomicIsize,
    /// Objects waiting in outgoing batches.
    pub(crate) outgoing: AtomicUsize,
    /// Bytes of other allocators' objects kept to hand out again.
    pub(crate) foreign: AtomicUsize,
}

/// One allocator as it lives in heap metadata: the shared part, and the
/// owner-only part behind an `UnsafeCell`.
///
/// Invariant: `local` is accessed only by the holder of `shared.busy`.
#[repr(C)]
pub(crate) struct AllocatorSlot {
    pub(crate) shared: Shared,
    pub(crate) local: UnsafeCell<Allocator>,
}

// SAFETY: `shared` is atomics only; `local` is reached only by the thread
// holding `busy` (the type invariant), which the Acquire/Release on `busy`
// orders between holders.
unsafe impl Sync for AllocatorSlot {}

/// The slabs of one class this allocator owns that have free objects, a
/// list through their pagemap entries (`head`, `tail`: chunk indices, `NIL`
/// when empty), and `current`: the pagemap entry of `head`, or the heap's
/// `empty_slab` sentinel when the list is empty or kept foreign objects
/// must be handed out first (see the module documentation). Both point
/// into the heap's metadata, which outlives the allocator.
#[derive(Clone, Copy)]
struct Bin {
    current: *const ChunkMeta,
    head: u32,
    tail: u32,
}

/// A checked object slot of a slab (see [`Allocator::slab_slot`]).
#[derive(Clone, Copy)]
struct SlabSlot {
    /// The slab's head chunk.
    head: usize,
    class: usize,
    /// The allocator that owns the slab.
    owner: u16,
    /// The class's object size.
    object_bytes: usize,
}

/// The owner-only state of an allocator. See the module documentation for
/// its invariants; besides, `heap` points to the heap this allocator lives
/// in (in its metadata), and `shared` to the shared half of its own slot
/// there, so both outlive it.
pub(crate) struct Allocator {
    bins: [Bin; NUM_CLASSES],
    /// A copy of the heap's `ClassTable::lookup` (sizes up to 1 KiB), next
    /// to the bins the fast path reads anyway.
    lookup: [u8; LOOKUP_LEN],
    heap: *const HeapInner,
    pagemap: Pagemap,
    small_limit: usize,
    /// `HeapInner::half_bytes`: requests above `small_limit` up to this
    /// take a half chunk (0: none do).
    half_limit: usize,
    chunk_shift: u32,
    id: u16,
    shared: *const Shared,
    published_live: isize,
    empty_mask: [u64; 2],
    outgoing: Outgoing,
    /// Most chunks `Shared::runs` may hold (0: the cache is off).
    cache_limit_chunks: usize,
    /// Other allocators' objects freed through us, by class, to hand out
    /// again (see the module documentation).
    foreign: [*mut FreeObject; NUM_CLASSES],
    /// Objects on each `foreign` list.
    foreign_count: [u32; NUM_CLASSES],
    foreign_bytes: usize,
    /// Most bytes of kept objects: set at creation, attach, detach and
    /// every new slab by [`HeapInner::foreign_limit_now`] (less while the
    /// heap is nearly full).
    foreign_limit: usize,
    /// Most bytes the heap's depot may hold when we add to it (0: the
    /// depot is off).
    depot_limit: usize,
    /// Most bytes of one class we keep before the list goes to the depot:
    /// a share of the depot (`depot_limit / DEPOT_LISTS`), so that a list
    /// fits an empty depot whatever `foreign_limit` is.
    list_limit: usize,
    /// Where `deposit_another_list` looks first.
    deposit_cursor: usize,
    /// The head of the list we last put in the depot: freeing it again
    /// while the list is still there is the double free that keeping it
    /// would have caught.
    last_deposit: *mut FreeObject,
    /// Attached by `HeapInner::attach_for_thread`, so counted in the
    /// pool's kept allocators until its detach.
    pub(crate) kept: bool,
}

/// Change of an allocator's live bytes that its slow path publishes to the
/// heap's total (detach and reclaim publish any change).
const PUBLISH_BYTES: usize = 64 * 1024;

/// Runs of at least this many chunks are placed from the top of the region.
const TOP_RUN_CHUNKS: usize = 16;

/// Hands a batch of freed objects to their owner. If nobody is attached to
/// the owner, the sender takes the owner's `busy` flag for a moment and
/// frees them itself; otherwise the batch is posted to the owner's inbox
/// with one CAS. Never waits. Either way it then looks once more
/// (`HeapInner::drain_if_idle`): an owner that was detaching when the
/// batch was posted, or a helper that held it, may have let go since, and
/// an idle allocator's inbox is drained by whoever sees it.
fn deliver(heap: &HeapInner, batch: Batch) {
    let target = heap.pool.slot(batch.owner as usize);
    // An owner that looks idle is held inside the fork gate (while a fork
    // is prepared the batch is posted instead); an attached one, the common
    // case, costs no write to the gate's shared word.
    // Relaxed: a hint; `hold_idle`'s compare-and-swap decides.
    let idle = !target.shared.busy.load(Ordering::Relaxed);
    let inside = if idle {
        heap.fork_gate.try_enter()
    } else {
        None
    };
    // An idle owner's batch is freed by us, as its helper.
    let freed = inside.is_some() && hold_idle(target, |owner| owner.accept(batch.first));
    if !freed {
        // SAFETY: a batch is a list of `count` objects given up by clients,
        // linked by `Outgoing::push`, and is handed over exactly once.
        unsafe {
            target
                .shared
                .inbox
                .post(batch.first, batch.last, batch.count as usize)
        };
    }
    drop(inside);
    heap.drain_if_idle(target);
}

/// What a reclaim sends home of the objects allocators and the depot keep
/// for reuse (other allocators' objects, freed through them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reclaim {
    /// All of them (`trim`, `Heap::reclaim`): nothing stays kept.
    All,
    /// Those whose owner nobody is attached to, or is `reclaimer` (the
    /// allocator whose allocation is about to fail): such an owner frees
    /// them at once, and its slab may empty. An attached
    /// owner, with more threads than cores usually a thread descheduled in
    /// the middle of its work, would leave them in its inbox until its next
    /// timeslice, so they stay where any allocation of their class takes
    /// them. Sending them too made out-of-memory failures more frequent: 10 s
    /// runs at 38 MiB, six seeds, 542, 1,106, 566, 84, 81 and 129 failures
    /// against 445, 302, 192, 31, 63 and 54 keeping all kept objects.
    IdleOwners {
        /// The allocator reclaiming, if any.
        reclaimer: Option<u16>,
    },
}

impl Reclaim {
    /// Whether an object of `owner` goes home; `idle` says whether nobody
    /// is attached to `owner` (a hint).
    pub(crate) fn sends(self, owner: u16, idle: impl FnOnce() -> bool) -> bool {
        match self {
            Reclaim::All => true,
            Reclaim::IdleOwners { reclaimer } => reclaimer == Some(owner) || idle(),
        }
    }
}

/// A slab object freed while free (see `Allocator::free_to_slab`).
#[cold]
#[inline(never)]
fn double_free(obj: *mut FreeObject) -> ! {
    fatal("double free detected (object already free)", obj as usize)
}

/// The head chunk of the run that tail chunk `index` belongs to.
#[inline(always)]
pub(crate) fn tail_head(index: usize, desc: Desc, addr: usize) -> usize {
    match index.checked_sub(desc.run() as usize) {
        Some(head) => head,
        None => fatal("heap metadata corrupted: tail chunk without a head", addr),
    }
}

impl Allocator {
    /// A fresh allocator with no slabs.
    pub(crate) fn new(heap: &HeapInner, id: u16, shared: *const Shared) -> Allocator {
        let sentinel: *const ChunkMeta = &heap.empty_slab;
        Allocator {
            bins: [Bin {
                current: sentinel,
                head: NIL,
                tail: NIL,
            }; NUM_CLASSES],
            lookup: heap.classes.lookup,
            heap,
            pagemap: heap.pagemap,
            small_limit: heap.classes.small_limit_bytes,
            half_limit: heap.half_bytes,
            chunk_shift: heap.pagemap.chunk_shift,
            id,
            shared,
            published_live: 0,
            empty_mask: [0; 2],
            outgoing: Outgoing::new(),
            cache_limit_chunks: if heap.region_bytes() >= heap.config.chunk_cache_min_heap_bytes {
                heap.config.chunk_cache_bytes >> heap.pagemap.chunk_shift
            } else {
                0
            },
            foreign: [null_mut(); NUM_CLASSES],
            foreign_count: [0; NUM_CLASSES],
            foreign_bytes: 0,
            foreign_limit: heap.foreign_limit_now(),
            depot_limit: heap.config.depot_bytes,
            list_limit: if heap.config.depot_bytes == 0 {
                usize::MAX
            } else {
                heap.config.depot_bytes / DEPOT_LISTS
            },
            last_deposit: null_mut(),
            kept: false,
            deposit_cursor: 0,
        }
    }

    /// This allocator's id in the pool.
    pub(crate) fn id(&self) -> u16 {
        self.id
    }

    #[inline(always)]
    fn heap(&self) -> &HeapInner {
        // SAFETY: an allocator lives in its heap's metadata, so the heap
        // outlives it.
        unsafe { &*self.heap }
    }

    #[inline(always)]
    fn shared(&self) -> &Shared {
        // SAFETY: `shared` is the shared half of this allocator's own slot,
        // which lives as long as the heap.
        unsafe { &*self.shared }
    }

    #[inline(always)]
    fn info(&self, class: usize) -> &ClassInfo {
        debug_assert!(class < NUM_CLASSES);
        // SAFETY: classes come from `class_of` or from slab descriptors,
        // which are written only with classes below NUM_CLASSES.
        unsafe { self.heap().classes.info.get_unchecked(class) }
    }

    /// The class this heap serves `size` (at most `small_limit`) from.
    #[inline(always)]
    fn class_of(&self, size: usize) -> usize {
        if size <= LOOKUP_LIMIT {
            // SAFETY: `(size + 15) >> 4 <= LOOKUP_LIMIT / 16 < LOOKUP_LEN`.
            unsafe { *self.lookup.get_unchecked((size + 15) >> 4) as usize }
        } else {
            let class = class_of_computed(size);
            // SAFETY: `size <= small_limit <= MAX_CLASS_BYTES`, so `class <
            // NUM_CLASSES`, the length of `serves`.
            unsafe { *self.heap().classes.serves.get_unchecked(class) as usize }
        }
    }

    #[inline(always)]
    fn count(&self, bytes: isize) {
        let c = &self.shared().counters;
        // Relaxed load and store: only the owner writes this counter.
        c.live
            .store(c.live.load(Ordering::Relaxed) + bytes, Ordering::Relaxed);
    }

    // ----- allocation -------------------------------------------------

    /// Allocates `size` bytes aligned to `align` (a power of two); null when
    /// the heap cannot serve it. With `USABLE`, the live-bytes counter
    /// counts the usable size instead of `size` (for callers that free
    /// without a size).
    #[inline(always)]
    pub(crate) fn alloc<const USABLE: bool>(&mut self, size: usize, align: usize) -> *mut u8 {
        if size <= self.small_limit && align <= MIN_ALIGN {
            let class = self.class_of(size);
            // `class < NUM_CLASSES` always (lookup tables hold classes); a
            // checked read that falls to the slow path keeps a panic off the
            // allocation path at the same cost as an index.
            let current = match self.bins.get(class) {
                Some(bin) => bin.current,
                None => return self.alloc_slow::<USABLE>(size, align),
            };
            // SAFETY: `current` is the heap's sentinel or the entry of a
            // slab head in our pagemap (bin invariant); both outlive us.
            let slab = unsafe { &*current };
            let obj = slab.free.load(Ordering::Relaxed);
            if !obj.is_null() {
                // SAFETY: `obj` is on this slab's free list, so it is a free
                // object of the slab whose first word is its link.
                let next = unsafe { (*obj).next };
                slab.free.store(next, Ordering::Relaxed);
                slab.used
                    .store(slab.used.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                let bytes = if USABLE {
                    self.info(class).object_bytes as usize
                } else {
                    size
                };
                self.count(bytes as isize);
                return obj.cast();
            }
        }
        self.alloc_slow::<USABLE>(size, align)
    }

    #[cold]
    #[inline(never)]
    fn alloc_slow<const USABLE: bool>(&mut self, size: usize, align: usize) -> *mut u8 {
        if size <= self.small_limit && align <= MIN_ALIGN {
            // A kept foreign object first: no publishing, no inbox check
            // (kept objects can go round one allocator many times).
            let class = self.class_of(size);
            let mut obj = self.pop_foreign(class);
            if obj.is_null() && self.take_from_depot(class) {
                obj = self.pop_foreign(class);
            }
            if !obj.is_null() {
                self.count(if USABLE { class_size(class) } else { size } as isize);
                return obj.cast();
            }
        }
        self.upkeep();
        let (ptr, usable) = match self.class_for(size, align) {
            Some(class) => (self.alloc_from_class(class), class_size(class)),
            None if self.fits_half(size, align) => (self.alloc_half(), self.half_limit),
            None => {
                let (ptr, usable, _) = self.alloc_large(size, align);
                (ptr, usable)
            }
        };
        if !ptr.is_null() {
            self.count(if USABLE { usable } else { size } as isize);
        }
        // After counting, so that one large block publishes at once.
        self.publish_live_if_due();
        ptr
    }

    /// [`Allocator::alloc`] with the first `size` bytes zeroed. A run of
    /// chunks that reads zero already (never used since the OS zeroed it)
    /// is not written, so a large zeroed block stays uncommitted until
    /// used, as with `calloc` of fresh memory elsewhere.
    pub(crate) fn alloc_zeroed<const USABLE: bool>(
        &mut self,
        size: usize,
        align: usize,
    ) -> *mut u8 {
        let small = size <= self.small_limit && align <= MIN_ALIGN;
        let (ptr, zeroed) =
            if small || self.class_for(size, align).is_some() || self.fits_half(size, align) {
                (self.alloc::<USABLE>(size, align), false)
            } else {
                self.upkeep();
                let (ptr, usable, zeroed) = self.alloc_large(size, align);
                if !ptr.is_null() {
                    self.count(if USABLE { usable } else { size } as isize);
                }
                self.publish_live_if_due();
                (ptr, zeroed)
            };
        if !ptr.is_null() && !zeroed {
            // SAFETY: `ptr` is a fresh block of at least `size` bytes.
            unsafe { core::ptr::write_bytes(ptr, 0, size) };
        }
        ptr
    }

    /// What every slow allocation does first: take in the frees other
    /// threads sent. (It publishes the live-bytes change after counting
    /// the allocation.)
    #[inline]
    fn upkeep(&mut self) {
        if !self.shared().inbox.is_empty() {
            self.drain_inbox();
        }
    }

    /// The class serving `size` at `align`, or `None` for a chunk run.
    fn class_for(&self, size: usize, align: usize) -> Option<usize> {
        if size > self.small_limit || align > (1 << self.chunk_shift) {
            return None;
        }
        let classes = &self.heap().classes;
        let mut class = self.class_of(size.max(align).min(self.small_limit));
        // Slabs start chunk-aligned, so a class whose size is a multiple of
        // `align` gives aligned objects; powers of two are served classes.
        while class <= classes.max_small {
            if classes.serves[class] as usize == class && class_size(class) % align == 0 {
                return Some(class);
            }
            class += 1;
        }
        None
    }

    /// Whether a request no class serves takes a half chunk.
    #[inline]
    fn fits_half(&self, size: usize, align: usize) -> bool {
        size <= self.half_limit && align <= self.half_limit
    }

    /// Takes a half chunk: a free half of an open chunk, else the lower
    /// half of a fresh chunk (whose upper half is opened to everybody).
    fn alloc_half(&mut self) -> *mut u8 {
        let pagemap = self.pagemap;
        if let Some((index, half)) = self.heap().halves.claim(&pagemap) {
            return self.half_addr(index, half);
        }
        let found = self.claim_run(1, 0).map(Err).or_else(|| {
            // A half another thread opened meanwhile serves as well.
            self.find_room(|a| match a.heap().halves.claim(&pagemap) {
                Some(half) => Some(Ok(half)),
                None => a.claim_run(1, 0).map(Err),
            })
        });
        let index = match found {
            Some(Ok((index, half))) => return self.half_addr(index, half),
            Some(Err(index)) => index,
            None => return null_mut(),
        };
        self.pagemap.debug_assert_free(index, 1);
        self.heap().halves.start(&pagemap, index);
        self.half_addr(index, LOW)
    }

    #[inline]
    fn half_addr(&self, index: usize, half: u64) -> *mut u8 {
        let offset = if half == LOW { 0 } else { self.half_limit };
        (self.pagemap.chunk_addr(index) + offset) as *mut u8
    }

    /// Takes a kept foreign object of `class`, or null.
    #[inline(always)]
    fn pop_foreign(&mut self, class: usize) -> *mut FreeObject {
        let obj = self.foreign[class];
        if !obj.is_null() {
            // SAFETY: `obj` is on our foreign list of this class: a free
            // object of another allocator's slab, whose first word is its
            // link. Its slab counts it as in use, so it stays in use.
            self.foreign[class] = unsafe { (*obj).next };
            // Saturating: a double free could make the list longer than
            // its count; never a panic on the allocation path.
            self.foreign_count[class] = self.foreign_count[class].saturating_sub(1);
            self.set_foreign_bytes(self.foreign_bytes.saturating_sub(class_size(class)));
            if self.foreign[class].is_null() {
                // Back to the fast path.
                self.set_head(class, self.bins[class].head);
            }
        }
        obj
    }

    fn alloc_from_class(&mut self, class: usize) -> *mut u8 {
        let obj = self.pop_foreign(class);
        if !obj.is_null() {
            return obj.cast();
        }
        loop {
            let head = self.bins[class].head;
            if head != NIL {
                let index = head as usize;
                let meta = self.pagemap.entry(index);
                let obj = meta.free.load(Ordering::Relaxed);
                if !obj.is_null() {
                    // SAFETY: `obj` is on this slab's free list.
                    meta.free.store(unsafe { (*obj).next }, Ordering::Relaxed);
                    meta.used
                        .store(meta.used.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                    return obj.cast();
                }
                let info = *self.info(class);
                if meta.carved.load(Ordering::Relaxed) < info.capacity {
                    self.carve(index, &info);
                } else {
                    // Full: it leaves the bin until a free makes room.
                    self.unlink(class, index);
                }
                continue;
            }
            if self.new_slab(class) {
                continue;
            }
            // Frees a reclaim drains from our inbox may put room back in
            // the bin before a fresh slab can be had.
            let room = |a: &mut Self| (a.bin_has_room(class) || a.new_slab(class)).then_some(());
            if self.find_room(room).is_none() {
                return null_mut();
            }
        }
    }

    /// What an allocation that found no room does before it returns null:
    /// reclaims what idle allocators hold and `retry`s; then, while
    /// another thread is attached and not itself waiting (it may free what
    /// is needed), gives the processor away, reclaims again and retries,
    /// for up to `Config::out_of_memory_wait_ms`. Returns what a retry
    /// found, or `None` (the caller returns null).
    ///
    /// Near the top of a full region most such failures are momentary:
    /// the room is held by threads descheduled in the middle of their
    /// work, as objects they will free or frees waiting in inboxes.
    #[cold]
    #[inline(never)]
    fn find_room<T>(&mut self, mut retry: impl FnMut(&mut Self) -> Option<T>) -> Option<T> {
        self.reclaim_for_room();
        if let Some(found) = retry(self) {
            return Some(found);
        }
        // SAFETY: an allocator lives in its heap's metadata, so the heap
        // outlives it (as in `heap`); this reference is not tied to a
        // borrow of `self`, which the attempts below borrow mutably.
        let heap: &HeapInner = unsafe { &*self.heap };
        heap.wait_for_room(true, || {
            self.reclaim_for_room();
            retry(self)
        })
    }

    /// The reclaim of an allocation that found no room: what idle owners
    /// and this allocator can free now (see [`Reclaim::IdleOwners`]).
    fn reclaim_for_room(&mut self) {
        self.reclaim_heap(Reclaim::IdleOwners {
            reclaimer: Some(self.id),
        });
    }

    /// Whether the loop of [`Allocator::alloc_from_class`] finds an object
    /// in `class`'s bin: its head slab has a free or uncarved slot, or
    /// another slab follows it (only the head of a bin may be full).
    fn bin_has_room(&self, class: usize) -> bool {
        let head = self.bins[class].head;
        if head == NIL {
            return false;
        }
        let meta = self.pagemap.entry(head as usize);
        !meta.free.load(Ordering::Relaxed).is_null()
            || meta.carved.load(Ordering::Relaxed) < self.info(class).capacity
            || meta.next.load(Ordering::Relaxed) != NIL
    }

    /// Puts the next objects of slab `index` that were never handed out on
    /// its (empty) free list.
    fn carve(&mut self, index: usize, info: &ClassInfo) {
        let meta = self.pagemap.entry(index);
        debug_assert!(meta.free.load(Ordering::Relaxed).is_null());
        let size = info.object_bytes as usize;
        let start = meta.carved.load(Ordering::Relaxed) as usize;
        let batch = (CARVE_BYTES / size).clamp(1, CARVE_OBJECTS);
        let end = (start + batch).min(info.capacity as usize);
        let base = self.pagemap.chunk_addr(index);
        let mut list: *mut FreeObject = null_mut();
        for i in (start..end).rev() {
            let obj = (base + i * size) as *mut FreeObject;
            // SAFETY: slot `i < capacity` lies inside this slab's chunks,
            // which we own, and was never handed out.
            unsafe { obj.write(FreeObject { next: list }) };
            list = obj;
        }
        meta.free.store(list, Ordering::Relaxed);
        meta.carved.store(end as u32, Ordering::Relaxed);
    }

    /// Takes a fresh slab for `class` from the backend and lists it first.
    ///
    /// First the bound on kept objects follows the room left, as at attach
    /// and detach: threads that keep their allocator (`SnugAlloc`, the C
    /// and Open Enclave libraries) pass neither for as long as they run.
    /// Our kept list of `class` is empty here (the caller handed kept
    /// objects out first), so shedding leaves this class's bin alone.
    fn new_slab(&mut self, class: usize) -> bool {
        self.follow_room();
        let info = *self.info(class);
        let chunks = info.slab_chunks as usize;
        let Some(index) = self.claim_run(chunks, 0) else {
            return false;
        };
        self.pagemap.debug_assert_free(index, chunks);
        let meta = self.pagemap.entry(index);
        meta.free.store(null_mut(), Ordering::Relaxed);
        meta.used.store(0, Ordering::Relaxed);
        meta.carved.store(0, Ordering::Relaxed);
        self.pagemap.set_slab(index, chunks, class, self.id);
        self.push_front(class, index);
        self.carve(index, &info);
        true
    }

    /// Allocates a run of whole chunks; returns it, its usable size, and
    /// whether it reads zero.
    fn alloc_large(&mut self, size: usize, align: usize) -> (*mut u8, usize, bool) {
        let shift = self.chunk_shift;
        let chunks = size.max(1).div_ceil(1 << shift);
        if chunks > self.pagemap.chunks {
            return (null_mut(), 0, false);
        }
        let align = if align > (1 << shift) { align } else { 0 };
        let found = self
            .claim_run_zeroed(chunks, align)
            .or_else(|| self.find_room(|a| a.claim_run_zeroed(chunks, align)));
        let Some(Run { start, zeroed }) = found else {
            return (null_mut(), 0, false);
        };
        self.pagemap.debug_assert_free(start, chunks);
        self.pagemap.set_large(start, chunks, self.id);
        (
            self.pagemap.chunk_addr(start) as *mut u8,
            chunks << shift,
            zeroed,
        )
    }

    // ----- deallocation -----------------------------------------------

    /// The slab object that starts at `addr`, if the pagemap says `addr` is
    /// in a slab (anyone's) and passes the slot check; `None` for anything
    /// else (large objects, half chunks, misuse), which the callers' slow
    /// paths take to `locate`.
    #[inline(always)]
    fn slab_slot(&self, addr: usize) -> Option<SlabSlot> {
        let index = self.pagemap.index_of(addr)?;
        let desc = self.pagemap.entry(index).desc();
        if !desc.is_slab() {
            return None;
        }
        let head = index - desc.run() as usize;
        let class = desc.class();
        let info = self.info(class);
        let offset = addr - self.pagemap.chunk_addr(head);
        (offset < info.span_bytes as usize && info.is_object_start(offset)).then_some(SlabSlot {
            head,
            class,
            owner: desc.owner(),
            object_bytes: info.object_bytes as usize,
        })
    }

    /// Frees `ptr`, allocated from this heap with `size` (or, with
    /// `USABLE`, with any size: the usable size is uncounted).
    ///
    /// # Safety
    /// `ptr` must be a live allocation of this heap, not used afterwards;
    /// without `USABLE`, `size` must be the size it was allocated with.
    /// Pointers the heap does not own, or that are not the start of an
    /// object, are reported as fatal errors.
    #[inline(always)]
    pub(crate) unsafe fn dealloc<const USABLE: bool>(&mut self, ptr: *mut u8, size: usize) {
        // An object of a slab, ours or another allocator's.
        if let Some(slot) = self.slab_slot(ptr as usize) {
            let bytes = if USABLE { slot.object_bytes } else { size };
            self.count(-(bytes as isize));
            if slot.owner == self.id {
                // SAFETY: `ptr` is an object slot of our slab `slot.head`
                // (checked by `slab_slot`), and the caller gives it up.
                return unsafe { self.free_to_slab(slot.head, slot.class, ptr.cast()) };
            }
            return self.dealloc_remote(slot.owner, slot.class, ptr.cast());
        }
        // SAFETY: the caller's contract.
        unsafe { self.dealloc_slow::<USABLE>(ptr, size) }
    }

    /// Frees what the fast path does not: large objects, half chunks, and
    /// misuse (fatal). Every slab object passes the fast path's checks, so the
    /// slab arm is only the general case of `locate`, kept for safety.
    ///
    /// # Safety
    /// As for [`Allocator::dealloc`].
    #[cold]
    #[inline(never)]
    unsafe fn dealloc_slow<const USABLE: bool>(&mut self, ptr: *mut u8, size: usize) {
        match self.heap().locate(ptr as usize, "free") {
            Located::Slab { head, class, owner } => {
                let bytes = if USABLE { class_size(class) } else { size };
                self.count(-(bytes as isize));
                if owner == self.id {
                    // SAFETY: `locate` checked the slot; the slab is ours.
                    unsafe { self.free_to_slab(head, class, ptr.cast()) }
                } else {
                    self.dealloc_remote(owner, class, ptr.cast());
                }
            }
            Located::Large { index, chunks } => {
                let bytes = if USABLE {
                    chunks << self.chunk_shift
                } else {
                    size
                };
                self.count(-(bytes as isize));
                // The head is the only chunk described (`Pagemap::set_large`).
                self.pagemap.clear_run(index, 1);
                self.give_run(index, chunks);
            }
            Located::Half { index, half } => {
                let bytes = if USABLE { self.half_limit } else { size };
                self.count(-(bytes as isize));
                self.free_half(index, half, ptr as usize);
            }
        }
        self.publish_live_if_due();
    }

    /// Gives back half `half` of half chunk `index`; the chunk goes back to
    /// the backend if its other half is free too.
    fn free_half(&mut self, index: usize, half: u64, addr: usize) {
        let pagemap = self.pagemap;
        match self.heap().halves.release(&pagemap, index, half) {
            Release::HalfFree => {}
            // The pagemap already says free.
            Release::ChunkFree => self.give_run(index, 1),
            Release::NotInUse => fatal("double free detected (half chunk already free)", addr),
        }
    }

    /// Pushes `obj` on its slab, owned by us.
    ///
    /// # Safety
    /// `obj` must be a handed-out object slot of slab `index`, owned by this
    /// allocator, that nobody uses any more.
    #[inline(always)]
    unsafe fn free_to_slab(&mut self, index: usize, class: usize, obj: *mut FreeObject) {
        let meta = self.pagemap.entry(index);
        let head = meta.free.load(Ordering::Relaxed);
        let in_use = meta.used.load(Ordering::Relaxed);
        if head == obj || in_use == 0 {
            // Freed just before (it heads the free list), or the slab has
            // nothing in use: linking it would loop the list and wrap the
            // count, and the object would be handed out twice.
            double_free(obj);
        }
        // SAFETY: the caller gives `obj` up; its first word becomes the link.
        unsafe { (*obj).next = head };
        meta.free.store(obj, Ordering::Relaxed);
        let used = in_use - 1;
        meta.used.store(used, Ordering::Relaxed);
        if used == 0 && self.bins[class].head as usize == index {
            // The head slab emptied: keep it for the next allocation (an
            // alloc/free pair must not go to the backend every time).
            self.empty_mask[class / 64] |= 1 << (class % 64);
        } else if head.is_null() || used == 0 {
            self.slab_changed(index, class);
        }
    }

    /// A free made slab `index` partial (from full) or empty.
    #[cold]
    #[inline(never)]
    fn slab_changed(&mut self, index: usize, class: usize) {
        let info = *self.info(class);
        let meta = self.pagemap.entry(index);
        let used = meta.used.load(Ordering::Relaxed);
        if used > info.capacity {
            fatal(
                "double free detected (slab has more frees than objects)",
                meta.free.load(Ordering::Relaxed) as usize,
            );
        }
        let bin = self.bins[class];
        // Only the head can be full and still listed (the fast path emptied
        // it), so the links, not fullness, say whether it is listed.
        let was_listed = bin.head as usize == index || meta.prev.load(Ordering::Relaxed) != NIL;
        let alone = bin.head == NIL
            || (bin.head as usize == index && meta.next.load(Ordering::Relaxed) == NIL);
        if used == 0 && !alone {
            if was_listed {
                self.unlink(class, index);
            }
            self.release_slab(index, info.slab_chunks as usize);
            return;
        }
        if !was_listed {
            // An empty slab at the head would be used before this one; it
            // goes back now that this one can serve the class.
            if bin.head != NIL
                && self
                    .pagemap
                    .entry(bin.head as usize)
                    .used
                    .load(Ordering::Relaxed)
                    == 0
            {
                let empty = bin.head as usize;
                self.unlink(class, empty);
                self.release_slab(empty, info.slab_chunks as usize);
            }
            self.push_back(class, index);
        }
        if used == 0 {
            self.empty_mask[class / 64] |= 1 << (class % 64);
        }
    }

    /// Keeps `obj`, an object of class `class` of `owner`'s slab, to hand
    /// out again if there is room (made, if we keep none of its class, by
    /// putting another class's kept list in the depot); else hands it,
    /// with the objects of its class we keep, to the heap's depot; else
    /// queues it for its owner.
    ///
    /// Kept objects do not wait in the inbox of an owner whose thread is
    /// descheduled in the middle of its work (with more threads than cores,
    /// thousands of them did, and their slabs with them): the next
    /// allocation of the class here, or anywhere for the depot's, takes one.
    #[inline(never)]
    fn dealloc_remote(&mut self, owner: u16, class: usize, obj: *mut FreeObject) {
        let kept = self.foreign[class];
        // The cheap part of double-free detection for kept objects (a
        // longer list, or the depot's other lists, is not walked): the
        // head of our kept list, or of the list we last put in the depot
        // while it is still there (once taken, it may be live again).
        if kept == obj || (self.last_deposit == obj && self.heap().depot.holds_list(class, obj)) {
            fatal("double free detected (object already freed)", obj as usize);
        }
        let size = class_size(class);
        // SAFETY: the client gave `obj` up; its first word becomes the link
        // to our kept list of its class (whatever happens to it next).
        unsafe { (*obj).next = kept };
        let count = self.foreign_count[class] as usize + 1;
        if kept.is_null()
            && self.foreign_bytes + size > self.foreign_limit
            && size <= self.foreign_limit
            && 2 * size <= self.list_limit
        {
            // All we keep is of other classes, and this object could be
            // kept: one of those lists goes to the depot to make room,
            // rather than this object alone (lists of one filled the
            // class's slots).
            self.deposit_another_list(class, size);
        }
        // Kept only if one more would still fit the list's share of the
        // depot, so that a list put there is never above that share.
        if self.foreign_bytes + size <= self.foreign_limit && (count + 1) * size <= self.list_limit
        {
            self.foreign[class] = obj;
            self.foreign_count[class] = count as u32;
            self.set_foreign_bytes(self.foreign_bytes + size);
            // Allocations of the class now take the slow path, which hands
            // kept objects out first.
            self.set_head(class, self.bins[class].head);
            return;
        }
        let deposited = self.depot_limit != 0 && {
            let depot = &self.heap().depot;
            // SAFETY: `obj` heads `count` free objects of `class` (our kept
            // list of the class, whose count we keep), each an object slot
            // that its slab counts as in use, held by nothing else.
            unsafe { depot.put(class, obj, count, size, self.depot_limit) }
        };
        if deposited {
            self.last_deposit = obj;
            // `obj` was not counted among the kept.
            self.forget_kept(class, count - 1);
            return;
        }
        self.send_home(owner, obj);
    }

    /// Puts in the depot the next kept list, from where the last search
    /// stopped, of a class other than `except` whose going leaves room
    /// for `room` more bytes (at most one attempt).
    #[cold]
    #[inline(never)]
    fn deposit_another_list(&mut self, except: usize, room: usize) {
        if self.depot_limit == 0 {
            return;
        }
        for _ in 0..NUM_CLASSES {
            let c = self.deposit_cursor;
            self.deposit_cursor = (c + 1) % NUM_CLASSES;
            let head = self.foreign[c];
            let (count, size) = (self.foreign_count[c] as usize, class_size(c));
            if c == except
                || head.is_null()
                || count == 0
                || self.foreign_bytes.saturating_sub(count * size) + room > self.foreign_limit
            {
                continue;
            }
            let depot = &self.heap().depot;
            // SAFETY: our kept list of `c`: `count` free objects of the
            // class, kept in use by their slabs, held by us alone.
            if unsafe { depot.put(c, head, count, size, self.depot_limit) } {
                self.last_deposit = head;
                self.forget_kept(c, count);
            }
            return;
        }
    }

    /// Takes a list of `class` from the depot as our kept list of the
    /// class (which is empty); returns whether there was one.
    #[inline(never)]
    fn take_from_depot(&mut self, class: usize) -> bool {
        if self.depot_limit == 0 {
            return false;
        }
        let size = class_size(class);
        let Some(list) = self.heap().depot.take(class, size) else {
            return false;
        };
        debug_assert!(self.foreign[class].is_null());
        self.foreign[class] = list.head;
        self.foreign_count[class] = list.count as u32;
        self.set_foreign_bytes(self.foreign_bytes + list.count * size);
        // Allocations of the class take the slow path while we keep some.
        self.set_head(class, self.bins[class].head);
        true
    }

    /// Sends home the objects of the list at `head` (free objects kept in
    /// use by their slabs, which we hold) that `mode` sends; returns the
    /// list of the others and its length.
    fn send_home_some(&mut self, head: *mut FreeObject, mode: Reclaim) -> (*mut FreeObject, usize) {
        let (mut stay, mut count) = (null_mut::<FreeObject>(), 0);
        let mut obj = head;
        while !obj.is_null() {
            // SAFETY: the list links free objects through `next`.
            let next = unsafe { (*obj).next };
            let Some(index) = self.pagemap.index_of(obj as usize) else {
                fatal("foreign object outside the heap", obj as usize)
            };
            // A slab that holds a kept object counts it as in use, so it
            // keeps its owner.
            let desc = self.pagemap.entry(index).desc();
            if !desc.is_slab() {
                fatal("kept object outside any slab", obj as usize)
            }
            let owner = desc.owner();
            // Our own objects always: whoever holds us (our thread, or a
            // helper reclaiming while we are idle) drains our inbox next.
            if owner == self.id || mode.sends(owner, || self.is_idle(owner)) {
                self.send_home(owner, obj);
            } else {
                // SAFETY: as above; its first word links the list that stays.
                unsafe { (*obj).next = stay };
                stay = obj;
                count += 1;
            }
            obj = next;
        }
        (stay, count)
    }

    /// Whether nobody is attached to allocator `id` (a hint: it may be
    /// attached a moment later, and then finds what we send in its inbox).
    fn is_idle(&self, id: u16) -> bool {
        // Relaxed: a hint, as above.
        !self
            .heap()
            .pool
            .slot(id as usize)
            .shared
            .busy
            .load(Ordering::Relaxed)
    }

    /// Our kept list of `class`, of `count` counted objects, went
    /// elsewhere: the list is empty and the class back on the fast path.
    fn forget_kept(&mut self, class: usize, count: usize) {
        self.foreign[class] = null_mut();
        self.foreign_count[class] = 0;
        // Saturating: a double free could make a list longer than its count.
        let bytes = count * class_size(class);
        self.set_foreign_bytes(self.foreign_bytes.saturating_sub(bytes));
        self.set_head(class, self.bins[class].head);
    }

    fn set_foreign_bytes(&mut self, bytes: usize) {
        self.foreign_bytes = bytes;
        self.shared()
            .counters
            .foreign
            .store(bytes, Ordering::Relaxed);
    }

    /// Brings the kept objects within `foreign_limit` (lists taken from the
    /// depot may pass it while attached, and the limit falls when the
    /// region fills), giving the lists of the excess to the depot, or home
    /// if it is off or full: an idle allocator holds at most that much.
    fn shed_kept(&mut self) {
        let mut class = 0;
        while self.foreign_bytes > self.foreign_limit && class < NUM_CLASSES {
            let head = self.foreign[class];
            if !head.is_null() {
                let count = self.foreign_count[class] as usize;
                let size = class_size(class);
                let depot = &self.heap().depot;
                // Back to the depot past its bound (see `depot_bytes`),
                // unless it is off.
                let deposited = self.depot_limit != 0
                    // SAFETY: our kept list of `class`: `count` free objects
                    // of the class, kept in use by their slabs, held by us
                    // alone.
                    && unsafe { depot.put(class, head, count, size, usize::MAX) };
                if !deposited {
                    self.send_home_some(head, Reclaim::All);
                }
                self.forget_kept(class, count);
            }
            class += 1;
        }
    }

    /// Sends the foreign objects we keep back to their owners (with
    /// [`Reclaim::IdleOwners`], those of owners nobody is attached to).
    fn flush_foreign(&mut self, mode: Reclaim) {
        if self.foreign_bytes == 0 {
            return;
        }
        for class in 0..NUM_CLASSES {
            let obj = self.foreign[class];
            if obj.is_null() {
                continue;
            }
            let (stay, count) = self.send_home_some(obj, mode);
            // Saturating: a double free could make a list longer than its
            // count.
            let sent = (self.foreign_count[class] as usize).saturating_sub(count);
            self.foreign[class] = stay;
            self.foreign_count[class] = count as u32;
            self.set_foreign_bytes(self.foreign_bytes.saturating_sub(sent * class_size(class)));
            self.set_head(class, self.bins[class].head);
        }
    }

    /// Queues `obj` for its owner.
    fn send_home(&mut self, owner: u16, obj: *mut FreeObject) {
        // SAFETY: `obj` is a checked object slot of a slab owned by `owner`,
        // given up by the client.
        if let Some(batch) = unsafe { self.outgoing.push(owner, obj) } {
            self.post(batch);
        }
        self.shared()
            .counters
            .outgoing
            .store(self.outgoing.pending, Ordering::Relaxed);
    }

    fn post(&self, batch: Batch) {
        deliver(self.heap(), batch);
    }

    /// Delivers every outgoing batch.
    pub(crate) fn flush_outgoing(&mut self) {
        let heap = self.heap;
        // SAFETY: the heap outlives its allocators.
        self.outgoing
            .drain(|batch| deliver(unsafe { &*heap }, batch));
        self.shared().counters.outgoing.store(0, Ordering::Relaxed);
    }

    /// Frees a batch of our own objects (a list linked through `next`), sent
    /// by another allocator, then everything in our inbox, as the owner.
    fn accept(&mut self, first: *mut FreeObject) {
        let mut obj = first;
        while !obj.is_null() {
            // SAFETY: a batch links free objects given up by clients.
            let next = unsafe { (*obj).next };
            self.free_message(obj);
            obj = next;
        }
        self.accept_inbox();
    }

    /// As a helper holding an idle allocator's `busy` flag: frees what
    /// waits in its inbox and trims its empty slabs as its detach would.
    pub(crate) fn accept_inbox(&mut self) {
        self.drain_inbox();
        self.release_empty_slabs(self.heap().config.idle_retain_bytes);
    }

    /// Handles every free waiting in our inbox.
    pub(crate) fn drain_inbox(&mut self) {
        let mut obj = self.shared().inbox.take();
        let mut n = 0;
        while !obj.is_null() {
            // SAFETY: inbox objects are free objects linked by their senders.
            let next = unsafe { (*obj).next };
            self.free_message(obj);
            n += 1;
            obj = next;
        }
        self.shared().inbox.taken(n);
    }

    /// Frees an object that arrived in our inbox. Its sender checked its
    /// slot, and a slab keeps its owner while any of its objects is in use
    /// (one in flight counts), so the object is ours; but a double free can
    /// outlive its slab: the first free empties the slab, which goes back
    /// and becomes a slab of another class or allocator before the second
    /// arrives. Both are checked again here (a slab reused by us for the
    /// same class, where the object is one again, cannot be told apart).
    fn free_message(&mut self, obj: *mut FreeObject) {
        let addr = obj as usize;
        let Some(slot) = self.slab_slot(addr) else {
            fatal(
                "double free or heap corruption: a remote free is not an object of a slab",
                addr,
            )
        };
        if slot.owner != self.id {
            fatal(
                "double free or heap corruption: a remote free reached an allocator that does not own its slab",
                addr,
            );
        }
        // SAFETY: `obj` starts an object of our slab at `slot.head`.
        unsafe { self.free_to_slab(slot.head, slot.class, obj) }
    }

    // ----- realloc and queries ----------------------------------------

    /// Usable bytes of the allocation at `ptr`.
    pub(crate) fn usable_size(&self, ptr: *const u8) -> usize {
        self.heap().usable_size(ptr as usize)
    }

    /// Resizes the allocation at `ptr` (allocated with `old_size` and
    /// `align`), in place when its class or chunk run allows.
    ///
    /// ```text
    /// realloc ── fast: pagemap entry is a slab chunk, new size maps to its
    ///   │        class, slot check → same pointer
    ///   └─ realloc_slow: other classes, large runs (grow/shrink in place),
    ///        misuse (fatal) → locate, else alloc + copy + dealloc
    /// ```
    ///
    /// # Safety
    /// As for [`Allocator::dealloc`]; on success `ptr` must no longer be
    /// used unless the same pointer is returned. On failure (null) the old
    /// allocation is untouched.
    #[inline(always)]
    pub(crate) unsafe fn realloc<const USABLE: bool>(
        &mut self,
        ptr: *mut u8,
        old_size: usize,
        align: usize,
        new_size: usize,
    ) -> *mut u8 {
        // Slab objects, the common case, are checked here with one pagemap
        // read: no `locate`, no class search (for `new_size <= small_limit`
        // and `align <= MIN_ALIGN`, `class_of(new_size)` is what
        // `class_for` returns).
        if new_size <= self.small_limit && align <= MIN_ALIGN {
            if let Some(slot) = self.slab_slot(ptr as usize) {
                if self.class_of(new_size) == slot.class {
                    if !USABLE {
                        self.count(new_size as isize - old_size as isize);
                    }
                    return ptr;
                }
                // SAFETY: `ptr` is a checked object slot of `object_bytes`
                // bytes; the caller's contract.
                let new = unsafe {
                    self.realloc_move::<USABLE>(ptr, old_size, slot.object_bytes, align, new_size)
                };
                if new.is_null() && new_size <= slot.object_bytes {
                    // No room for a smaller object: a shrink keeps its block.
                    let usable = slot.object_bytes;
                    return self.kept::<USABLE>(ptr, old_size, usable, new_size, usable);
                }
                return new;
            }
        }
        // SAFETY: the caller's contract.
        let new = unsafe { self.realloc_slow::<USABLE>(ptr, old_size, align, new_size) };
        // A large block grown or shrunk in place changes the count by as
        // much as an allocation does.
        self.publish_live_if_due();
        new
    }

    /// Moves the allocation at `ptr`, whose usable size is `old_usable`, to
    /// a new block of `new_size` bytes; null (with `ptr` untouched) when
    /// none can be had.
    ///
    /// # Safety
    /// As for [`Allocator::realloc`], and `old_usable` must be the usable
    /// size of the allocation at `ptr`.
    #[inline(never)]
    unsafe fn realloc_move<const USABLE: bool>(
        &mut self,
        ptr: *mut u8,
        old_size: usize,
        old_usable: usize,
        align: usize,
        new_size: usize,
    ) -> *mut u8 {
        let new = self.alloc::<USABLE>(new_size, align);
        if !new.is_null() {
            let copy = old_usable
                .min(new_size)
                .min(if USABLE { old_usable } else { old_size });
            // SAFETY: both blocks are live and distinct; we copy no more than
            // either holds.
            unsafe { core::ptr::copy_nonoverlapping(ptr, new, copy) };
            // SAFETY: the caller's contract for `ptr` carries over.
            unsafe { self.dealloc::<USABLE>(ptr, old_size) };
        }
        new
    }

    /// Every resize the fast path of [`Allocator::realloc`] does not make.
    ///
    /// # Safety
    /// As for [`Allocator::realloc`].
    #[inline(never)]
    unsafe fn realloc_slow<const USABLE: bool>(
        &mut self,
        ptr: *mut u8,
        old_size: usize,
        align: usize,
        new_size: usize,
    ) -> *mut u8 {
        let located = self.heap().locate(ptr as usize, "realloc");
        let old_usable = match located {
            Located::Slab { class, .. } => self.info(class).object_bytes as usize,
            Located::Large { chunks, .. } => chunks << self.chunk_shift,
            Located::Half { .. } => self.half_limit,
        };
        let old_counted = if USABLE { old_usable } else { old_size };
        match located {
            Located::Slab { class, .. } => {
                if self.class_for(new_size, align) == Some(class) {
                    let new_counted = if USABLE { old_usable } else { new_size };
                    self.count(new_counted as isize - old_counted as isize);
                    return ptr;
                }
            }
            Located::Half { .. } => {
                if self.class_for(new_size, align).is_none() && self.fits_half(new_size, align) {
                    let new_counted = if USABLE { old_usable } else { new_size };
                    self.count(new_counted as isize - old_counted as isize);
                    return ptr;
                }
            }
            Located::Large { index, chunks } => {
                if self.run_may_hold(new_size, align) {
                    if self.fits_half(new_size, align) {
                        // SAFETY: the caller's contract; `realloc_move` frees
                        // `ptr` only when it returns a new block.
                        let new = unsafe {
                            self.realloc_move::<USABLE>(ptr, old_size, old_usable, align, new_size)
                        };
                        if !new.is_null() {
                            return new;
                        }
                        // No half to be had: shrink in place rather than fail.
                    }
                    if let Some(kept) = self.resize_in_place::<USABLE>(
                        ptr, index, chunks, old_size, old_usable, new_size,
                    ) {
                        return kept;
                    }
                }
            }
        }
        // SAFETY: `old_usable` is the usable size of `ptr`; the caller's
        // contract.
        let new =
            unsafe { self.realloc_move::<USABLE>(ptr, old_size, old_usable, align, new_size) };
        if !new.is_null() {
            return new;
        }
        match located {
            // The move failed after a reclaim, which may have freed the
            // chunks just past the run (an empty slab, a cached run): a
            // grow in place can succeed now where it failed above. A
            // shrink keeps its block and gives back the chunks it no
            // longer needs (it cannot fail) rather than fail.
            Located::Large { index, chunks }
                if ptr as usize % align.max(1) == 0
                    && (new_size <= old_usable || self.run_may_hold(new_size, align)) =>
            {
                self.resize_in_place::<USABLE>(ptr, index, chunks, old_size, old_usable, new_size)
                    .unwrap_or(null_mut())
            }
            // No room to move to: a shrink keeps its block rather than fail.
            Located::Slab { .. } | Located::Half { .. }
                if new_size <= old_usable && ptr as usize % align.max(1) == 0 =>
            {
                self.kept::<USABLE>(ptr, old_size, old_usable, new_size, old_usable)
            }
            _ => null_mut(),
        }
    }

    /// Whether a chunk run may be resized in place to hold `new_size` bytes
    /// at `align`: no class serves that size, and the heap is large enough.
    fn run_may_hold(&self, new_size: usize, align: usize) -> bool {
        self.class_for(new_size, align).is_none()
            && new_size <= self.pagemap.chunks << self.chunk_shift
    }

    /// Resizes the chunk run of `chunks` chunks at `index`, which holds
    /// `ptr` (usable size `old_usable`, requested `old_size`), to hold
    /// `new_size` bytes without moving it, and returns `ptr`; `None` when
    /// it cannot grow (a shrink always succeeds).
    fn resize_in_place<const USABLE: bool>(
        &mut self,
        ptr: *mut u8,
        index: usize,
        chunks: usize,
        old_size: usize,
        old_usable: usize,
        new_size: usize,
    ) -> Option<*mut u8> {
        let new_chunks = new_size.max(1).div_ceil(1 << self.chunk_shift);
        if !self.resize_run(index, chunks, new_chunks) {
            debug_assert!(new_chunks > chunks, "a shrink cannot fail");
            return None;
        }
        let new_usable = new_chunks << self.chunk_shift;
        Some(self.kept::<USABLE>(ptr, old_size, old_usable, new_size, new_usable))
    }

    /// A resize that keeps `ptr` where it is: counts the change of its size
    /// (of its usable size with `USABLE`) and returns it.
    fn kept<const USABLE: bool>(
        &mut self,
        ptr: *mut u8,
        old_size: usize,
        old_usable: usize,
        new_size: usize,
        new_usable: usize,
    ) -> *mut u8 {
        let (old, new) = if USABLE {
            (old_usable, new_usable)
        } else {
            (old_size, new_size)
        };
        self.count(new as isize - old as isize);
        ptr
    }

    /// Shrinks or grows the large run at `index` in place.
    fn resize_run(&mut self, index: usize, chunks: usize, new_chunks: usize) -> bool {
        let backend = &self.heap().backend;
        if new_chunks == chunks {
            return true;
        }
        if new_chunks > chunks {
            if !backend.try_grow(index, chunks, new_chunks) {
                return false;
            }
            self.pagemap
                .debug_assert_free(index + chunks, new_chunks - chunks);
        }
        let owner = self.pagemap.entry(index).desc().owner();
        // Only the head is described (`Pagemap::set_large`): the chunks
        // gained or given back are described as free already.
        self.pagemap.set_large(index, new_chunks, owner);
        if new_chunks < chunks {
            backend.free_run(index + new_chunks, chunks - new_chunks);
        }
        true
    }

    // ----- bins ---------------------------------------------------------

    fn set_head(&mut self, class: usize, head: u32) {
        let keeps_foreign = !self.foreign[class].is_null();
        let bin = &mut self.bins[class];
        bin.head = head;
        bin.current = if head == NIL || keeps_foreign {
            // SAFETY: the heap outlives its allocators.
            &unsafe { &*self.heap }.empty_slab
        } else {
            self.pagemap.entry(head as usize)
        };
    }

    fn push_front(&mut self, class: usize, index: usize) {
        let meta = self.pagemap.entry(index);
        let old = self.bins[class].head;
        meta.prev.store(NIL, Ordering::Relaxed);
        meta.next.store(old, Ordering::Relaxed);
        if old == NIL {
            self.bins[class].tail = index as u32;
        } else {
            self.pagemap
                .entry(old as usize)
                .prev
                .store(index as u32, Ordering::Relaxed);
        }
        self.set_head(class, index as u32);
    }

    fn push_back(&mut self, class: usize, index: usize) {
        let tail = self.bins[class].tail;
        if tail == NIL {
            return self.push_front(class, index);
        }
        let meta = self.pagemap.entry(index);
        meta.next.store(NIL, Ordering::Relaxed);
        meta.prev.store(tail, Ordering::Relaxed);
        self.pagemap
            .entry(tail as usize)
            .next
            .store(index as u32, Ordering::Relaxed);
        self.bins[class].tail = index as u32;
    }

    fn unlink(&mut self, class: usize, index: usize) {
        let pagemap = self.pagemap;
        let meta = pagemap.entry(index);
        let (prev, next) = (
            meta.prev.load(Ordering::Relaxed),
            meta.next.load(Ordering::Relaxed),
        );
        if prev == NIL {
            self.set_head(class, next);
        } else {
            self.pagemap
                .entry(prev as usize)
                .next
                .store(next, Ordering::Relaxed);
        }
        if next == NIL {
            self.bins[class].tail = prev;
        } else {
            self.pagemap
                .entry(next as usize)
                .prev
                .store(prev, Ordering::Relaxed);
        }
        meta.next.store(NIL, Ordering::Relaxed);
        meta.prev.store(NIL, Ordering::Relaxed);
    }

    /// Gives the (unlisted, empty) slab at `index` back to the backend.
    fn release_slab(&mut self, index: usize, chunks: usize) {
        self.pagemap.clear_run(index, chunks);
        self.give_run(index, chunks);
    }

    /// A run of `chunks` free chunks: from the cache when one fits exactly
    /// (and no extra alignment is asked), else from the backend.
    fn claim_run(&mut self, chunks: usize, align: usize) -> Option<usize> {
        self.claim_run_zeroed(chunks, align).map(|run| run.start)
    }

    /// [`Allocator::claim_run`], saying whether the run reads zero (a
    /// cached run never does: it was used).
    fn claim_run_zeroed(&mut self, chunks: usize, align: usize) -> Option<Run> {
        if align == 0 && self.cache_limit_chunks != 0 {
            if let Some(start) = self.shared().runs.take(chunks) {
                return Some(Run {
                    start,
                    zeroed: false,
                });
            }
        }
        let backend = &self.heap().backend;
        if align == 0 && chunks >= TOP_RUN_CHUNKS {
            // Long runs from the top, short ones from the bottom: they do
            // not interleave, so long free runs survive in the middle.
            backend.claim_best_fit(chunks)
        } else {
            backend.claim_first_fit(chunks, align)
        }
    }

    /// Returns a free run (already marked free in the pagemap) to the cache
    /// if it has room, else to the backend.
    fn give_run(&mut self, start: usize, chunks: usize) {
        if self.cache_limit_chunks != 0 {
            let limit = self.cache_limit_chunks;
            // SAFETY: the caller gives up the run, which the backend counts
            // as held and the pagemap describes as free (`give_run`'s
            // contract), and we hold `busy`, as `put` requires.
            if unsafe { self.shared().runs.put(start, chunks, limit) } {
                return;
            }
        }
        self.heap().backend.free_run(start, chunks);
    }

    /// Gives every cached run back to the backend.
    fn flush_cache(&mut self) {
        let backend = &self.heap().backend;
        self.shared()
            .runs
            .drain(|start, n| backend.free_run(start, n));
    }

    /// Releases empty slabs kept in bins, keeping at most `keep_bytes`.
    pub(crate) fn release_empty_slabs(&mut self, keep_bytes: usize) {
        let mut kept = 0;
        for word in 0..self.empty_mask.len() {
            let mut bits = self.empty_mask[word];
            while bits != 0 {
                let class = word * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let head = self.bins[class].head;
                let info = *self.info(class);
                let bytes = (info.slab_chunks as usize) << self.chunk_shift;
                let empty = head != NIL
                    && self
                        .pagemap
                        .entry(head as usize)
                        .used
                        .load(Ordering::Relaxed)
                        == 0;
                if empty && kept + bytes <= keep_bytes {
                    kept += bytes;
                    continue;
                }
                if empty {
                    self.unlink(class, head as usize);
                    self.release_slab(head as usize, info.slab_chunks as usize);
                }
                self.empty_mask[word] &= !(1 << (class % 64));
            }
        }
    }

    // ----- lifecycle ----------------------------------------------------

    /// Adds this allocator's unpublished live bytes to the heap's total.
    /// [`Allocator::publish_live`] once the unpublished change reaches
    /// `PUBLISH_BYTES`: the heap-wide counter is one cache line every
    /// thread writes, so the slow path does not write it every time.
    #[inline]
    fn publish_live_if_due(&mut self) {
        let live = self.shared().counters.live.load(Ordering::Relaxed);
        if (live - self.published_live).unsigned_abs() >= PUBLISH_BYTES {
            self.publish_live();
        }
    }

    /// Adds the change of this allocator's live bytes since it last
    /// published to the heap's total, which keeps the peak.
    pub(crate) fn publish_live(&mut self) {
        let live = self.shared().counters.live.load(Ordering::Relaxed);
        let delta = live - self.published_live;
        if delta != 0 {
            self.heap().publish_live(delta);
            self.published_live = live;
        }
    }

    /// Sets the bound on kept objects from the room left in the heap, and
    /// if it fell, sheds what is kept past it. (Only then: a list taken
    /// from the depot may pass the bound until it is handed out.)
    fn follow_room(&mut self) {
        let before = self.foreign_limit;
        self.foreign_limit = self.heap().foreign_limit_now();
        if self.foreign_limit < before {
            self.shed_kept();
        }
    }

    /// Called when a thread attaches: the bound on kept objects follows
    /// the room left in the region, and what is kept past it goes.
    pub(crate) fn on_attach(&mut self) {
        self.follow_room();
        if !self.shared().inbox.is_empty() {
            self.drain_inbox();
        }
    }

    /// Called when a thread detaches: nothing is left in flight, and at most
    /// `idle_retain_bytes` of empty slabs stay. In a fixed region, where
    /// threads detach after every call and attach again at once, at most
    /// `foreign_limit` bytes of foreign objects stay too (set again now:
    /// `foreign_retain_bytes`, a quarter of it in a nearly full region; a
    /// reclaim sends them home);
    /// in an OS heap, where a detach is usually a thread's exit, they go
    /// home now, so that no idle allocator holds other allocators' slabs.
    /// (Threads beyond the pool's keeping limit detach after every call
    /// there too, and pay for it: that is the slow path of a rare case.)
    pub(crate) fn on_detach(&mut self) {
        #[cfg(debug_assertions)]
        self.check_invariants();
        self.drain_inbox();
        if self.heap().os_owned {
            self.flush_foreign(Reclaim::All);
        } else {
            self.foreign_limit = self.heap().foreign_limit_now();
            self.shed_kept();
        }
        self.flush_outgoing();
        self.release_empty_slabs(self.heap().config.idle_retain_bytes);
        self.publish_live();
    }

    /// Gives back everything this allocator holds that nothing uses.
    pub(crate) fn reclaim_own(&mut self, mode: Reclaim) {
        self.flush_foreign(mode);
        self.flush_outgoing();
        self.drain_inbox();
        self.release_empty_slabs(0);
        self.flush_cache();
        self.publish_live();
    }

    /// Sends the foreign objects this allocator keeps to their owners.
    pub(crate) fn send_foreign_home(&mut self, mode: Reclaim) {
        self.flush_foreign(mode);
        self.flush_outgoing();
    }

    /// Gives back everything this allocator and every idle one hold that
    /// nothing uses, the slabs emptied by objects sent home included (what
    /// an allocation does before it reports out of memory, and
    /// `Attached::trim`).
    pub(crate) fn reclaim_heap(&mut self, mode: Reclaim) {
        self.reclaim_own(mode);
        self.heap().reclaim_others(mode);
        // Frees other allocators just sent us. The slabs they empty go
        // back too (a bin keeps an emptied head, and a cache keeps
        // runs), or the retry that follows could not use them.
        self.drain_inbox();
        self.release_empty_slabs(0);
        self.flush_cache();
    }

    /// Checks the bins against the slab invariants; run at detach in debug
    /// builds.
    #[cfg(debug_assertions)]
    pub(crate) fn check_invariants(&self) {
        let mut foreign = 0;
        for class in 0..NUM_CLASSES {
            let info = self.info(class);
            let mut index = self.bins[class].head;
            let mut prev = NIL;
            let mut listed = 0;
            while index != NIL {
                let meta = self.pagemap.entry(index as usize);
                let d = meta.desc();
                assert!(d.is_slab() && d.class() == class && d.owner() == self.id);
                assert_eq!(meta.prev.load(Ordering::Relaxed), prev);
                let mut free = 0u32;
                let mut p = meta.free.load(Ordering::Relaxed);
                while !p.is_null() {
                    free += 1;
                    // SAFETY: free lists link free objects of this slab.
                    p = unsafe { (*p).next };
                }
                let used = meta.used.load(Ordering::Relaxed);
                let carved = meta.carved.load(Ordering::Relaxed);
                assert_eq!(used + free, carved, "class {class}");
                assert!(carved <= info.capacity);
                assert!(
                    free > 0 || carved < info.capacity || prev == NIL,
                    "full slab listed behind the head"
                );
                prev = index;
                index = meta.next.load(Ordering::Relaxed);
                listed += 1;
            }
            assert_eq!(self.bins[class].tail, prev);
            let _ = listed;
            // Kept foreign objects: counted, and their class off the fast path.
            let mut p = self.foreign[class];
            let mut kept = 0;
            while !p.is_null() {
                kept += 1;
                foreign += class_size(class);
                assert!(core::ptr::eq(
                    self.bins[class].current,
                    &self.heap().empty_slab
                ));
                // SAFETY: foreign lists link free objects through `next`.
                p = unsafe { (*p).next };
            }
            assert_eq!(kept, self.foreign_count[class], "class {class}");
        }
        assert_eq!(foreign, self.foreign_bytes);
    }
}
