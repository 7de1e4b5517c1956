//! Heap: one region laid out as metadata followed by chunks, the backend
//! and pool over it, and the public [`Heap`] and [`Attached`] handles.
//!
//! Region layout (everything inside the region, metadata included):
//!
//! ```text
//! | HeapInner | allocator table | used bitmap | dirty bitmap | open-halves bitmap | pagemap | pad | chunks ... |
//! ```
//!
//! Allocators themselves are carved from chunks (marked as metadata in the
//! pagemap) when the pool first needs them.

use core::alloc::Layout;
use core::mem::{align_of, size_of};
use core::ptr::{null_mut, NonNull};

use crate::allocator::{tail_head, Allocator, AllocatorSlot, Counters, Reclaim, Shared, MIN_ALIGN};
use crate::backend::{bitmap_words, block_words, Backend};
use crate::config::{Config, Error, MAX_CHUNKS};
use crate::depot::Depot;
use crate::fork_gate::ForkGate;
use crate::half::{open_words, Halves, Release, HIGH, LOW};
use crate::pagemap::{ChunkMeta, Desc, FreeObject, Kind, Pagemap};
use crate::platform::{fatal_in, BoundedWait};
use crate::pool::Pool;
use crate::remote::Inbox;
use crate::run_cache::RunCache;
use crate::size_class::{class_of, class_size, ClassTable, NUM_CLASSES};
#[cfg(feature = "std")]
use crate::source::OS_REGION;
use crate::source::{Source, FIXED_REGION};
use crate::stats::{ClassRow, FreeRuns, Snapshot, Stats};
use crate::sync::{
    fence, spin_hint, AtomicBool, AtomicIsize, AtomicPtr, AtomicU32, AtomicUsize, CachePadded,
    Ordering,
};

/// Runs `f` on the allocator of `slot` if nobody holds its `busy` flag,
/// holding the flag meanwhile; returns whether it did. The caller is inside
/// the fork gate (every hold of an idle allocator is) and, once this
/// returns true, runs `HeapInner::drain_if_idle` for frees posted meanwhile
/// (`drain_if_idle` itself loops instead).
pub(crate) fn hold_idle(slot: &AllocatorSlot, f: impl FnOnce(&mut Allocator)) -> bool {
    // Acquire pairs with the Release stores of `busy` (detach, helpers):
    // the last holder's writes to the allocator happen before ours.
    if slot
        .shared
        .busy
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return false;
    }
    // SAFETY: we hold `busy`, so `local` is ours alone until we release it.
    f(unsafe { &mut *slot.local.get() });
    // Release pairs with the Acquire in `attach` and in the next holder's
    // compare-and-swap above.
    slot.shared.busy.store(false, Ordering::Release);
    true
}

/// Where a pointer handed back by a client lives.
pub(crate) enum Located {
    Slab {
        head: usize,
        class: usize,
        owner: u16,
    },
    Large {
        index: usize,
        chunks: usize,
    },
    /// Half `half` (`half::LOW` or `half::HIGH`) of half chunk `index`.
    Half {
        index: usize,
        half: u64,
    },
}

/// The heap's state, at the front of its region.
///
/// Invariants: everything it points to lies inside `[region_base,
/// region_base + region_bytes)` and lives as long as it does; `pagemap` and
/// `backend` describe the same chunks; `fixed_meta_bytes` is the distance
/// from the region's start to its first chunk.
pub(crate) struct HeapInner {
    pub(crate) pagemap: Pagemap,
    pub(crate) backend: Backend,
    pub(crate) classes: ClassTable,
    pub(crate) config: Config,
    /// What bins point at while they have no slab: its free list is empty.
    pub(crate) empty_slab: ChunkMeta,
    pub(crate) pool: Pool,
    /// Chunks with a free half (see the `half` module).
    pub(crate) halves: Halves,
    /// Objects freed by other threads than their owner's, for any
    /// allocator to hand out again (see the `depot` module).
    pub(crate) depot: Depot,
    /// Size of a half chunk if the heap serves objects above its largest
    /// slab class from halves, else 0.
    pub(crate) half_bytes: usize,
    /// Holds of other allocators' `busy` flags, made inside it, stop
    /// while a fork is prepared (see `fork_gate`).
    pub(crate) fork_gate: ForkGate,
    /// Bytes freed without an allocator (`free_detached`), as a negative
    /// count: part of the live total beside the allocators' counters.
    detached_live: AtomicIsize,
    live_published: AtomicIsize,
    peak_live: AtomicUsize,
    /// Allocations waiting for room before they fail (see
    /// [`HeapInner::another_thread_may_free`]).
    pub(crate) room_waiters: AtomicUsize,
    /// `Stats::room_waits` and `Stats::room_waits_failed`.
    pub(crate) room_waits: AtomicUsize,
    pub(crate) room_waits_failed: AtomicUsize,
    #[cfg_attr(not(feature = "std"), allow(dead_code))]
    region_base: usize,
    region_bytes: usize,
    fixed_meta_bytes: usize,
    slot_chunks: usize,
    pub(crate) os_owned: bool,
}

/// A heap (a fixed region, or an OS heap's reservation) with fewer than
/// one `ROOM_SHARE`th of its chunks free is nearly full: allocators keep
/// less of other allocators' objects (see
/// [`HeapInner::foreign_limit_now`]).
const ROOM_SHARE: usize = 4;
/// The share of `foreign_retain_bytes` an allocator keeps in a nearly full
/// heap.
const NEARLY_FULL_KEEP_SHARE: usize = 4;

/// Addresses of the parts of a region laid out for `chunks` chunks.
struct Plan {
    inner: usize,
    slots: usize,
    used: usize,
    dirty: usize,
    blocks: usize,
    open: usize,
    open_words: usize,
    pagemap: usize,
    chunk_base: usize,
    end: usize,
}

fn plan(base: usize, chunks: usize, config: &Config, halves: bool) -> Option<Plan> {
    let words = bitmap_words(chunks);
    let open_words = if halves { open_words(chunks) } else { 0 };
    let inner = base.checked_next_multiple_of(align_of::<HeapInner>().max(64))?;
    let slots = (inner + size_of::<HeapInner>()).next_multiple_of(8);
    let used = slots.checked_add(config.max_allocators * 8)?;
    let dirty = used + words * 8;
    let blocks = dirty + words * 8;
    let open = blocks + block_words(chunks) * 8;
    let pagemap = (open + open_words * 8).next_multiple_of(64);
    let chunk_base = pagemap
        .checked_add(chunks.checked_mul(size_of::<ChunkMeta>())?)?
        .checked_next_multiple_of(config.chunk_bytes)?;
    let end = chunk_base.checked_add(chunks.checked_mul(config.chunk_bytes)?)?;
    Some(Plan {
        inner,
        slots,
        used,
        dirty,
        blocks,
        open,
        open_words,
        pagemap,
        chunk_base,
        end,
    })
}

/// Chunks per allocator slot.
fn slot_chunks(chunk_bytes: usize) -> usize {
    size_of::<AllocatorSlot>().div_ceil(chunk_bytes)
}

/// Fewest back-offs before a wait for an allocator out of the stack for a
/// moment gives up (the first 64 spin, the rest yield) ...
const ATTACH_WAIT_LIMIT: u32 = 1 << 16;
/// ... and, where there is a clock, fewest milliseconds.
const ATTACH_WAIT_MS: u64 = 1000;
/// Back-offs after which the wait ends whatever the clock says (a clock that
/// does not move, where `clock_gettime` is refused, must not make it
/// endless).
const ATTACH_WAIT_MAX: u32 = 1 << 24;

/// How long a thread waits for an allocator that is out of the pool's
/// stack for a moment: at least [`ATTACH_WAIT_LIMIT`] back-offs and, with
/// `std` (a clock), at least [`ATTACH_WAIT_MS`], so that neither a fast
/// processor nor a loaded one gives up early. A bound, so that a wait for
/// an allocator that will never come back (a count left wrong by a `fork`
/// without the fork hooks, a call made inside another on the same thread)
/// ends in an error, not a hang.
pub(crate) struct Patience {
    spins: u32,
    /// When the first wait began (read only once waiting).
    since_ms: Option<u64>,
}

impl Patience {
    pub(crate) const fn new() -> Patience {
        Patience {
            spins: 0,
            since_ms: None,
        }
    }

    /// Backs off once and returns true, or returns false once patience has
    /// run out.
    pub(crate) fn wait(&mut self) -> bool {
        let now = crate::platform::now_ms();
        let since = *self.since_ms.get_or_insert(now);
        let long_enough = !cfg!(feature = "std") || now.saturating_sub(since) >= ATTACH_WAIT_MS;
        if self.spins >= ATTACH_WAIT_MAX || (self.spins >= ATTACH_WAIT_LIMIT && long_enough) {
            return false;
        }
        back_off(&mut self.spins);
        true
    }
}

/// Smallest reservation `Heap::from_os` falls back to.
#[cfg(feature = "std")]
const MIN_OS_RESERVE_BYTES: usize = 16 << 20;

/// Waits a little before looking again: spins briefly, then yields, so a
/// thread that was preempted holding what we need gets to run.
pub(crate) fn back_off(spins: &mut u32) {
    *spins += 1;
    if *spins < 64 {
        spin_hint();
    } else {
        crate::platform::yield_now();
    }
}

