//! Pool: the allocators of one heap, and the stack of those not attached.
//!
//! Allocators are created on demand (only when every existing one is
//! attached), live in heap metadata and are never destroyed, so their ids
//! stay valid as slab owners. Detached allocators sit on a lock-free LIFO
//! stack, so attach reuses the most recently detached one (whose slabs and
//! caches are warmest). The stack head carries a tag that changes on every
//! update, so a pop that raced with a pop and push of the same allocator
//! (ABA) fails its compare-and-swap and retries.
//!
//! Invariants:
//! - `slots[i]` is non-null for every `i` an allocator was published with,
//!   and never changes afterwards; `created` ids above the last published
//!   one may still be null (being created, or failed).
//! - An allocator is on the idle stack at most once, and only while its
//!   `busy` flag is clear or held by a reclaimer.
//! - `attached` counts the allocators attached to a thread (incremented
//!   once an attach holds one, decremented before a detach pushes it), so
//!   `created - attached` allocators are on the idle stack, in an
//!   attacher's hands for a moment, or being created or detached.
//! - `kept` counts the allocators threads keep (attached with
//!   `HeapInner::attach_for_thread`, typically until the thread exits):
//!   raised before such an attach looks for one, lowered after it fails or
//!   before the kept allocator's detach pushes it; never above `keep_max`.
//!   So at least `max - keep_max` allocators are never kept, and serve
//!   the attaches of one call that threads beyond the keeping limit make
//!   (unless a caller of plain `Heap::attach` holds them, or a forked
//!   child lost them, which then counts them as kept).

