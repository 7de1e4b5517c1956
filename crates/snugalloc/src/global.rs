//! Global front ends: [`SnugAlloc`], the `#[global_allocator]` over an OS
//! heap with one allocator per thread, and [`FixedGlobal`], a global over a
//! fixed region for `no_std` programs.
//!
//! `SnugAlloc` keeps the thread's allocator in a `const`-initialised
//! thread-local pointer. The first allocation of a thread attaches one from
//! the pool; a second thread-local with a destructor detaches it when the
//! thread exits. After that (other thread-local destructors may still
//! allocate) each call attaches and detaches around itself.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::null_mut;

use crate::config::{Config, Error};
use crate::heap::{Heap, HeapInner, Patience};
use crate::sync::{AtomicPtr, AtomicUsize, Ordering};

/// A fixed-region global allocator, initialised once with a region;
/// allocation before that returns null. Each call attaches an allocator
/// from the pool and detaches it afterwards (no thread-local storage is
/// needed), so concurrent threads still allocate in parallel.
///
/// State: `state` goes from uninitialised to busy (one `init` at a time)
/// and then to ready, or back to uninitialised if the region is refused;
/// `heap` is null until ready, then points for ever to the heap laid over
/// the region, which must live for the rest of the program.
///
/// ```no_run
/// use snugalloc::{Config, FixedGlobal};
/// #[global_allocator]
/// static HEAP: FixedGlobal = FixedGlobal::new();
/// static mut REGION: [u8; 4 << 20] = [0; 4 << 20];
/// fn main() {
///     // SAFETY: REGION is used by nothing else, for the whole program.
///     unsafe {
///         let base = core::ptr::addr_of_mut!(REGION).cast::<u8>();
///         HEAP.init(base, 4 << 20, Config::for_region(4 << 20)).expect("valid region");
///     }
/// }
/// ```
pub struct FixedGlobal {
    heap: AtomicPtr<HeapInner>,
    state: AtomicUsize,
}

const UNINIT: usize = 0;
const BUSY: usize = 1;
const READY: usize = 2;

impl FixedGlobal {
    /// An uninitialised global.
    pub const fn new() -> FixedGlobal {
        FixedGlobal {
            heap: AtomicPtr::new(null_mut()),
            state: AtomicUsize::new(UNINIT),
        }
    }