impl HeapInner {
    /// Lays a heap out over `[base, base + len)` and returns it.
    ///
    /// # Safety
    /// The region must be valid for reads and writes, owned by the heap for
    /// its whole life; with `zeroed`, it must read as zero.
    unsafe fn create(
        base: usize,
        len: usize,
        config: Config,
        source: &'static dyn Source,
        zeroed: bool,
    ) -> Result<NonNull<HeapInner>, Error> {
        config.validate()?;
        let end = base.checked_add(len).ok_or(Error::RegionInvalid)?;
        if base == 0 {
            return Err(Error::RegionInvalid);
        }
        let classes = ClassTable::new(
            config.chunk_bytes,
            config.max_slab_bytes,
            config.max_slab_object_bytes,
            config.classes_per_doubling,
        );
        let half_bytes = config.chunk_bytes / 2;
        let halves = config.half_chunks && classes.small_limit_bytes < half_bytes;
        let per_chunk = config.chunk_bytes + size_of::<ChunkMeta>();
        // Chunk indices are 32-bit: a larger region is used up to the limit.
        let mut chunks = (len / per_chunk).min(MAX_CHUNKS);
        let layout = loop {
            match plan(base, chunks, &config, halves) {
                Some(p) if p.end <= end => break Some(p),
                _ if chunks == 0 => break None,
                _ => chunks -= 1,
            }
        };
        let needed = config.max_slab_bytes / config.chunk_bytes + slot_chunks(config.chunk_bytes);
        let Some(p) = layout.filter(|_| chunks >= needed) else {
            // From this base: the padding up to the first chunk boundary
            // depends on it.
            let min = plan(base, needed, &config, halves).map_or(usize::MAX, |p| p.end - base);
            return Err(Error::RegionTooSmall {
                region_bytes: len,
                min_bytes: min,
            });
        };
        if !zeroed {
            // SAFETY: the allocator table, bitmaps and pagemap lie inside the
            // region (`p.end <= end`), which the caller gives us.
            unsafe { core::ptr::write_bytes(p.slots as *mut u8, 0, p.chunk_base - p.slots) };
        }
        let pagemap = Pagemap {
            entries: p.pagemap as *const ChunkMeta,
            chunks,
            base: p.chunk_base,
            chunk_shift: config.chunk_bytes.trailing_zeros(),
        };
        // SAFETY: the bitmaps lie inside the region, are zeroed, and belong
        // to this heap alone.
        let backend = unsafe {
            Backend::new(
                p.used as *mut _,
                p.dirty as *mut _,
                p.blocks as *mut _,
                chunks,
                p.chunk_base,
                pagemap.chunk_shift,
                source,
                &config,
            )
        };
        // SAFETY: the allocator table lies inside the region and is zeroed
        // (null pointers).
        let pool = unsafe {
            Pool::new(
                p.slots as *const AtomicPtr<AllocatorSlot>,
                config.max_allocators,
            )
        };
        // SAFETY: the open-halves bitmap lies inside the region, is zeroed,
        // and belongs to this heap alone.
        let halves_index =
            unsafe { Halves::new(p.open as *const crate::sync::model::AtomicU64, p.open_words) };
        let inner = p.inner as *mut HeapInner;
        // SAFETY: `inner` is aligned for HeapInner and lies inside the region
        // before the allocator table.
        unsafe {
            inner.write(HeapInner {
                pagemap,
                backend,
                classes,
                config,
                empty_slab: ChunkMeta::empty(),
                pool,
                halves: halves_index,
                depot: Depot::new(),
                half_bytes: if halves { half_bytes } else { 0 },
                fork_gate: ForkGate::new(),
                detached_live: AtomicIsize::new(0),
                live_published: AtomicIsize::new(0),
                peak_live: AtomicUsize::new(0),
                room_waiters: AtomicUsize::new(0),
                room_waits: AtomicUsize::new(0),
                room_waits_failed: AtomicUsize::new(0),
                region_base: base,
                region_bytes: len,
                fixed_meta_bytes: p.chunk_base - base,
                slot_chunks: slot_chunks(config.chunk_bytes),
                os_owned: source.decommits(),
            })
        };
        // SAFETY: just written, non-null.
        Ok(unsafe { NonNull::new_unchecked(inner) })
    }

    /// Bytes of the region the heap was built over.
    pub(crate) fn region_bytes(&self) -> usize {
        self.region_bytes
    }

    /// Adds `delta` to the published live bytes and raises the peak.
    pub(crate) fn publish_live(&self, delta: isize) {
        // Relaxed: statistics only.
        let total =
            (self.live_published.fetch_add(delta, Ordering::Relaxed) + delta).max(0) as usize;
        // A read-modify-write only for a new peak, so the line stays shared.
        if total > self.peak_live.load(Ordering::Relaxed) {
            self.peak_live.fetch_max(total, Ordering::Relaxed);
        }
    }

    /// Frees `ptr` without an attached allocator, for a thread that cannot
    /// get one (every allocator of the pool attached, or no room left to
    /// make one): a chunk run or a half goes straight back; a slab object
    /// is posted, alone, to its owner's inbox, as a remote free would be.
    /// The bytes leave the live total through `detached_live`.
    ///
    /// # Safety
    /// `ptr` must be a live block of this heap, not used afterwards; `size`
    /// is the size it was allocated (and counted) with, or `None` if its
    /// usable size was counted.
    pub(crate) unsafe fn free_detached(&self, ptr: *mut u8, size: Option<usize>) {
        let located = self.locate(ptr as usize, "free");
        let bytes = size.unwrap_or_else(|| self.usable_bytes(&located)) as isize;
        // Relaxed: statistics only.
        self.detached_live.fetch_sub(bytes, Ordering::Relaxed);
        self.publish_live(-bytes);
        match located {
            Located::Slab { owner, .. } => {
                let obj = ptr.cast::<FreeObject>();
                let slot = self.pool.slot(owner as usize);
                // SAFETY: `locate` checked that `ptr` is an object slot of a
                // slab of `owner`; the caller gives it up, so its first word
                // becomes the link of a list of one, handed over once.
                unsafe {
                    (*obj).next = core::ptr::null_mut();
                    slot.shared.inbox.post(obj, obj, 1);
                }
                // An idle owner frees it now (see `drain_if_idle`).
                self.drain_if_idle(slot);
            }
            Located::Large { index, chunks } => {
                // The head is the only chunk described (`Pagemap::set_large`).
                self.pagemap.clear_run(index, 1);
                self.backend.free_run(index, chunks);
            }
            Located::Half { index, half } => {
                match self.halves.release(&self.pagemap, index, half) {
                    Release::HalfFree => {}
                    // The pagemap already says free.
                    Release::ChunkFree => self.backend.free_run(index, 1),
                    Release::NotInUse => fatal_in(
                        "free",
                        "double free detected (half chunk already free)",
                        ptr as usize,
                    ),
                }
            }
        }
    }

    /// Finds the allocation `addr` starts; a fatal error naming `op` if it
    /// starts none.
    pub(crate) fn locate(&self, addr: usize, op: &str) -> Located {
        let Some(mut index) = self.pagemap.index_of(addr) else {
            fatal_in(op, "pointer this heap does not own", addr)
        };
        let mut desc = self.pagemap.entry(index).desc();
        if desc.kind() == Kind::Tail {
            index = tail_head(index, desc, addr);
            desc = self.pagemap.entry(index).desc();
        }
        match desc.kind() {
            Kind::Slab => {
                let head = index - desc.run() as usize;
                let Some(info) = self.classes.info.get(desc.class()) else {
                    fatal_in(op, "heap metadata corrupted: size class out of range", addr)
                };
                let offset = addr - self.pagemap.chunk_addr(head);
                if offset >= info.span_bytes as usize || !info.is_object_start(offset) {
                    fatal_in(op, "pointer is not the start of an object", addr);
                }
                Located::Slab {
                    head,
                    class: desc.class(),
                    owner: desc.owner(),
                }
            }
            Kind::Large if addr == self.pagemap.chunk_addr(index) => Located::Large {
                index,
                chunks: desc.run() as usize,
            },
            Kind::Large => fatal_in(op, "pointer inside a large object, not at its start", addr),
            Kind::Half => {
                let half = match addr - self.pagemap.chunk_addr(index) {
                    0 => LOW,
                    offset if offset == self.half_bytes => HIGH,
                    _ => fatal_in(op, "pointer is not the start of an object", addr),
                };
                if desc.half_used() & half == 0 {
                    fatal_in(op, "pointer is not allocated (double free?)", addr);
                }
                Located::Half { index, half }
            }
            Kind::Free if self.inside_large(index) => {
                fatal_in(op, "pointer inside a large object, not at its start", addr)
            }
            Kind::Free => fatal_in(op, "pointer is not allocated (double free?)", addr),
            _ => fatal_in(op, "pointer is not the start of an object", addr),
        }
    }

    /// Whether chunk `index`, described as free, is a chunk of a large
    /// object after its head (only heads are described): the nearest
    /// chunk below described as anything else is a large object's head
    /// whose run covers it. On the way to a fatal error only.
    #[cold]
    fn inside_large(&self, index: usize) -> bool {
        (0..index).rev().find_map(|i| {
            let d = self.pagemap.entry(i).desc();
            (d.kind() != Kind::Free)
                .then(|| d.kind() == Kind::Large && i + d.run() as usize > index)
        }) == Some(true)
    }

    /// Usable bytes of the allocation starting at `addr`. Reads only the
    /// pagemap and the class table, so it needs no allocator:
    /// `malloc_usable_size` calls it without finding the thread's one.
    ///
    /// ```text
    /// usable_size ── fast: pagemap entry is a slab chunk → its class's object_bytes
    ///   └─ usable_size_slow (cold) ── locate: tail chunks, large objects, misuse (fatal)
    /// ```
    ///
    /// A pointer into a slab is not checked to start an object (the slot
    /// check `free` and `realloc` make): this call writes nothing, so a
    /// wrong pointer cannot corrupt the heap here, and Redis calls it on
    /// every allocation and free, where the check was a third of its cost
    /// (47 against 31 instructions a call). Pointers outside the heap, into
    /// free chunks or inside large objects are still fatal errors.
    #[inline(always)]
    pub(crate) fn usable_size(&self, addr: usize) -> usize {
        if let Some(index) = self.pagemap.index_of(addr) {
            let desc = self.pagemap.entry(index).desc();
            if desc.kind() == Kind::Slab {
                // An out-of-range class (corrupted metadata) goes to
                // `locate`, which reports it.
                if let Some(info) = self.classes.info.get(desc.class()) {
                    return info.object_bytes as usize;
                }
            }
        }
        self.usable_size_slow(addr)
    }

    #[cold]
    #[inline(never)]
    fn usable_size_slow(&self, addr: usize) -> usize {
        self.usable_bytes(&self.locate(addr, "usable size"))
    }

    /// Usable bytes of a located block.
    fn usable_bytes(&self, located: &Located) -> usize {
        match *located {
            // `locate` checked the class is in range (0 is unreachable).
            Located::Slab { class, .. } => self
                .classes
                .info
                .get(class)
                .map_or(0, |info| info.object_bytes as usize),
            Located::Large { chunks, .. } => chunks << self.pagemap.chunk_shift,
            Located::Half { .. } => self.half_bytes,
        }
    }