use crate::allocator::AllocatorSlot;
use crate::platform::fatal;
use crate::sync::{spin_hint, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

/// The table of allocators and the idle stack.
///
/// Invariant: `slots` points to `max` atomics that live as long as the heap.
pub(crate) struct Pool {
    slots: *const AtomicPtr<AllocatorSlot>,
    max: usize,
    created: AtomicUsize,
    /// Allocators attached to a thread (see the module's invariants).
    attached: AtomicUsize,
    /// Tag in the high 32 bits, `id + 1` of the top allocator (0 = empty)
    /// in the low 32.
    idle: AtomicU64,
    /// Allocators kept by threads (see the module's invariants).
    kept: AtomicUsize,
    /// In a forked child, the allocators counted as attached for good:
    /// held by threads of the parent that do not exist here (see
    /// [`Pool::recount_in_child`]); 0 in a process that has not forked.
    /// An estimate: all but one of those attached at the fork, assuming
    /// the forking thread holds one. If it held none, the child counts one
    /// thread too many and its failing allocations wait their bound.
    lost: AtomicUsize,
    /// Most allocators threads may keep at once: `max` less a reserve.
    keep_max: usize,
}

// SAFETY: `slots` names atomics that live as long as the heap.
unsafe impl Sync for Pool {}
// SAFETY: as above.
unsafe impl Send for Pool {}

/// Threads may keep all allocators but a 64th of the pool (at least
/// one): a thread that finds them all kept attaches one of the rest for
/// each call, so more threads than `max_allocators` each wait only for
/// another thread's call, never fail.
const KEEP_RESERVE_SHARE: usize = 64;

/// Most allocators threads may keep in a pool of `max` (0 for a pool of
/// one: its allocator serves every thread one call at a time).
pub(crate) const fn keep_max(max: usize) -> usize {
    let reserve = max / KEEP_RESERVE_SHARE;
    max.saturating_sub(if reserve == 0 { 1 } else { reserve })
}

impl Pool {
    /// # Safety
    /// `slots` must be valid for `max` atomics, initialised to null, for as
    /// long as the pool lives.
    pub(crate) unsafe fn new(slots: *const AtomicPtr<AllocatorSlot>, max: usize) -> Pool {
        Pool {
            slots,
            max,
            created: AtomicUsize::new(0),
            attached: AtomicUsize::new(0),
            lost: AtomicUsize::new(0),
            idle: AtomicU64::new(0),
            kept: AtomicUsize::new(0),
            keep_max: keep_max(max),
        }
    }

    fn entry(&self, id: usize) -> &AtomicPtr<AllocatorSlot> {
        debug_assert!(id < self.max);
        // SAFETY: `id < max` (callers check against `created <= max`), and
        // the table lives as long as the pool.
        unsafe { &*self.slots.add(id) }
    }

    /// The allocator with id `id`, if it has been published.
    pub(crate) fn try_slot(&self, id: usize) -> Option<&AllocatorSlot> {
        if id >= self.max {
            return None;
        }
        // Acquire pairs with the Release store in `publish`.
        let p = self.entry(id).load(Ordering::Acquire);
        // SAFETY: published slots live in heap metadata as long as the heap.
        (!p.is_null()).then(|| unsafe { &*p })
    }

    /// The allocator with id `id`, which must be published (it owns a slab).
    #[inline]
    pub(crate) fn slot(&self, id: usize) -> &AllocatorSlot {
        match self.try_slot(id) {
            Some(s) => s,
            None => fatal("heap metadata corrupted: slab owner is no allocator", id),
        }
    }

    /// Ids handed out so far (some may not be published yet).
    pub(crate) fn created(&self) -> usize {
        self.created.load(Ordering::Relaxed).min(self.max)
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Reserves a new id, if the pool may grow.
    pub(crate) fn new_id(&self) -> Option<usize> {
        let mut n = self.created.load(Ordering::Relaxed);
        loop {
            if n >= self.max {
                return None;
            }
            match self
                .created
                .compare_exchange_weak(n, n + 1, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Some(n),
                Err(now) => n = now,
            }
        }
    }

    /// Makes a new allocator visible under `id`.
    pub(crate) fn publish(&self, id: usize, slot: *mut AllocatorSlot) {
        // Release pairs with the Acquire load in `try_slot`: whoever finds
        // the pointer sees the allocator initialised.
        self.entry(id).store(slot, Ordering::Release);
    }

    /// Counts an allocator attached to a thread.
    pub(crate) fn note_attached(&self) {
        self.attached.fetch_add(1, Ordering::Relaxed);
    }

    /// Allocators attached to a thread that exists in this process (a racy
    /// read): in a forked child, not those the parent's other threads held.
    pub(crate) fn attached_here(&self) -> usize {
        self.attached
            .load(Ordering::Acquire)
            .saturating_sub(self.lost.load(Ordering::Relaxed))
    }

    /// Counts an allocator let go by its thread (before it is pushed).
    /// Release: a thread waiting for room that sees the count fall (an
    /// Acquire load in [`Pool::attached_here`]) also sees what the detach
    /// gave back before it (its outgoing frees posted to inboxes).
    pub(crate) fn note_detached(&self) {
        self.attached.fetch_sub(1, Ordering::Release);
    }

    /// Counts an allocator a thread is about to keep, unless `keep_max`
    /// are kept already; returns whether it did.
    pub(crate) fn try_keep(&self) -> bool {
        let mut n = self.kept.load(Ordering::Relaxed);
        loop {
            if n >= self.keep_max {
                return false;
            }
            match self
                .kept
                .compare_exchange_weak(n, n + 1, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => n = now,
            }
        }
    }

    /// Uncounts a kept allocator (its attach failed, or it is detaching).
    pub(crate) fn unkeep(&self) {
        self.kept.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether an allocator will come back soon, so that an attach that
    /// found none should look again rather than fail: some allocator is
    /// not attached to a thread (set aside by an attacher that found it
    /// held, or on its way onto the stack or to its creator), or, with
    /// `calls`, some attached one is not kept by a thread (the caller, an
    /// attach for a call or for a thread, knows that the front ends that
    /// make those attach any other allocator for one call only). Read
    /// after a `pop_idle` that found the stack empty; the Acquire load of
    /// that `pop_idle` orders a detacher's count before its push. Racy, but
    /// `attached` is read once: a detacher lowers it between two reads of
    /// it, and two reads could see it both at `created` and at `kept`.
    /// With `calls` and the pool at its maximum it is always true in a
    /// process that has not forked, since `kept <= keep_max < max`; a
    /// forked child counts what it lost as kept (`recount_in_child`).
    pub(crate) fn one_may_come_back(&self, calls: bool) -> bool {
        let attached = self.attached.load(Ordering::Relaxed);
        attached < self.created.load(Ordering::Relaxed)
            || (calls && attached > self.kept.load(Ordering::Relaxed))
    }

    /// In a forked child, before it starts a thread: allocators that other
    /// threads of the parent held out of the stack are theirs for good, so
    /// count everything that is not on the stack as attached, and as kept:
    /// none of them comes back, so an attach for a call must not wait for
    /// one (it would wait its whole bound on every call), and a keep that
    /// was in progress in another thread is gone too.
    pub(crate) fn recount_in_child(&self) {
        let mut on_stack = 0;
        let mut top = self.idle.load(Ordering::Relaxed) as u32;
        while top != 0 && on_stack < self.max {
            on_stack += 1;
            top = self
                .slot((top - 1) as usize)
                .shared
                .next_idle
                .load(Ordering::Relaxed);
        }
        let attached = self.created().saturating_sub(on_stack);
        self.attached.store(attached, Ordering::Relaxed);
        self.kept.store(attached, Ordering::Relaxed);
        // All but one: the forking thread's own, if it holds one (as a
        // thread of the C library does once it has allocated), is here.
        self.lost
            .store(attached.saturating_sub(1), Ordering::Relaxed);
    }

    /// Whether some allocator is detached (racy).
    pub(crate) fn has_idle(&self) -> bool {
        self.idle.load(Ordering::Relaxed) as u32 != 0
    }

    /// Pops the most recently detached allocator.
    pub(crate) fn pop_idle(&self) -> Option<usize> {
        // Acquire pairs with the Release CAS in `push_idle`.
        let mut head = self.idle.load(Ordering::Acquire);
        loop {
            let top = head as u32;
            if top == 0 {
                return None;
            }
            let id = (top - 1) as usize;
            // Relaxed: a stale link is caught by the tagged CAS below.
            let next = self.slot(id).shared.next_idle.load(Ordering::Relaxed);
            let new = ((head >> 32) + 1) << 32 | u64::from(next);
            match self
                .idle
                .compare_exchange_weak(head, new, Ordering::Acquire, Ordering::Acquire)
            {
                Ok(_) => return Some(id),
                Err(now) => {
                    head = now;
                    spin_hint();
                }
            }
        }
    }

    /// Pushes a detached allocator.
    pub(crate) fn push_idle(&self, id: usize) {
        let slot = self.slot(id);
        let mut head = self.idle.load(Ordering::Relaxed);
        loop {
            slot.shared.next_idle.store(head as u32, Ordering::Relaxed);
            let new = ((head >> 32) + 1) << 32 | (id as u64 + 1);
            // Release pairs with the Acquire in `pop_idle`: the popper sees
            // the link and everything the detaching thread wrote.
            match self
                .idle
                .compare_exchange_weak(head, new, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }
}