    /// Lays the heap over `[base, base + len)`. Fails (without touching the
    /// region) when called a second time, or while another call is in
    /// progress (`AlreadyInitialized` either way, even if that call then
    /// fails), or when the region or configuration is invalid.
    ///
    /// # Safety
    /// As for [`Heap::from_region`]; the region must live for the rest of
    /// the program.
    pub unsafe fn init(&self, base: *mut u8, len: usize, config: Config) -> Result<(), Error> {
        if self
            .state
            .compare_exchange(UNINIT, BUSY, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(Error::AlreadyInitialized);
        }
        // SAFETY: the caller's guarantees are `from_region`'s.
        match unsafe { Heap::from_region(base, len, config) } {
            Ok(heap) => {
                let inner: *const HeapInner = heap.inner();
                core::mem::forget(heap);
                // Release pairs with the Acquire load in `get`.
                self.heap.store(inner as *mut HeapInner, Ordering::Release);
                self.state.store(READY, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                self.state.store(UNINIT, Ordering::Release);
                Err(e)
            }
        }
    }

    fn get(&self) -> Option<&HeapInner> {
        // Acquire pairs with the Release store in `init`.
        let p = self.heap.load(Ordering::Acquire);
        // SAFETY: once stored, the heap lives (in its region) for the rest of
        // the program.
        (!p.is_null()).then(|| unsafe { &*p })
    }

    /// The heap's counters, once initialised.
    pub fn stats(&self) -> Option<crate::Stats> {
        self.get().map(HeapInner::stats)
    }

    /// The heap's per-class snapshot, once initialised.
    pub fn snapshot(&self) -> Option<crate::Snapshot> {
        self.get().map(HeapInner::snapshot)
    }
}

impl Default for FixedGlobal {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs `f` with an allocator attached for the duration of the call.
///
/// With every allocator of the pool attached (more threads inside this
/// global at once than `max_allocators`), each is held for one call only,
/// so it waits for one (spinning, then yielding) rather than fail, with a
/// bound ([`Patience`]), so that a call made inside another on the same
/// thread (a panic handler that allocates, without `std`) fails instead of
/// waiting for itself.
fn with_attached<R>(
    heap: &HeapInner,
    fail: R,
    f: impl FnOnce(&mut crate::allocator::Allocator) -> R,
) -> R {
    let mut patience = Patience::new();
    loop {
        match heap.attach_with(&mut patience, true) {
            Ok(slot) => {
                // SAFETY: we hold the slot from `attach` until `detach` below.
                let r = f(unsafe { &mut *slot.local.get() });
                // SAFETY: attached above, not used afterwards.
                unsafe { heap.detach(slot) };
                return r;
            }
            Err(Error::PoolExhausted { .. }) if patience.wait() => {}
            Err(_) => return fail,
        }
    }
}

// SAFETY: blocks come from the heap's allocators, which honour size and
// alignment and never hand out a block twice; the region outlives the
// program.
unsafe impl GlobalAlloc for FixedGlobal {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(heap) = self.get() else {
            return null_mut();
        };
        with_attached(heap, null_mut(), |a| {
            a.alloc::<false>(layout.size(), layout.align())
        })
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let Some(heap) = self.get() else {
            return null_mut();
        };
        with_attached(heap, null_mut(), |a| {
            a.alloc_zeroed::<false>(layout.size(), layout.align())
        })
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(heap) = self.get() else {
            crate::platform::fatal("free before the fixed heap was initialised", ptr as usize)
        };
        let freed = with_attached(heap, false, |a| {
            // SAFETY: GlobalAlloc's contract: `ptr` came from `alloc` with
            // `layout`.
            unsafe { a.dealloc::<false>(ptr, layout.size()) };
            true
        });
        if !freed {
            // No allocator to be had (all attached, or no room to make
            // one): a free must still succeed.
            // SAFETY: as above.
            unsafe { heap.free_detached(ptr, Some(layout.size())) };
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Some(heap) = self.get() else {
            return null_mut();
        };
        // SAFETY: GlobalAlloc's contract for `ptr` and `layout`.
        with_attached(heap, null_mut(), |a| unsafe {
            a.realloc::<false>(ptr, layout.size(), layout.align(), new_size)
        })
    }
}

#[cfg(feature = "std")]
pub use os_global::SnugAlloc;

#[cfg(feature = "std")]
mod os_global {
    use super::*;
    use crate::allocator::{AllocatorSlot, Reclaim};
    use crate::heap::raw;
    use crate::sync::spin_hint;
    use core::cell::Cell;

    /// The global allocator over an OS heap, one allocator per thread.
    ///
    /// ```no_run
    /// #[global_allocator]
    /// static GLOBAL: snugalloc::SnugAlloc = snugalloc::SnugAlloc;
    /// fn main() {
    ///     let v: Vec<u64> = (0..1000).collect();
    ///     assert_eq!(v.len(), 1000);
    /// }
    /// ```
    #[derive(Clone, Copy, Debug, Default)]
    pub struct SnugAlloc;

    static HEAP: AtomicPtr<HeapInner> = AtomicPtr::new(null_mut());
    static HEAP_STATE: AtomicUsize = AtomicUsize::new(UNINIT);

    /// Marks a thread whose allocator has been detached at exit.
    const DETACHED: *mut AllocatorSlot = 1 as *mut AllocatorSlot;

    std::thread_local! {
        static LOCAL: Cell<*mut AllocatorSlot> = const { Cell::new(null_mut()) };
        static GUARD: DetachOnExit = const { DetachOnExit };
        /// The heap this thread's `fork_prepare` readied for the fork it is
        /// making, for that fork's parent and child handlers (null: none).
        static FORK_PREPARED: Cell<*const HeapInner> = const { Cell::new(core::ptr::null()) };
    }

    struct DetachOnExit;

    impl Drop for DetachOnExit {
        fn drop(&mut self) {
            let slot = LOCAL.with(|l| l.replace(DETACHED));
            if let (false, Some(heap)) = (slot.is_null() || slot == DETACHED, heap()) {
                // SAFETY: this thread attached `slot` and stops using it now
                // (LOCAL says DETACHED).
                unsafe { raw::detach(heap, slot) };
            }
        }
    }