    /// Takes an allocator from the pool (creating one if all are attached).
    ///
    /// An idle allocator may be held for a moment by a reclaimer or by a
    /// thread delivering frees to it (`busy`). Rather than wait for that
    /// thread, which may have been preempted, attach keeps it aside and
    /// takes the next idle one; only when every idle allocator is held does
    /// it back off (spin briefly, then yield) and try again. It also backs
    /// off, rather than fail, when the stack is empty and no allocator can
    /// be made (the pool is at its maximum, or there is no memory for one)
    /// while some allocator is out of the stack for a moment (set aside by
    /// another attach, or being detached), with a bound ([`Patience`]).
    pub(crate) fn attach(&self) -> Result<&AllocatorSlot, Error> {
        self.attach_with(&mut Patience::new(), false)
    }

    /// [`HeapInner::attach`] for one call: when no allocator can be made
    /// (the pool at its maximum, or no memory for one), it also waits
    /// (with the same bound) while some allocator is held for a call
    /// rather than kept by a thread, since such a holder lets go soon (see
    /// [`HeapInner::attach_for_thread`]). A plain attach does
    /// not: its caller may hold what it got for as long as it likes.
    pub(crate) fn attach_for_call(&self) -> Result<&AllocatorSlot, Error> {
        self.attach_with(&mut Patience::new(), true)
    }

    /// [`HeapInner::attach`] with the caller's [`Patience`], so that a
    /// caller that retries (`FixedGlobal`) waits within one bound in all;
    /// with `for_call`, as [`HeapInner::attach_for_call`].
    pub(crate) fn attach_with(
        &self,
        patience: &mut Patience,
        for_call: bool,
    ) -> Result<&AllocatorSlot, Error> {
        // The idle allocators found held, out of the idle stack until we
        // leave (so that the next pop finds another), chained through
        // their `next_idle` (id + 1, 0 ends), most recent first.
        let mut aside: Option<usize> = None;
        let put_back = |aside: &mut Option<usize>| {
            let mut cur = aside.take();
            while let Some(id) = cur {
                let next = self.pool.slot(id).shared.next_idle.load(Ordering::Relaxed);
                self.pool.push_idle(id);
                cur = (next != 0).then(|| next as usize - 1);
            }
        };
        let mut spins = 0u32;
        // Set once there was no memory for a new allocator (which ran a
        // reclaim): from then on only an idle allocator will do.
        let mut cannot_create = false;
        loop {
            if let Some(id) = self.pool.pop_idle() {
                let slot = self.pool.slot(id);
                if !slot.shared.busy.swap(true, Ordering::Acquire) {
                    self.pool.note_attached();
                    put_back(&mut aside);
                    // SAFETY: we hold `busy`, so `local` is ours alone.
                    unsafe { &mut *slot.local.get() }.on_attach();
                    return Ok(slot);
                }
                slot.shared
                    .next_idle
                    .store(aside.map_or(0, |a| a as u32 + 1), Ordering::Relaxed);
                aside = Some(id);
                continue;
            }
            if aside.is_some() {
                put_back(&mut aside);
                back_off(&mut spins);
                continue;
            }
            // No allocator to be had now. An idle one that another attach
            // holds aside (or one being detached) is only out of the stack
            // for a moment: wait for it rather than fail, once no new one
            // can be made.
            let error = if self.pool.created() >= self.pool.max() {
                if self.pool.has_idle() {
                    // Somebody detached while we looked.
                    continue;
                }
                Error::PoolExhausted {
                    max_allocators: self.pool.max(),
                }
            } else if !cannot_create {
                // The allocator's memory before its id: an id taken for an
                // allocator that cannot be made would be lost for good.
                let Some(index) = self.claim_allocator_run() else {
                    cannot_create = true;
                    continue;
                };
                let Some(id) = self.pool.new_id() else {
                    // Another thread took the last id meanwhile: look again.
                    self.backend.free_run(index, self.slot_chunks);
                    continue;
                };
                self.pool.note_attached();
                return Ok(self.create_allocator(id, index));
            } else {
                Error::OutOfMemory
            };
            // Wait for an allocator out of the stack for a moment, or (for
            // a call, with no allocator to be made) one held for a call by
            // a thread beyond the keeping limit.
            if self.pool.one_may_come_back(for_call) && patience.wait() {
                continue;
            }
            return Err(error);
        }
    }

    /// Attaches an allocator that the caller means to keep for long (a
    /// thread until it exits), unless threads keep as many as the pool
    /// allows already (`PoolExhausted` at once, without waiting): the rest
    /// of the pool is left for attaches of one call, so that a thread
    /// beyond the limit makes those and only ever waits for another
    /// thread's call.
    pub(crate) fn attach_for_thread(&self) -> Result<&AllocatorSlot, Error> {
        if !self.pool.try_keep() {
            return Err(Error::PoolExhausted {
                max_allocators: self.pool.max(),
            });
        }
        // A kept slot was free, so some allocator is not kept: it may be
        // held for a call, and comes back soon.
        match self.attach_for_call() {
            Ok(slot) => {
                // SAFETY: we hold `busy`, so `local` is ours alone.
                unsafe { &mut *slot.local.get() }.kept = true;
                Ok(slot)
            }
            Err(e) => {
                self.pool.unkeep();
                Err(e)
            }
        }
    }

    /// A run for a new allocator's metadata (reclaiming once if there is
    /// none, then waiting for room as an allocation does), or `None`.
    fn claim_allocator_run(&self) -> Option<usize> {
        let chunks = self.slot_chunks;
        // In a fixed region allocators go to the highest free chunks: made
        // while the heap is empty, they stack down from its top; made later,
        // each lands at the top end of the highest hole, next to the ones
        // made before it if there is room, rather than in the shortest
        // hole anywhere (best fit), which is often a chunk between two large
        // objects that it would keep from merging for the rest of the
        // heap's life. An OS reservation is mostly untouched address space:
        // there they go low, next to everything else.
        let claim = || {
            if self.os_owned {
                self.backend.alloc_run(chunks, 0)
            } else {
                self.backend.alloc_run_highest(chunks)
            }
        };
        claim()
            .or_else(|| {
                self.reclaim_others(Reclaim::IdleOwners { reclaimer: None });
                claim()
            })
            .or_else(|| {
                self.wait_for_room(false, || {
                    self.reclaim_others(Reclaim::IdleOwners { reclaimer: None });
                    claim()
                })
            })
    }

