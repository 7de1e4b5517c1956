//! Fork gate: keeps `fork()` from copying a moment when some thread holds
//! another allocator's `busy` flag for a moment.
//!
//! Besides the thread attached to it, an allocator's `busy` flag is taken
//! for a moment by a thread delivering frees to it while it is idle
//! (`allocator::deliver`) and by a reclaimer trimming idle allocators
//! (`HeapInner::for_each_idle`). A reclaim's drain of the depot
//! (`HeapInner::drain_depot`), which holds lists out of the depot for a
//! moment, is made inside the gate too, so that no list is held by a
//! thread the child does not have. (A thread taking a list for its own
//! kept objects is not gated, as attaches are not.) A `fork()` copies only the thread that
//! called it, so a flag taken that way at that moment would stay taken in
//! the child for ever: the allocator would be lost, and an attach that
//! finds only such allocators on the idle stack would retry without end.
//!
//! So those holds are made inside the gate, and the `pthread_atfork`
//! prepare handler ([`crate::Heap::before_fork`]) closes the gate and waits
//! until nobody is inside. While it is closed a delivery posts to the
//! owner's inbox instead and a reclaim skips the idle allocators (neither
//! ever waits: a reclaim may run inside an attach). The child, which has
//! one thread, resets it.
//!
//! Attaches are not gated: a fork in the middle of one loses, in the child,
//! the allocator being attached and any it had set aside, as it loses the
//! allocators other threads had attached, but nothing in the child waits
//! for them (the child handler counts every allocator that is not on the
//! idle stack as attached). Gating every attach would add two writes to one shared word
//! per attach, which in an enclave is every ECall.
//!
//! State: one word, the number of threads inside plus [`CLOSED`]. A thread
//! that finds the gate closed has already added itself, and takes itself
//! off again at once; the closer counts it while it does, so it waits for
//! it too.

use crate::sync::{AtomicUsize, CachePadded, Ordering};

/// Set in the state while the gate is closed.
const CLOSED: usize = 1 << (usize::BITS - 1);

/// See the module documentation.
pub(crate) struct ForkGate {
    state: CachePadded<AtomicUsize>,
}

/// A thread inside the gate; leaves it when dropped.
pub(crate) struct Inside<'g>(&'g ForkGate);

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        // Release: what we did inside happens before a closer that sees
        // the count drop (its Acquire load).
        self.0.state.fetch_sub(1, Ordering::Release);
    }
}

impl ForkGate {
    pub(crate) const fn new() -> ForkGate {
        ForkGate {
            state: CachePadded(AtomicUsize::new(0)),
        }
    }

    /// Enters the gate, or `None` if it is closed.
    #[inline]
    pub(crate) fn try_enter(&self) -> Option<Inside<'_>> {
        // Acquire pairs with the Release of `open`: a thread that enters
        // after a fork sees the heap as the forking thread left it.
        let before = self.state.fetch_add(1, Ordering::Acquire);
        let inside = Inside(self);
        (before & CLOSED == 0).then_some(inside)
    }

    /// Closes the gate and waits until every thread inside has left.
    ///
    /// Only one thread may close it at a time (the heap's fork lock, taken
    /// first, sees to that), and only that thread opens it again.
    pub(crate) fn close(&self) {
        // AcqRel: a thread that enters afterwards finds it closed.
        self.state.fetch_or(CLOSED, Ordering::AcqRel);
        let mut spins = 0u32;
        // Acquire pairs with the Release of each thread's leaving.
        while self.state.load(Ordering::Acquire) != CLOSED {
            crate::heap::back_off(&mut spins);
        }
    }

    /// Opens the gate closed by [`ForkGate::close`] on this thread (the
    /// parent's side of a fork).
    pub(crate) fn open(&self) {
        // Release pairs with the Acquire of later entries.
        self.state.fetch_and(!CLOSED, Ordering::Release);
    }

    /// Opens the gate in the child of a fork, whose one thread is the one
    /// that closed it: a thread of the parent may have been between finding
    /// it closed and taking itself off, and is not there to finish.
    pub(crate) fn reset_in_child(&self) {
        // Release pairs with the Acquire of later entries.
        self.state.store(0, Ordering::Release);
    }

    #[cfg(test)]
    fn inside(&self) -> usize {
        self.state.load(Ordering::Relaxed) & !CLOSED
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[test]
    fn a_closed_gate_turns_entries_away_until_it_opens() {
        let gate = ForkGate::new();
        {
            let _a = gate.try_enter().expect("open gate");
            let _b = gate.try_enter().expect("open gate");
            assert_eq!(gate.inside(), 2);
        }
        assert_eq!(gate.inside(), 0);
        gate.close();
        assert!(gate.try_enter().is_none());
        assert_eq!(gate.inside(), 0, "a turned-away entry takes itself off");
        gate.open();
        assert!(gate.try_enter().is_some());
        gate.close();
        gate.reset_in_child();
        assert!(gate.try_enter().is_some());
    }

    #[test]
    fn close_waits_for_the_threads_inside() {
        let gate = Arc::new(ForkGate::new());
        let left = Arc::new(AtomicBool::new(false));
        let inside = gate.try_enter().expect("open gate");
        let closer = {
            let (gate, left) = (Arc::clone(&gate), Arc::clone(&left));
            std::thread::spawn(move || {
                gate.close();
                // The entry below was still inside until `left` was set.
                assert!(left.load(Ordering::SeqCst));
                assert!(gate.try_enter().is_none());
                gate.open();
            })
        };
        // Wait until the closer has closed the gate (and is waiting for us).
        while let Some(entered) = gate.try_enter() {
            drop(entered);
            std::thread::yield_now();
        }
        left.store(true, Ordering::SeqCst);
        drop(inside);
        closer.join().expect("closer");
        assert!(gate.try_enter().is_some());
    }
}