    /// The process's OS heap, created on first use.
    fn heap() -> Option<&'static HeapInner> {
        // Acquire pairs with the Release store below.
        let p = HEAP.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: published heaps are leaked: they live forever.
            return Some(unsafe { &*p });
        }
        init_heap()
    }

    #[cold]
    fn init_heap() -> Option<&'static HeapInner> {
        loop {
            match HEAP_STATE.compare_exchange(UNINIT, BUSY, Ordering::Acquire, Ordering::Acquire) {
                Ok(_) => {
                    let heap = Heap::from_os(Config::for_os()).ok().map(Heap::leak);
                    let p = heap.map_or(null_mut(), |h| h as *const HeapInner as *mut HeapInner);
                    // Release pairs with the Acquire loads in `heap`.
                    HEAP.store(p, Ordering::Release);
                    HEAP_STATE.store(if p.is_null() { UNINIT } else { READY }, Ordering::Release);
                    // The handlers go in after the heap is published and
                    // BUSY is released, so every fork that runs them finds
                    // the heap in its prepare handler. Registering takes
                    // the C library's atfork lock, which a fork holds while
                    // it runs prepare handlers; a prepare handler of another
                    // library that allocated through us then would spin on
                    // BUSY for ever if we registered while holding it. A
                    // fork by another thread between the two copies the heap
                    // unprepared (docs/architecture.md, "fork").
                    // Only the one thread that publishes a heap gets here
                    // with one (READY is never left), so this runs once.
                    if !p.is_null() {
                        // SAFETY: the three handlers are plain functions of
                        // this crate, loaded for the life of the process.
                        // Registering may allocate with the C library's
                        // malloc, not with us.
                        unsafe {
                            libc::pthread_atfork(
                                Some(fork_prepare),
                                Some(fork_parent),
                                Some(fork_child),
                            );
                        }
                    }
                    return heap;
                }
                Err(READY) => {
                    // SAFETY: READY is set after the heap is published.
                    return Some(unsafe { &*HEAP.load(Ordering::Acquire) });
                }
                Err(_) => spin_hint(),
            }
        }
    }

    /// The process heap if it exists (the fork handlers never create it).
    fn existing_heap() -> Option<&'static HeapInner> {
        // Acquire pairs with the Release store in `init_heap`.
        let p = HEAP.load(Ordering::Acquire);
        // SAFETY: published heaps are leaked: they live forever.
        (!p.is_null()).then(|| unsafe { &*p })
    }

    // `pthread_atfork` handlers, registered once the heap is published: a
    // fork from a threaded program copies no purge in progress and no
    // moment-long hold of an idle allocator (see `fork_gate`). The parent
    // and child handlers finish only what this fork's prepare handler
    // began, on the thread that began it.
    extern "C" fn fork_prepare() {
        prepare_fork(existing_heap());
    }

    /// Readies `heap`, if there is one, for the fork this thread is making,
    /// and remembers it for the parent and child handlers. `try_with`
    /// cannot fail for a constant thread-local with no destructor; if it
    /// did, nothing would be prepared, and the other handlers would find
    /// nothing to finish.
    fn prepare_fork(heap: Option<&HeapInner>) {
        let _ = FORK_PREPARED.try_with(|prepared| {
            if let Some(heap) = heap {
                heap.before_fork();
                prepared.set(heap);
            }
        });
    }

    /// The heap this thread's prepare handler readied, taken (so that a
    /// second look finds none).
    fn take_prepared() -> Option<*const HeapInner> {
        let p = FORK_PREPARED
            .try_with(|prepared| prepared.replace(core::ptr::null()))
            .unwrap_or(core::ptr::null());
        (!p.is_null()).then_some(p)
    }

    extern "C" fn fork_parent() {
        if let Some(heap) = take_prepared() {
            // SAFETY: `fork_prepare` stored a published heap, which is
            // leaked (it lives forever), and called `before_fork` on it on
            // this thread, for this fork.
            unsafe { (*heap).after_fork() };
        }
    }

    extern "C" fn fork_child() {
        if let Some(heap) = take_prepared() {
            // SAFETY: `fork_prepare` stored a published heap, which is
            // leaked, and called `before_fork` on it on the thread that
            // forked, the child's only thread, whose thread-locals the
            // child has.
            unsafe { (*heap).after_fork_in_child() };
        }
    }

    #[cfg(all(test, not(loom)))]
    mod fork_tests {
        use super::*;
        extern crate std;

        /// The handlers finish what their own prepare handler began and
        /// nothing else: a fork whose prepare handler found no heap
        /// releases none, and a prepared heap is released once.
        #[test]
        fn fork_handlers_finish_only_what_they_prepared() {
            let len = 4 << 20;
            let mut region = std::vec![0u8; len];
            // SAFETY: `region` outlives the heap (dropped after it, below),
            // and nothing else uses it.
            let heap =
                unsafe { Heap::from_region(region.as_mut_ptr(), len, Config::for_region(len)) }
                    .expect("valid region");
            prepare_fork(None);
            assert!(take_prepared().is_none(), "a heap no prepare handler saw");
            for _ in 0..2 {
                prepare_fork(Some(heap.inner()));
                let taken = take_prepared().expect("the prepared heap");
                assert!(core::ptr::eq(taken, heap.inner()));
                assert!(take_prepared().is_none(), "taken twice");
                // SAFETY: `prepare_fork` called `before_fork` on this heap
                // on this thread; the second round would wait forever if
                // this did not open the gate again.
                unsafe { heap.inner().after_fork() };
            }
            drop(heap);
            drop(region);
        }
    }

    /// The thread's attached allocator, attaching one on first use; null
    /// when the thread has exited its TLS or no allocator could be had.
    #[inline(always)]
    fn local_slot() -> *mut AllocatorSlot {
        LOCAL.try_with(Cell::get).unwrap_or(DETACHED)
    }

    #[cold]
    #[inline(never)]
    fn attach_thread() -> *mut AllocatorSlot {
        let Some(heap) = heap() else {
            return null_mut();
        };
        let Ok(slot) = heap.attach_for_thread() else {
            return null_mut();
        };
        let slot = slot as *const AllocatorSlot as *mut AllocatorSlot;
        if LOCAL.try_with(|l| l.set(slot)).is_err() || GUARD.try_with(|_| ()).is_err() {
            // TLS is being torn down: use the allocator for this call only.
            // LOCAL may hold it already (set, then GUARD refused): it must
            // not keep it once detached, or a later call would use an
            // allocator the pool hands to another thread.
            let _ = LOCAL.try_with(|l| l.set(DETACHED));
            // SAFETY: attached above; LOCAL no longer holds it.
            unsafe { raw::detach(heap, slot) };
            return null_mut();
        }
        slot
    }

    /// This thread's attached allocator, or null when it has none yet, or
    /// `DETACHED` after thread exit.
    #[inline(always)]
    fn attached() -> Option<&'static mut crate::allocator::Allocator> {
        let slot = local_slot();
        // SAFETY: LOCAL holds this thread's attached allocator when it is
        // neither null nor DETACHED; only this thread uses it.
        (slot as usize > DETACHED as usize).then(|| unsafe { raw::local(slot) })
    }

    /// Runs `f` when the thread has no allocator in LOCAL: attaches one
    /// (and keeps it) if the thread can still keep one, else attaches one
    /// for this call only.
    #[cold]
    #[inline(never)]
    fn without_local<R>(fail: R, f: impl FnOnce(&mut crate::allocator::Allocator) -> R) -> R {
        if local_slot().is_null() {
            let slot = attach_thread();
            if !slot.is_null() {
                // SAFETY: just attached and stored in LOCAL for this thread.
                return f(unsafe { raw::local(slot) });
            }
        }
        match heap() {
            Some(heap) => with_attached(heap, fail, f),
            None => fail,
        }
    }

    #[cold]
    #[inline(never)]
    fn alloc_cold(size: usize, align: usize) -> *mut u8 {
        without_local(null_mut(), |a| a.alloc::<false>(size, align))
    }

    /// Frees without the thread's allocator (its thread-local is gone or
    /// being set up).
    ///
    /// # Safety
    /// As for [`GlobalAlloc::dealloc`]: `ptr` came from this global with a
    /// layout of `size` bytes and is not used afterwards.
    #[cold]
    #[inline(never)]
    unsafe fn dealloc_cold(ptr: *mut u8, size: usize) {
        let freed = without_local(false, |a| {
            // SAFETY: the caller's GlobalAlloc contract for `ptr`.
            unsafe { a.dealloc::<false>(ptr, size) };
            true
        });
        if let (false, Some(heap)) = (freed, existing_heap()) {
            // No allocator to be had: the block still goes back.
            // SAFETY: as above.
            unsafe { heap.free_detached(ptr, Some(size)) };
        }
    }

    // SAFETY: blocks come from the heap's allocators, which honour size and
    // alignment and never hand out a block twice; the heap is never freed.
    unsafe impl GlobalAlloc for SnugAlloc {
        #[inline]
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            match attached() {
                Some(a) => a.alloc::<false>(layout.size(), layout.align()),
                None => alloc_cold(layout.size(), layout.align()),
            }
        }

        /// Large runs the OS zeroed and nobody used since are not written
        /// (see `Attached::alloc_zeroed`).
        #[inline]
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            let (size, align) = (layout.size(), layout.align());
            match attached() {
                Some(a) => a.alloc_zeroed::<false>(size, align),
                None => without_local(null_mut(), |a| a.alloc_zeroed::<false>(size, align)),
            }
        }

        #[inline]
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            match attached() {
                // SAFETY: GlobalAlloc's contract: `ptr` came from `alloc`
                // with `layout`.
                Some(a) => unsafe { a.dealloc::<false>(ptr, layout.size()) },
                // SAFETY: as above.
                None => unsafe { dealloc_cold(ptr, layout.size()) },
            }
        }

        #[inline]
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let (size, align) = (layout.size(), layout.align());
            match attached() {
                // SAFETY: GlobalAlloc's contract for `ptr` and `layout`.
                Some(a) => unsafe { a.realloc::<false>(ptr, size, align, new_size) },
                // SAFETY: as above.
                None => without_local(null_mut(), |a| unsafe {
                    a.realloc::<false>(ptr, size, align, new_size)
                }),
            }
        }
    }

    impl SnugAlloc {
        /// Counters of the process heap (`None` before its first allocation).
        pub fn stats() -> Option<crate::Stats> {
            let p = HEAP.load(Ordering::Acquire);
            // SAFETY: a published heap lives forever.
            (!p.is_null()).then(|| unsafe { &*p }.stats())
        }

        /// Per-size-class snapshot of the process heap.
        pub fn snapshot() -> Option<crate::Snapshot> {
            let p = HEAP.load(Ordering::Acquire);
            // SAFETY: a published heap lives forever.
            (!p.is_null()).then(|| unsafe { &*p }.snapshot())
        }

        /// Gives free memory back to the OS at once (`Heap::trim`): the
        /// calling thread's allocator, if it has one, and every idle one
        /// give back what they hold unused, then every free chunk still
        /// committed is decommitted. Returns the bytes given back; 0
        /// before the first allocation.
        pub fn trim() -> usize {
            let p = HEAP.load(Ordering::Acquire);
            if p.is_null() {
                return 0;
            }
            // SAFETY: a published heap lives forever.
            let heap = unsafe { &*p };
            match attached() {
                Some(a) => heap.trim_after(|_| a.reclaim_heap(Reclaim::All)),
                None => heap.trim_after(|h| h.reclaim_others(Reclaim::All)),
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    extern crate std;

    /// More threads than allocators inside a `FixedGlobal` at once: each
    /// waits for an allocator another call holds instead of failing.
    #[test]
    fn a_fixed_global_serves_more_threads_than_allocators() {
        static GLOBAL: FixedGlobal = FixedGlobal::new();
        let len = 4 << 20;
        let region = std::vec![0u8; len].leak();
        let config = Config {
            max_allocators: 1,
            ..Config::for_region(len)
        };
        // SAFETY: the region is leaked, so it lives for the rest of the
        // program, and nothing else uses it.
        unsafe { GLOBAL.init(region.as_mut_ptr(), len, config) }.expect("valid region");
        let layout = Layout::from_size_align(64, 8).expect("layout");
        let nulls = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..if cfg!(miri) { 50 } else { 20_000 } {
                        // SAFETY: a non-zero-size layout; the block is
                        // freed with it at once.
                        unsafe {
                            let p = GLOBAL.alloc(layout);
                            if p.is_null() {
                                nulls.fetch_add(1, Ordering::Relaxed);
                            } else {
                                GLOBAL.dealloc(p, layout);
                            }
                        }
                    }
                });
            }
        });
        assert_eq!(nulls.load(Ordering::Relaxed), 0, "allocations refused");
    }
}