    /// The bounded wait of an allocation, or of an attach that needs a
    /// new allocator, that found no room even after a reclaim: while
    /// another thread is attached and not itself waiting, gives the
    /// processor away and makes `attempt` (a reclaim and a retry), for up
    /// to `Config::out_of_memory_wait_ms`; after a wait that found nothing,
    /// one more `attempt` (a thread whose detach ended the wait gave back
    /// what it held). Counted in `Stats::room_waits`. `attached`: the
    /// caller holds an allocator, so it is one of the waiters that
    /// `another_thread_may_free` counts against the attached threads (an
    /// attach that waits holds none).
    #[cold]
    #[inline(never)]
    pub(crate) fn wait_for_room<T>(
        &self,
        attached: bool,
        mut attempt: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        let ms = self.config.out_of_memory_wait_ms;
        if ms == 0 {
            return None;
        }
        if attached {
            self.room_waiters.fetch_add(1, Ordering::Relaxed);
        }
        let mut wait = BoundedWait::new(ms);
        let (mut found, mut waited) = (None, false);
        while self.another_thread_may_free() && wait.pause() {
            waited = true;
            found = attempt();
            if found.is_some() {
                break;
            }
        }
        if waited && found.is_none() {
            found = attempt();
        }
        if attached {
            self.room_waiters.fetch_sub(1, Ordering::Relaxed);
        }
        // Relaxed: statistics only.
        if waited {
            self.room_waits.fetch_add(1, Ordering::Relaxed);
            if found.is_none() {
                self.room_waits_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        found
    }

    /// Makes allocator `id` (a fresh id) in the run at `index` (from
    /// `claim_allocator_run`), attached to the caller.
    fn create_allocator(&self, id: usize, index: usize) -> &AllocatorSlot {
        let chunks = self.slot_chunks;
        self.pagemap.set_run(
            index,
            chunks,
            Desc::new(Kind::Meta, 0, id as u16, chunks as u32),
        );
        let slot = self.pagemap.chunk_addr(index) as *mut AllocatorSlot;
        // SAFETY: the run is ours, chunk-aligned (enough for AllocatorSlot)
        // and at least `size_of::<AllocatorSlot>()` bytes long.
        unsafe {
            core::ptr::addr_of_mut!((*slot).shared).write(Shared {
                inbox: CachePadded(Inbox::new()),
                next_idle: AtomicU32::new(0),
                busy: AtomicBool::new(true),
                counters: CachePadded(Counters {
                    live: AtomicIsize::new(0),
                    outgoing: AtomicUsize::new(0),
                    foreign: AtomicUsize::new(0),
                }),
                runs: CachePadded(RunCache::new()),
            });
            let shared = core::ptr::addr_of!((*slot).shared);
            core::ptr::addr_of_mut!((*slot).local).write(core::cell::UnsafeCell::new(
                Allocator::new(self, id as u16, shared),
            ));
        }
        self.pool.publish(id, slot);
        // SAFETY: initialised above; lives in heap metadata.
        unsafe { &*slot }
    }

    /// Returns an attached allocator to the pool.
    ///
    /// # Safety
    /// The caller must hold `slot`'s `busy` flag (have attached it) and not
    /// use it afterwards.
    pub(crate) unsafe fn detach(&self, slot: &AllocatorSlot) {
        // SAFETY: the caller holds `busy`.
        let local = unsafe { &mut *slot.local.get() };
        local.on_detach();
        let id = local.id();
        if core::mem::take(&mut local.kept) {
            self.pool.unkeep();
        }
        self.pool.note_detached();
        // Release pairs with the Acquire swap in `attach`.
        slot.shared.busy.store(false, Ordering::Release);
        // Frees posted while we held it, after `on_detach` drained.
        self.drain_if_idle(slot);
        self.pool.push_idle(id as usize);
    }

    /// Drains the inbox of `slot` if nobody holds it, and again as long as
    /// frees arrive while we do. Called by every thread that posts to an
    /// inbox or lets go of an idle allocator's `busy` flag, so an idle
    /// allocator does not keep frees (and the slabs they pin) until it is
    /// attached again: a thread that posts while another holds the flag,
    /// and the holder letting go, each fence and then read what the other
    /// wrote, so at least one of them sees the inbox not empty and the flag
    /// free (the store-buffering pattern; SeqCst fences). Never waits: a
    /// taken flag means its holder will look after it. Inside the fork gate,
    /// like every hold of an idle allocator; skipped while a fork is
    /// prepared (the frees wait for an attach or a reclaim). Lock-free, not
    /// wait-free: while other threads keep freeing to the allocator, the
    /// thread that holds it keeps draining (a loop that stopped early
    /// could leave the last post behind).
    pub(crate) fn drain_if_idle(&self, slot: &AllocatorSlot) {
        loop {
            fence(Ordering::SeqCst);
            if slot.shared.inbox.is_empty() || slot.shared.busy.load(Ordering::Relaxed) {
                return;
            }
            let Some(_inside) = self.fork_gate.try_enter() else {
                return;
            };
            if !hold_idle(slot, Allocator::accept_inbox) {
                return;
            }
        }
    }

    /// The most bytes of other allocators' objects an allocator being
    /// created, attached or detached, or taking a new slab, now may keep:
    /// `foreign_retain_bytes` while at least a `ROOM_SHARE`th of the
    /// heap's chunks are free, a `NEARLY_FULL_KEEP_SHARE`th of it when
    /// fewer are (a heap of fewer than `ROOM_SHARE` chunks is never nearly
    /// full). Kept objects make
    /// remote frees cheap (the freeing thread hands them out again, still
    /// in its cache), but those of a descheduled thread's allocator are
    /// out of every other thread's reach, with the slabs they hold; near a
    /// full region, room is worth more than speed. (An OS heap's
    /// reservation is its region: a 64 GiB one is never nearly full, one
    /// sized by the C library's `SNUGALLOC_HEAP_SIZE` may be. A thread
    /// that stays attached, as with `SnugAlloc`, meets the bound again at
    /// its allocator's new slabs.)
    pub(crate) fn foreign_limit_now(&self) -> usize {
        let bound = self.config.foreign_retain_bytes;
        let chunks = self.backend.chunks();
        let free = chunks.saturating_sub(self.backend.reserved_chunks());
        if free >= chunks / ROOM_SHARE {
            bound
        } else {
            bound / NEARLY_FULL_KEEP_SHARE
        }
    }

    /// Whether an allocation that found no room may wait for some (see
    /// `Config::out_of_memory_wait_ms`): a thread is attached that is not
    /// itself waiting, so it may free what is needed. Every waiter is
    /// attached, so this is false for a thread alone in its heap, and once
    /// every attached thread waits. In a forked child the allocators the
    /// parent's other threads held do not count (nobody will free through
    /// them). A racy read, as a hint must be.
    pub(crate) fn another_thread_may_free(&self) -> bool {
        self.pool.attached_here() > self.room_waiters.load(Ordering::Relaxed)
    }

    /// Drains and trims every allocator nobody is attached to, then takes
    /// the cached runs of every allocator, attached ones included (a thread
    /// descheduled in the middle of an ECall strands nothing in its cache).
    /// Two passes over the idle ones: the first sends home the foreign
    /// objects idle allocators keep (an idle owner frees them at once), so
    /// the second finds every slab they emptied.
    pub(crate) fn reclaim_others(&self, mode: Reclaim) {
        self.for_each_idle(|a| a.send_foreign_home(mode));
        self.drain_depot(mode);
        self.for_each_idle(|a| a.reclaim_own(mode));
        for id in 0..self.pool.created() {
            if let Some(slot) = self.pool.try_slot(id) {
                slot.shared
                    .runs
                    .drain(|start, n| self.backend.free_run(start, n));
            }
        }
    }

    /// Sends the depot's objects to their owners' inboxes (with
    /// [`Reclaim::IdleOwners`], those of owners nobody is attached to; the
    /// others go back to the depot). The pass over idle allocators that
    /// follows in `reclaim_others` drains their inboxes. Inside the fork
    /// gate, as that pass is: a fork while lists are out of the depot would
    /// leave them with no holder in the child; while a fork is prepared,
    /// nothing is drained.
    fn drain_depot(&self, mode: Reclaim) {
        let Some(_inside) = self.fork_gate.try_enter() else {
            return;
        };
        self.depot.drain(class_size, |class, list| {
            let (mut send, mut stay, mut staying) = (null_mut(), null_mut(), 0);
            let mut obj = list.head;
            while !obj.is_null() {
                // SAFETY: the drain gave us the list: free objects linked
                // through their first word.
                let next = unsafe { (*obj).next };
                let owner = self.owner_of_kept(obj);
                let idle = || {
                    // Relaxed: a hint; an owner attached a moment later
                    // finds the objects in its inbox.
                    !self
                        .pool
                        .slot(owner as usize)
                        .shared
                        .busy
                        .load(Ordering::Relaxed)
                };
                let to = if mode.sends(owner, idle) {
                    &mut send
                } else {
                    staying += 1;
                    &mut stay
                };
                // SAFETY: as above; the object moves to one of our lists.
                unsafe { (*obj).next = *to };
                *to = obj;
                obj = next;
            }
            self.post_home(send);
            let back = stay.is_null() || {
                // SAFETY: `stay` heads `staying` objects of the list, still
                // free objects of `class` kept in use by their slabs, ours.
                unsafe {
                    self.depot
                        .put(class, stay, staying, class_size(class), usize::MAX)
                }
            };
            if !back {
                // The class's slots were filled meanwhile.
                self.post_home(stay);
            }
        });
    }

    /// The owner of a kept object (one its slab counts as in use, so the
    /// slab keeps its owner).
    fn owner_of_kept(&self, obj: *mut FreeObject) -> u16 {
        let Some(index) = self.pagemap.index_of(obj as usize) else {
            fatal_in("reclaim", "kept object outside the heap", obj as usize)
        };
        let desc = self.pagemap.entry(index).desc();
        if !desc.is_slab() {
            fatal_in("reclaim", "kept object outside any slab", obj as usize)
        }
        desc.owner()
    }

    /// Posts the objects of the list at `head` (free objects kept in use by
    /// their slabs, which we hold) to their owners' inboxes, each run of one
    /// owner's objects as one batch.
    fn post_home(&self, head: *mut FreeObject) {
        let mut obj = head;
        while !obj.is_null() {
            let owner = self.owner_of_kept(obj);
            let (first, mut last, mut count) = (obj, obj, 1);
            loop {
                // SAFETY: the list links free objects through `next`.
                let next = unsafe { (*last).next };
                if next.is_null() || self.owner_of_kept(next) != owner {
                    obj = next;
                    break;
                }
                last = next;
                count += 1;
            }
            // SAFETY: `first..=last` are `count` objects of `owner`'s slabs,
            // linked, given up by us; the batch ends at `last`.
            unsafe {
                (*last).next = null_mut();
                self.pool
                    .slot(owner as usize)
                    .shared
                    .inbox
                    .post(first, last, count);
            }
            // An owner that let go meanwhile: as after any post.
            self.drain_if_idle(self.pool.slot(owner as usize));
        }
    }

    /// See [`Heap::trim`]; `reclaim` gives back what allocators hold
    /// unused.
    pub(crate) fn trim_after(&self, reclaim: impl FnOnce(&HeapInner)) -> usize {
        let before = self.backend.decommitted_chunks();
        reclaim(self);
        self.backend.purge_free();
        (self.backend.decommitted_chunks() - before) << self.pagemap.chunk_shift
    }

    /// See [`Heap::before_fork`].
    pub(crate) fn before_fork(&self) {
        // The backend's fork lock first: it also keeps a second forking
        // thread out until this fork is done, so one thread at a time
        // closes the gate.
        self.backend.lock_for_fork();
        self.fork_gate.close();
    }

    /// See [`Heap::after_fork`].
    ///
    /// # Safety
    /// As for [`Heap::after_fork`].
    pub(crate) unsafe fn after_fork(&self) {
        self.fork_gate.open();
        // SAFETY: the caller's contract.
        unsafe { self.backend.unlock_after_fork() }
    }

    /// See [`Heap::after_fork_in_child`].
    ///
    /// # Safety
    /// As for [`Heap::after_fork_in_child`].
    pub(crate) unsafe fn after_fork_in_child(&self) {
        self.fork_gate.reset_in_child();
        self.pool.recount_in_child();
        // Threads that were waiting for room do not exist here.
        self.room_waiters.store(0, Ordering::Relaxed);
        self.backend.reset_in_child();
        // SAFETY: the caller's contract.
        unsafe { self.backend.unlock_after_fork() }
    }

    /// Runs `f` on every allocator nobody is attached to, holding its
    /// `busy` flag meanwhile (skipping any that is taken). Does nothing
    /// while a fork is being prepared (the gate is closed): it may run
    /// inside an attach, which holds the gate, so it cannot wait for it.
    fn for_each_idle(&self, f: impl Fn(&mut Allocator)) {
        let Some(_inside) = self.fork_gate.try_enter() else {
            return;
        };
        for id in 0..self.pool.created() {
            let Some(slot) = self.pool.try_slot(id) else {
                continue;
            };
            if hold_idle(slot, &f) {
                // Frees posted while we held it.
                self.drain_if_idle(slot);
            }
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        let chunk = self.config.chunk_bytes;
        let reserved_chunks = self.backend.reserved_chunks();
        let meta_chunks = self.pool.created() * self.slot_chunks;
        let fixed = self.fixed_meta_view();
        let live: isize = (0..self.pool.created())
            .filter_map(|id| self.pool.try_slot(id))
            .map(|s| s.shared.counters.live.load(Ordering::Relaxed))
            .sum::<isize>()
            + self.detached_live.load(Ordering::Relaxed);
        let live = live.max(0) as usize;
        Stats {
            heap_bytes: self.region_bytes,
            chunk_bytes: chunk,
            reserved_bytes: fixed + reserved_chunks * chunk,
            peak_reserved_bytes: fixed + self.backend.peak_reserved_chunks() * chunk,
            live_bytes: live,
            // Stored back, so that a peak a reader saw is never lower later.
            // Relaxed: statistics only.
            peak_live_bytes: self.peak_live.fetch_max(live, Ordering::Relaxed).max(live),
            metadata_bytes: fixed + meta_chunks * chunk,
            free_bytes: (self.backend.chunks() - reserved_chunks) * chunk,
            allocators: self.pool.created(),
            room_waits: self.room_waits.load(Ordering::Relaxed),
            room_waits_failed: self.room_waits_failed.load(Ordering::Relaxed),
        }
    }

    /// Metadata in front of the chunks that counts as reserved: all of it
    /// for a fixed region; for an OS heap, whose metadata is committed only
    /// where touched, the header plus the pagemap and bitmaps of the chunks
    /// used so far.
    fn fixed_meta_view(&self) -> usize {
        if !self.os_owned {
            return self.fixed_meta_bytes;
        }
        let header = size_of::<HeapInner>() + self.pool.max() * 8;
        header + self.backend.high_water() * (size_of::<ChunkMeta>() + 1)
    }

    /// See [`Heap::write_layout`].
    fn write_layout(&self, out: &mut impl core::fmt::Write) -> core::fmt::Result {
        const LINE: usize = 128;
        // Chunks left of the run whose head was seen last.
        let (mut body, mut body_char) = (0usize, '#');
        for index in 0..self.pagemap.chunks {
            if index % LINE == 0 {
                if index > 0 {
                    out.write_char('\n')?;
                }
                write!(out, "{index:>7} ")?;
            }
            let d = self.pagemap.entry(index).desc();
            let c = match d.kind() {
                Kind::Slab => 's',
                Kind::Half => 'h',
                Kind::Large => {
                    (body, body_char) = ((d.run() as usize).saturating_sub(1), '#');
                    'L'
                }
                Kind::Meta => {
                    (body, body_char) = ((d.run() as usize).saturating_sub(1), 'M');
                    'M'
                }
                // A large object's other chunks stay described as free.
                _ if body > 0 => {
                    body -= 1;
                    body_char
                }
                Kind::Tail => '#',
                Kind::Free if self.backend.chunk_in_use(index) => 'c',
                Kind::Free => '.',
            };
            out.write_char(c)?;
        }
        out.write_char('\n')
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let mut rows = [ClassRow::default(); NUM_CLASSES];
        for (class, row) in rows.iter_mut().enumerate() {
            row.class = class;
            row.object_bytes = self.classes.info[class].object_bytes as usize;
        }
        let shift = self.pagemap.chunk_shift;
        let (mut large_objects, mut large_bytes, mut idle_bytes) = (0, 0, 0);
        let mut index = 0;
        let high = self.backend.high_water().min(self.pagemap.chunks);
        while index < high {
            let meta = self.pagemap.entry(index);
            let d = meta.desc();
            let mut step = 1;
            match d.kind() {
                Kind::Slab if d.run() == 0 => {
                    let info = &self.classes.info[d.class()];
                    step = info.slab_chunks as usize;
                    let row = &mut rows[d.class()];
                    let used =
                        (meta.used.load(Ordering::Relaxed) as usize).min(info.capacity as usize);
                    row.slab_count += 1;
                    row.slab_bytes += step << shift;
                    row.live_objects += used;
                    let idle = self
                        .pool
                        .try_slot(d.owner() as usize)
                        .is_some_and(|s| !s.shared.busy.load(Ordering::Relaxed));
                    if idle {
                        idle_bytes += (step << shift) - used * row.object_bytes;
                    }
                }
                Kind::Large => {
                    step = d.run() as usize;
                    large_objects += 1;
                    large_bytes += step << shift;
                }
                Kind::Half => {
                    // A two-object slab of the half size owned by nobody.
                    let row = &mut rows[class_of(self.half_bytes)];
                    row.slab_count += 1;
                    row.slab_bytes += 1 << shift;
                    row.live_objects += d.half_used().count_ones() as usize;
                }
                Kind::Meta => step = d.run() as usize,
                Kind::Slab | Kind::Free | Kind::Tail => {}
            }
            index += step.max(1);
        }
        for row in rows.iter_mut() {
            row.live_bytes = row.live_objects * row.object_bytes;
        }
        let slots = || (0..self.pool.created()).filter_map(|id| self.pool.try_slot(id));
        let remote_inbox: usize = slots().map(|s| s.shared.inbox.count()).sum();
        let remote_outgoing: usize = slots()
            .map(|s| s.shared.counters.outgoing.load(Ordering::Relaxed))
            .sum();

        let cached_chunks: usize = slots().map(|s| s.shared.runs.chunks()).sum();
        let depot_bytes = self.depot.bytes();
        let foreign_bytes: usize = slots()
            .map(|s| s.shared.counters.foreign.load(Ordering::Relaxed))
            .sum::<usize>()
            + depot_bytes;
        let free = self.backend.free_summary();
        let mut free_runs = [FreeRuns::default(); crate::backend::FREE_RUN_BUCKETS];
        for (b, row) in free_runs.iter_mut().enumerate() {
            *row = FreeRuns {
                min_bytes: 1 << (b + shift as usize),
                runs: free.runs[b],
                bytes: free.chunks[b] << shift,
            };
        }
        Snapshot {
            cached_bytes: cached_chunks << shift,
            foreign_bytes,
            depot_bytes,
            rows,
            large_objects,
            large_bytes,
            idle_bytes,
            remote_in_flight: remote_inbox + remote_outgoing,
            remote_outgoing,
            remote_inbox,
            largest_free_bytes: free.longest << shift,
            free_runs,
            stats: self.stats(),
        }
    }
}

/// A heap over one region: a fixed region the caller owns, or address space
/// reserved from the OS.
///
/// Threads use it through [`Heap::attach`]. Any attached handle may free
/// any block of the heap, whichever handle allocated it.
///
/// Invariant: `inner` points to the heap's state at the start of its own
/// region, valid until the `Heap` is dropped (which gives an OS
/// reservation back) or leaked.
pub struct Heap {
    inner: NonNull<HeapInner>,
}

// SAFETY: all shared state of HeapInner is atomics or behind locks and
// per-allocator busy flags.
unsafe impl Send for Heap {}
// SAFETY: as above.
unsafe impl Sync for Heap {}

impl Heap {
    /// Builds a heap over `[base, base + len)`, which it uses for everything,
    /// its own metadata included. Regions from 1 MiB up (smaller ones work
    /// down to a few chunks, with little room) to many GiB are supported.
    ///
    /// # Safety
    /// The region must be valid for reads and writes, used by nothing else,
    /// and outlive the heap and every pointer allocated from it.
    pub unsafe fn from_region(base: *mut u8, len: usize, config: Config) -> Result<Heap, Error> {
        // SAFETY: the caller's guarantees are the ones `create` needs.
        let inner = unsafe { HeapInner::create(base as usize, len, config, &FIXED_REGION, false)? };
        Ok(Heap { inner })
    }

    /// Builds a heap over `config.os_reserve_bytes` of fresh address space
    /// from the OS (halved until the OS agrees, down to 16 MiB, so that a
    /// process under a small address-space limit still gets a heap). Memory
    /// is committed when first touched and given back when chunks fall
    /// free.
    #[cfg(feature = "std")]
    pub fn from_os(config: Config) -> Result<Heap, Error> {
        config.validate()?;
        let mut bytes = config.os_reserve_bytes;
        let base = loop {
            if let Some(base) = crate::platform::reserve(bytes) {
                break base;
            }
            if bytes / 2 < MIN_OS_RESERVE_BYTES.min(config.os_reserve_bytes) {
                return Err(Error::OsReserveFailed { bytes });
            }
            // Whole chunks, as `os_reserve_bytes` must be.
            bytes = bytes / 2 / config.chunk_bytes * config.chunk_bytes;
        };
        // The configuration in force says what was reserved (`Heap::config`).
        let config = Config {
            os_reserve_bytes: bytes,
            ..config
        };
        // SAFETY: a fresh anonymous mapping: valid, zeroed, ours alone; it
        // is released only in `Drop`.
        match unsafe { HeapInner::create(base.as_ptr() as usize, bytes, config, &OS_REGION, true) }
        {
            Ok(inner) => Ok(Heap { inner }),
            Err(e) => {
                // SAFETY: the mapping made above, unused.
                unsafe { crate::platform::release(base.as_ptr(), bytes) };
                Err(e)
            }
        }
    }

    pub(crate) fn inner(&self) -> &HeapInner {
        // SAFETY: `inner` was created by `HeapInner::create` and lives until
        // this handle drops.
        unsafe { self.inner.as_ref() }
    }

    /// Never drops the heap, and returns its state for a `'static` front end.
    #[cfg(feature = "std")]
    pub(crate) fn leak(self) -> &'static HeapInner {
        let inner = self.inner;
        core::mem::forget(self);
        // SAFETY: forgotten above, so the region is never released.
        unsafe { inner.as_ref() }
    }

    /// Attaches an allocator from the pool to the caller: the most recently
    /// detached one, or a new one if all are attached. Costs a few atomic
    /// operations; takes no lock that allocation needs. When the pool can
    /// make no new allocator, it may wait (yielding) for one that another
    /// thread is detaching or holds for a moment. Drop the handle to
    /// detach.
    pub fn attach(&self) -> Result<Attached<'_>, Error> {
        self.inner().attach().map(|slot| self.handle(slot))
    }

    /// [`Heap::attach`] for one call (a thread that keeps no allocator,
    /// having been refused one by [`Heap::attach_for_thread`]): when no
    /// allocator can be made (the pool is at `max_allocators`, or there is
    /// no memory for one), it also waits, up to about a second, while some
    /// allocator is attached but not kept, which with the front ends means
    /// held by another thread for a call. [`Heap::attach`]
    /// waits only for one that is on its way back to the pool, since its
    /// callers may hold an allocator for as long as they like.
    pub fn attach_for_call(&self) -> Result<Attached<'_>, Error> {
        self.inner().attach_for_call().map(|slot| self.handle(slot))
    }

    /// [`Heap::attach`] for a handle the caller keeps for long, such as a
    /// thread's allocator kept until the thread exits. Threads may keep all
    /// allocators of the pool but a 64th of `max_allocators` (at least
    /// one); once that many are kept, this fails at
    /// once with [`Error::PoolExhausted`] (below the limit it may wait, as
    /// [`Heap::attach_for_call`] does), and the caller should use
    /// [`Heap::attach_for_call`] for each call instead: the allocators
    /// left over serve such calls, so any number of threads can allocate, each
    /// waiting at most for another thread's call. The C library and
    /// [`crate::SnugAlloc`] attach their threads this way.
    pub fn attach_for_thread(&self) -> Result<Attached<'_>, Error> {
        self.inner()
            .attach_for_thread()
            .map(|slot| self.handle(slot))
    }

    /// The handle of `slot`, which the caller has just attached.
    fn handle<'h>(&'h self, slot: &'h AllocatorSlot) -> Attached<'h> {
        Attached {
            heap: self.inner(),
            slot,
        }
    }

    /// Always-on counters (cheap; no allocation).
    pub fn stats(&self) -> Stats {
        self.inner().stats()
    }

    /// Per-size-class detail, computed by walking the pagemap (no allocation).
    pub fn snapshot(&self) -> Snapshot {
        self.inner().snapshot()
    }

    /// Drains the inboxes and trims the slabs of every allocator nobody is
    /// attached to, sends home the other allocators' objects they and the
    /// depot keep for reuse, and empties every allocator's run cache, so
    /// free memory returns to the backend. The heap does this by itself
    /// before it reports out of memory, except that it then sends home
    /// only kept objects whose owners nobody is attached to, or are the
    /// failing allocator (see `docs/architecture.md`, "The depot").
    pub fn reclaim(&self) {
        self.inner().reclaim_others(Reclaim::All);
    }

    /// [`Heap::reclaim`], then gives every free chunk that is still
    /// committed back to the OS at once, whatever the decommit policy
    /// would wait for (`malloc_trim`). Returns the bytes given back to the
    /// OS during the call (by any thread: a purge the reclaim set off
    /// counts too); always 0 for a fixed region, which is never
    /// decommitted. With chunks smaller than the OS page, the figure counts
    /// whole chunks though only the whole pages among them go back. Empty
    /// slabs of attached allocators stay theirs; [`Attached::trim`] trims
    /// the caller's too.
    pub fn trim(&self) -> usize {
        self.inner().trim_after(|h| h.reclaim_others(Reclaim::All))
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.inner().config
    }

    /// The size class that serves `size` in this heap, or `None` when it is
    /// served as a run of whole chunks. Sizes served by half chunks (see
    /// [`Config::half_chunks`]) give the class of half a chunk: a half chunk
    /// is a slab of two objects of that size, owned by no allocator.
    pub fn size_class_of(&self, size: usize) -> Option<usize> {
        let inner = self.inner();
        let classes = &inner.classes;
        if size <= classes.small_limit_bytes {
            Some(classes.serves[class_of(size)] as usize)
        } else {
            (size <= inner.half_bytes).then(|| class_of(inner.half_bytes))
        }
    }

    /// Takes the heap's internal lock, and waits until no thread holds an
    /// idle allocator for a moment (delivering frees to it or reclaiming
    /// it), so that a `fork()` copies neither; call from a `pthread_atfork`
    /// prepare handler, and call [`Heap::after_fork`] in the parent's
    /// handler and [`Heap::after_fork_in_child`] in the child's. Until then
    /// other threads' frees to idle allocators are posted to inboxes and
    /// their reclaims pass idle allocators by. In the child, allocators
    /// that other threads had attached (or were attaching) stay theirs
    /// (their free memory is lost to the child, never corrupted).
    pub fn before_fork(&self) {
        self.inner().before_fork();
    }

    /// Releases the lock taken by [`Heap::before_fork`].
    ///
    /// # Safety
    /// Must follow `before_fork` on this thread (or, in the child, on the
    /// thread that forked).
    pub unsafe fn after_fork(&self) {
        // SAFETY: the caller's contract.
        unsafe { self.inner().after_fork() }
    }

    /// [`Heap::after_fork`] for the child, which also puts right what the
    /// parent's other threads left half done: the chunk backend's index of
    /// free blocks and its count of claims in progress (see `backend.rs`),
    /// and the pool's count of attached allocators (those the parent's
    /// threads held count as attached for good); call it from the
    /// `pthread_atfork` child handler instead of `after_fork`.
    ///
    /// # Safety
    /// As for `after_fork`, and only in the child, before it starts any
    /// thread.
    pub unsafe fn after_fork_in_child(&self) {
        // SAFETY: the caller's contract.
        unsafe { self.inner().after_fork_in_child() }
    }

    /// Frees a C-style block ([`Attached::malloc`] and the like, whose
    /// usable size was counted) without an attached allocator: for a
    /// thread that cannot get one, because every allocator of the pool is
    /// attached or the heap has no room to make another. A chunk run or
    /// half chunk goes straight back; a slab object is posted to its
    /// owner's inbox, as another thread's free would be. `ptr` may be null.
    ///
    /// # Safety
    /// As for [`Attached::free`]: `ptr` must be null or a live block of
    /// this heap from [`Attached::malloc`] (or its C-style siblings), not
    /// used afterwards.
    pub unsafe fn free_detached(&self, ptr: *mut u8) {
        if !ptr.is_null() {
            // SAFETY: the caller's contract; the usable size was counted.
            unsafe { self.inner().free_detached(ptr, None) }
        }
    }

    /// Usable bytes of a block (at least what was asked for), found from
    /// the pagemap alone: no allocator need be attached.
    ///
    /// # Safety
    /// `ptr` must be a live block of this heap (a pointer outside the heap,
    /// into free chunks or inside a large object is reported as a fatal
    /// error; one inside a slab object is not detected).
    #[inline]
    pub unsafe fn usable_size(&self, ptr: *const u8) -> usize {
        self.inner().usable_size(ptr as usize)
    }

    /// Writes a map of the heap's chunks, one character per chunk and
    /// 128 to a line, each line starting with its first chunk's number:
    /// `.` free, `s` slab, `h` half chunk, `L` the first chunk of an object
    /// served as a chunk run and `#` its other chunks, `M` allocator
    /// metadata, `c` held but describing nothing (a cached run, or a claim
    /// in progress). A racy read, for finding where free space is cut up
    /// when a request fails; allocates nothing.
    pub fn write_layout(&self, out: &mut impl core::fmt::Write) -> core::fmt::Result {
        self.inner().write_layout(out)
    }

    /// Whether `ptr` lies in this heap's chunks.
    pub fn contains(&self, ptr: *const u8) -> bool {
        self.inner().pagemap.index_of(ptr as usize).is_some()
    }
}

impl Drop for Heap {
    fn drop(&mut self) {
        #[cfg(feature = "std")]
        {
            let inner = self.inner();
            if inner.os_owned {
                let (base, len) = (inner.region_base, inner.region_bytes);
                // SAFETY: an OS heap's region is the mapping made in
                // `from_os`; the borrow checker ensures no handle outlives
                // the heap.
                unsafe { crate::platform::release(base as *mut u8, len) };
            }
        }
    }
}

/// One allocator of a heap, attached to the caller until dropped.
///
/// It can be moved to another thread (it is `Send`), but used by one at a
/// time (it is not `Sync`: every method takes `&mut self` or reads only).
pub struct Attached<'h> {
    heap: &'h HeapInner,
    slot: &'h AllocatorSlot,
}

// SAFETY: the heap is shared between threads as `Heap` is (its shared
// state is atomics, locks and busy flags); the allocator's owner-only part
// belongs to whoever holds its `busy` flag, which this handle does, and
// the Acquire/Release of that flag at attach and detach already orders a
// handover between threads. Moving the handle moves that ownership; it is
// not `Sync`, so two threads never use it at once.
unsafe impl Send for Attached<'_> {}

impl Attached<'_> {
    #[inline(always)]
    fn local(&mut self) -> &mut Allocator {
        // SAFETY: an `Attached` holds its allocator's `busy` flag, so its
        // `local` part is ours alone; `&mut self` makes this the only borrow.
        unsafe { &mut *self.slot.local.get() }
    }

    /// Allocates a block for `layout`; null when the heap cannot serve it.
    /// A zero size is served as one byte.
    #[inline]
    pub fn alloc(&mut self, layout: Layout) -> *mut u8 {
        self.local().alloc::<false>(layout.size(), layout.align())
    }

    /// As [`Attached::alloc`], with the block zeroed. In a heap over OS
    /// memory, a run of chunks not used since the OS zeroed it is handed
    /// out as it is, so a large zeroed block costs no writes and stays
    /// uncommitted until used.
    pub fn alloc_zeroed(&mut self, layout: Layout) -> *mut u8 {
        self.local()
            .alloc_zeroed::<false>(layout.size(), layout.align())
    }

    /// Frees a block.
    ///
    /// # Safety
    /// `ptr` must have been returned by an allocation from this heap with
    /// this `layout` (by any attached handle), and not be used afterwards.
    #[inline]
    pub unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is the allocator's.
        unsafe { self.local().dealloc::<false>(ptr, layout.size()) }
    }

    /// Resizes a block to `new_size`, in place when its size class or chunk
    /// run allows; null (with the old block intact) on failure.
    ///
    /// # Safety
    /// As for [`Attached::dealloc`]; on success the old pointer must not be
    /// used unless it is the one returned.
    #[inline]
    pub unsafe fn realloc(&mut self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract is the allocator's.
        unsafe {
            self.local()
                .realloc::<false>(ptr, layout.size(), layout.align(), new_size)
        }
    }

    /// C-style allocation: 16-byte aligned, freed with [`Attached::free`]
    /// without a size. Live bytes count its usable size.
    #[inline]
    pub fn malloc(&mut self, size: usize) -> *mut u8 {
        self.local().alloc::<true>(size, MIN_ALIGN)
    }

    /// [`Attached::malloc`] with the block zeroed (`calloc`; see
    /// [`Attached::alloc_zeroed`]).
    pub fn malloc_zeroed(&mut self, size: usize) -> *mut u8 {
        self.local().alloc_zeroed::<true>(size, MIN_ALIGN)
    }

    /// C-style aligned allocation (`align` a power of two).
    pub fn malloc_aligned(&mut self, size: usize, align: usize) -> *mut u8 {
        if !align.is_power_of_two() {
            return null_mut();
        }
        self.local().alloc::<true>(size, align.max(MIN_ALIGN))
    }

    /// Frees a block from [`Attached::malloc`] or [`Attached::malloc_aligned`];
    /// null is ignored.
    ///
    /// # Safety
    /// `ptr` must be null or such a block, not used afterwards.
    #[inline]
    pub unsafe fn free(&mut self, ptr: *mut u8) {
        if !ptr.is_null() {
            // SAFETY: the caller's contract is the allocator's.
            unsafe { self.local().dealloc::<true>(ptr, 0) }
        }
    }

    /// C-style resize of a [`Attached::malloc`] block (keeps 16-byte
    /// alignment); null with the old block intact on failure.
    ///
    /// # Safety
    /// As for [`Attached::free`], and `ptr` must not be null.
    #[inline]
    pub unsafe fn resize(&mut self, ptr: *mut u8, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract is the allocator's.
        unsafe { self.local().realloc::<true>(ptr, 0, MIN_ALIGN, new_size) }
    }

    /// Usable bytes of a block (at least what was asked for).
    ///
    /// # Safety
    /// `ptr` must be a live block of this heap.
    pub unsafe fn usable_size(&mut self, ptr: *const u8) -> usize {
        self.local().usable_size(ptr)
    }

    /// [`Heap::trim`], after this allocator too gives back everything it
    /// holds that nothing uses (its empty slabs, cached runs, other
    /// allocators' objects it keeps, and the slabs that the objects idle
    /// allocators send home to it empty). Returns the bytes given back to
    /// the OS.
    pub fn trim(&mut self) -> usize {
        let heap = self.heap;
        let local = self.local();
        heap.trim_after(|_| local.reclaim_heap(Reclaim::All))
    }
}

impl<'h> Attached<'h> {
    /// Turns the handle into a raw pointer without detaching, for front
    /// ends that keep the thread's allocator in thread-local storage. Get
    /// the handle back with [`Attached::from_raw`] (and drop it to detach).
    pub fn into_raw(self) -> NonNull<u8> {
        let slot = NonNull::from(self.slot).cast();
        core::mem::forget(self);
        slot
    }

    /// Rebuilds a handle from [`Attached::into_raw`].
    ///
    /// # Safety
    /// `raw` must come from `into_raw` on a handle of `heap`, and at most one
    /// handle may exist for it at a time (wrap it in `ManuallyDrop` to use it
    /// without detaching).
    pub unsafe fn from_raw(heap: &'h Heap, raw: NonNull<u8>) -> Attached<'h> {
        Attached {
            heap: heap.inner(),
            // SAFETY: the caller guarantees `raw` is a slot of `heap`, which
            // lives in its metadata for `'h`.
            slot: unsafe { raw.cast::<AllocatorSlot>().as_ref() },
        }
    }
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        // SAFETY: we attached `slot` and never use it again.
        unsafe { self.heap.detach(self.slot) };
    }
}

/// Raw attach and detach for front ends that keep the allocator in TLS.
#[cfg(feature = "std")]
pub(crate) mod raw {
    use super::*;

    /// # Safety
    /// `slot` must have come from `heap.attach()` and be used by one thread
    /// at a time until passed to [`detach`].
    #[inline(always)]
    pub(crate) unsafe fn local<'a>(slot: *const AllocatorSlot) -> &'a mut Allocator {
        // SAFETY: the caller holds the slot's `busy` flag.
        unsafe { &mut *(*slot).local.get() }
    }

    /// # Safety
    /// As for [`HeapInner::detach`].
    pub(crate) unsafe fn detach(heap: &HeapInner, slot: *const AllocatorSlot) {
        // SAFETY: the caller's contract.
        unsafe { heap.detach(&*slot) }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    extern crate std;

    /// A heap with default settings over `region`.
    ///
    /// # Safety
    /// `region` must outlive the heap, and nothing else may use it meanwhile.
    unsafe fn heap_over(region: &mut [u8]) -> Heap {
        let len = region.len();
        // SAFETY: the caller's contract.
        unsafe { Heap::from_region(region.as_mut_ptr(), len, Config::for_region(len)) }
            .expect("valid region")
    }

    /// A heap over `region` whose pool holds at most `max` allocators.
    ///
    /// # Safety
    /// As for [`heap_over`].
    unsafe fn heap_over_with_max(region: &mut [u8], max: usize) -> Heap {
        let len = region.len();
        let config = Config {
            max_allocators: max,
            ..Config::for_region(len)
        };
        // SAFETY: the caller's contract.
        unsafe { Heap::from_region(region.as_mut_ptr(), len, config) }.expect("valid region")
    }

    /// Threads keep allocators only up to a reserve (a 64th of the pool,
    /// at least one): past it `attach_for_thread` fails at once, and the
    /// reserve serves calls, for which another thread's attach for a call
    /// waits rather than fail. Before the reserve, a thread that found
    /// every allocator kept by another could not allocate at all.
    #[test]
    fn threads_keep_allocators_only_up_to_a_reserve() {
        use crate::pool::keep_max;
        assert_eq!([1, 2, 64, 128, 16384].map(keep_max), [0, 1, 63, 126, 16128]);
        let mut region = std::vec![0u8; 4 << 20];
        // SAFETY: the region outlives the heap and is used by nothing else.
        let heap = unsafe { heap_over_with_max(&mut region, 4) };
        let mut kept: std::vec::Vec<_> = (0..3)
            .map(|_| heap.attach_for_thread().expect("below the keeping limit"))
            .collect();
        assert_eq!(
            heap.attach_for_thread().err(),
            Some(Error::PoolExhausted { max_allocators: 4 })
        );
        let call = heap.attach_for_call().expect("the reserve serves a call");
        assert!(
            heap.attach_for_thread().is_err(),
            "a call's allocator is not for keeping"
        );
        // A plain attach does not wait for an allocator held for a call
        // (its callers hold theirs as long as they like)...
        assert_eq!(
            heap.attach().err(),
            Some(Error::PoolExhausted { max_allocators: 4 })
        );
        // ... an attach for a call does.
        std::thread::scope(|s| {
            let waiter = s.spawn(|| heap.attach_for_call().map(drop).is_ok());
            std::thread::sleep(std::time::Duration::from_millis(50));
            drop(call);
            assert!(
                waiter.join().expect("no panic"),
                "an attach waits for the allocator held for a call"
            );
        });
        drop(kept.pop());
        let again = heap.attach_for_thread();
        assert!(again.is_ok(), "a kept allocator let go makes room");
        drop(again);
        drop(kept);
        assert_eq!(heap.stats().allocators, 4);
    }

    /// In a forked child, allocators other threads held at the fork never
    /// come back, whether kept or held for a call: an attach for a call
    /// must not wait its whole bound for them on every call (found by
    /// review: the child counted a lost call's allocator as coming back).
    #[test]
    fn a_forked_child_waits_for_no_allocator_it_lost() {
        let mut region = std::vec![0u8; 4 << 20];
        // SAFETY: the region outlives the heap and is used by nothing else.
        let heap = unsafe { heap_over_with_max(&mut region, 4) };
        let kept: std::vec::Vec<_> = (0..3)
            .map(|_| heap.attach_for_thread().expect("below the keeping limit"))
            .collect();
        let call = heap.attach_for_call().expect("the reserve");
        let pool = &heap.inner().pool;
        assert!(
            pool.one_may_come_back(true),
            "a call's allocator comes back"
        );
        // As the fork handler does in the child, where the threads holding
        // them do not exist.
        pool.recount_in_child();
        assert!(
            !pool.one_may_come_back(true),
            "nothing comes back in the child"
        );
        // Their holders are gone: never detach them (the Vec itself is
        // freed).
        let _ = call.into_raw();
        for a in kept {
            let _ = a.into_raw();
        }
    }

    /// In a forked child the allocators the parent's other threads held
    /// free nothing: an allocation of the forking thread about to fail
    /// does not wait for them (found by review: it waited its whole bound
    /// at every failure), but does wait for a thread the child starts.
    #[test]
    fn a_forked_child_waits_for_room_only_for_threads_it_has() {
        let mut region = std::vec![0u8; 4 << 20];
        // SAFETY: the region outlives the heap and is used by nothing else.
        let heap = unsafe { heap_over(&mut region) };
        // The forking thread's allocator and two other threads'.
        let kept: std::vec::Vec<_> = (0..3)
            .map(|_| heap.attach_for_thread().expect("an allocator"))
            .collect();
        let inner = heap.inner();
        // The forking thread, waiting for room.
        inner.room_waiters.fetch_add(1, Ordering::Relaxed);
        assert!(inner.another_thread_may_free(), "in the parent");
        // As the fork handler does in the child.
        inner.pool.recount_in_child();
        assert!(!inner.another_thread_may_free(), "nobody else in the child");
        let started = heap.attach_for_thread().expect("an allocator");
        assert!(
            inner.another_thread_may_free(),
            "a thread the child started"
        );
        inner.room_waiters.fetch_sub(1, Ordering::Relaxed);
        drop(started);
        // Their holders are gone: never detach them (the Vec itself is
        // freed).
        for a in kept {
            let _ = a.into_raw();
        }
    }

    /// Attaches while another thread puts allocator `id` back on the idle
    /// stack after 50 ms; the slot got.
    fn attach_while_it_comes_back(
        inner: &HeapInner,
        id: usize,
    ) -> Result<*const AllocatorSlot, Error> {
        std::thread::scope(|s| {
            let pool = &inner.pool;
            s.spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(50));
                pool.push_idle(id);
            });
            inner.attach().map(|slot| slot as *const AllocatorSlot)
        })
    }

    /// Attaches allocators `a` and `b`, lets `b` go, and pops it off the
    /// idle stack as another attach that found it held would keep it aside:
    /// `a` (still attached), `b`, and `b`'s id.
    fn attach_two_and_take_b_aside(
        inner: &HeapInner,
    ) -> (*const AllocatorSlot, *const AllocatorSlot, usize) {
        let a = inner.attach().expect("a") as *const AllocatorSlot;
        let b = inner.attach().expect("b") as *const AllocatorSlot;
        // SAFETY: attached to `b`.
        unsafe { inner.detach(&*b) };
        let id = inner.pool.pop_idle().expect("b is idle");
        (a, b, id)
    }

    /// An idle allocator that a helper holds for a moment (delivering
    /// frees, reclaiming) is passed over: attach takes the next idle one
    /// instead of waiting, and the held one is back in the pool after.
    #[test]
    fn attach_passes_over_an_idle_allocator_a_helper_holds() {
        let mut region = std::vec![0u8; 4 << 20];
        // SAFETY: `region` outlives the heap (declared first, dropped last)
        // and nothing else uses it.
        let heap = unsafe { heap_over(&mut region) };
        let inner = heap.inner();
        let a = inner.attach().expect("first") as *const AllocatorSlot;
        let b = inner.attach().expect("second") as *const AllocatorSlot;
        // SAFETY: we are attached to both.
        unsafe {
            inner.detach(&*a);
            inner.detach(&*b);
        }
        // `b` is on top of the idle stack; a helper holds it.
        // SAFETY: `b` is a live slot of this heap.
        let held = unsafe { &*b };
        assert!(!held.shared.busy.swap(true, Ordering::Acquire));
        let got = inner.attach().expect("an idle allocator") as *const AllocatorSlot;
        assert_eq!(got, a, "the free idle allocator, without waiting");
        held.shared.busy.store(false, Ordering::Release);
        let next = inner.attach().expect("the one the helper held") as *const AllocatorSlot;
        assert_eq!(next, b);
        assert_eq!(inner.pool.created(), 2, "no allocator was created");
        // SAFETY: we are attached to both.
        unsafe {
            inner.detach(&*got);
            inner.detach(&*next);
        }
    }

    /// An idle allocator that another attach holds aside (it found it held
    /// by a helper) is out of the stack for a moment. An attach that finds
    /// the stack empty meanwhile, in a pool that cannot grow, waits for it
    /// instead of failing with `PoolExhausted`.
    #[test]
    fn attach_waits_for_an_idle_allocator_another_attach_holds_aside() {
        let mut region = std::vec![0u8; 4 << 20];
        // SAFETY: `region` outlives the heap (declared first, dropped last)
        // and nothing else uses it.
        let heap = unsafe { heap_over_with_max(&mut region, 2) };
        let inner = heap.inner();
        let (a, b, id) = attach_two_and_take_b_aside(inner);
        let got = attach_while_it_comes_back(inner, id);
        assert_eq!(got.ok(), Some(b), "waited for `b`");
        // SAFETY: attached to both.
        unsafe {
            inner.detach(&*a);
            inner.detach(&*b);
        }
        assert_eq!(inner.pool.created(), 2);
    }

    /// An allocator that never comes back to the stack (as after a `fork`
    /// without the fork hooks): the attach waits a bounded time, then
    /// reports the error rather than hang.
    #[test]
    #[cfg_attr(miri, ignore = "waits a second of clock time")]
    fn attach_gives_up_on_an_allocator_that_never_comes_back() {
        let mut region = std::vec![0u8; 4 << 20];
        // SAFETY: `region` outlives the heap (declared first, dropped last)
        // and nothing else uses it.
        let heap = unsafe { heap_over_with_max(&mut region, 2) };
        let inner = heap.inner();
        let (a, _, _lost) = attach_two_and_take_b_aside(inner);
        let got = inner.attach().map(|_| ());
        assert_eq!(got, Err(Error::PoolExhausted { max_allocators: 2 }));
        // SAFETY: attached to `a`.
        unsafe { inner.detach(&*a) };
    }

    /// The same in a full heap where the pool could grow: no memory for a
    /// new allocator, so the attach waits for the one held aside instead of
    /// failing with `OutOfMemory`.
    #[test]
    fn attach_in_a_full_heap_waits_for_an_idle_allocator_held_aside() {
        let mut region = std::vec![0u8; 4 << 20];
        // SAFETY: `region` outlives the heap (declared first, dropped last)
        // and nothing else uses it.
        let heap = unsafe { heap_over(&mut region) };
        let inner = heap.inner();
        let (a, b, id) = attach_two_and_take_b_aside(inner);
        // Fill the heap from `a`.
        // SAFETY: attached to `a`.
        let local = unsafe { &mut *(*a).local.get() };
        let chunk = inner.config.chunk_bytes;
        let mut blocks = std::vec::Vec::new();
        loop {
            let p = local.alloc::<false>(chunk, 16);
            if p.is_null() {
                break;
            }
            blocks.push(p);
        }
        let got = attach_while_it_comes_back(inner, id);
        assert_eq!(got.ok(), Some(b), "waited for `b`");
        assert_eq!(inner.pool.created(), 2, "no allocator was created");
        for p in blocks {
            // SAFETY: live blocks of `chunk` bytes from `a`.
            unsafe { local.dealloc::<false>(p, chunk) };
        }
        // SAFETY: attached to both.
        unsafe {
            inner.detach(&*a);
            inner.detach(&*b);
        }
    }

    /// Two held idle allocators on top of the stack and a free one below:
    /// attach takes the free one without waiting (a version that kept only
    /// one aside went back and forth between the two held ones).
    #[test]
    fn attach_reaches_a_free_allocator_below_two_held_ones() {
        let mut region = std::vec![0u8; 8 << 20];
        // SAFETY: `region` outlives the heap (declared first, dropped last)
        // and nothing else uses it.
        let heap = unsafe { heap_over(&mut region) };
        let inner = heap.inner();
        let a = inner.attach().expect("a") as *const AllocatorSlot as usize;
        let b = inner.attach().expect("b") as *const AllocatorSlot as usize;
        let c = inner.attach().expect("c") as *const AllocatorSlot as usize;
        // SAFETY: attached to all three.
        unsafe {
            inner.detach(&*(a as *const AllocatorSlot));
            inner.detach(&*(b as *const AllocatorSlot));
            inner.detach(&*(c as *const AllocatorSlot));
        }
        // Stack: c, b, a. Helpers hold c and b.
        // SAFETY: `b` and `c` are live slots of this heap.
        let (hb, hc) = unsafe { (&*(b as *const AllocatorSlot), &*(c as *const AllocatorSlot)) };
        assert!(!hb.shared.busy.swap(true, Ordering::Acquire));
        assert!(!hc.shared.busy.swap(true, Ordering::Acquire));
        let done = std::sync::atomic::AtomicBool::new(false);
        let got = std::thread::scope(|s| {
            let ip = inner as *const HeapInner as usize;
            let done = &done;
            let t = s.spawn(move || {
                // SAFETY: the heap outlives the scope.
                let inner = unsafe { &*(ip as *const HeapInner) };
                let g = inner.attach().expect("attach") as *const AllocatorSlot as usize;
                done.store(true, Ordering::SeqCst);
                g
            });
            let t0 = std::time::Instant::now();
            // Long enough for a loaded machine to run the thread; a wait for
            // the held allocators would last until they are let go below.
            while !done.load(Ordering::SeqCst) && t0.elapsed() < std::time::Duration::from_secs(30)
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let waited = !done.load(Ordering::SeqCst);
            // Let the helpers go so that the attach (and the test) ends.
            hb.shared.busy.store(false, Ordering::Release);
            hc.shared.busy.store(false, Ordering::Release);
            (t.join().unwrap(), waited)
        });
        assert!(
            !got.1,
            "attach waited for the helpers although `a` was idle and free"
        );
        assert_eq!(got.0, a);
    }

    /// While a fork is prepared (`before_fork` to `after_fork`), no idle
    /// allocator is held by a thread delivering frees to it, although such
    /// frees stream in the whole time: a fork would copy the hold, and the
    /// child could wait for ever in attach. With the gate left out of
    /// `deliver`, this fails within a few hundred forks.
    #[test]
    fn no_idle_allocator_is_held_while_a_fork_is_prepared() {
        use std::sync::mpsc;
        // Under Miri, a short run of the same.
        let (mib, count) = if cfg!(miri) {
            (4, 2_000)
        } else {
            (32, 200_000)
        };
        let mut region = std::vec![0u8; mib << 20];
        let len = region.len();
        // No kept foreign objects and no depot: every remote free goes home
        // in batches.
        let config = Config {
            idle_retain_bytes: 0,
            foreign_retain_bytes: 0,
            depot_bytes: 0,
            ..Config::for_region(len)
        };
        // SAFETY: `region` outlives the heap (declared first, dropped last)
        // and nothing else uses it.
        let heap = unsafe { Heap::from_region(region.as_mut_ptr(), len, config) }.expect("valid");
        let layout = Layout::from_size_align(64, 16).expect("layout");
        let done = AtomicBool::new(false);
        // Fork preparations checked so far; the freer starts after the
        // first and pauses halfway for two more.
        let checks = AtomicUsize::new(0);
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let (blocks_tx, blocks_rx) = mpsc::channel::<std::vec::Vec<usize>>();
        std::thread::scope(|s| {
            let (heap, done, checks) = (&heap, &done, &checks);
            s.spawn(move || {
                // Attached before the owner detaches, so it is another
                // allocator, and every free below is a remote one.
                let mut mine = heap.attach().expect("the freer's allocator");
                ready_tx.send(()).expect("main waits");
                let blocks = blocks_rx.recv().expect("the owner's blocks");
                // Start once main is checking, so the two overlap.
                while checks.load(Ordering::SeqCst) == 0 {
                    std::hint::spin_loop();
                }
                let half = blocks.len() / 2;
                for (i, p) in blocks.into_iter().enumerate() {
                    if i == half {
                        // Halfway, with batches in flight: wait for two
                        // more checks, so that some surely fall in the
                        // middle of the frees.
                        let seen = checks.load(Ordering::SeqCst);
                        while checks.load(Ordering::SeqCst) < seen + 2 {
                            std::hint::spin_loop();
                        }
                    }
                    // SAFETY: a live block of this heap, freed once.
                    unsafe { mine.dealloc(p as *mut u8, layout) };
                }
                done.store(true, Ordering::SeqCst);
            });
            ready_rx.recv().expect("the freer attached");
            let mut owner = heap.attach().expect("the owner");
            let blocks: std::vec::Vec<usize> =
                (0..count).map(|_| owner.alloc(layout) as usize).collect();
            assert!(blocks.iter().all(|&p| p != 0), "the region holds them");
            let owner_slot = owner.slot as *const AllocatorSlot;
            drop(owner);
            blocks_tx.send(blocks).expect("the freer waits");
            // SAFETY: slots live as long as the heap.
            let owner_slot = unsafe { &*owner_slot };
            let inner = heap.inner();
            while !done.load(Ordering::SeqCst) {
                inner.before_fork();
                let held = owner_slot.shared.busy.load(Ordering::SeqCst);
                // SAFETY: `before_fork` ran on this thread.
                unsafe { inner.after_fork() };
                assert!(
                    !held,
                    "an idle allocator was held while a fork was prepared"
                );
                checks.fetch_add(1, Ordering::SeqCst);
            }
            std::println!("{} fork preparations", checks.load(Ordering::SeqCst));
        });
    }
}
