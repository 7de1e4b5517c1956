//! Locked: a single-threaded allocator over the region made usable by all
//! threads with one global lock, the way the baselines (talc, rlsf,
//! firstfit, bestfit) are deployed in an enclave.
//!
//! [`Locked`] composes any [`RawAlloc`] with the lock and the extent tracker
//! (see [`super::extent`]), so each baseline module only says how to
//! allocate and free. Every handle takes the same lock for every operation;
//! attach is free.
//!
//! Invariant: the raw allocator and the extent see exactly the same
//! sequence of live blocks (both are updated under the lock).

use std::alloc::Layout;
use std::sync::Mutex;

use super::extent::{Extent, Published};
use super::{Handle, Refused, RegionAlloc};
use crate::region::Region;

/// A single-threaded allocator over a region.
pub trait RawAlloc: Send {
    /// Allocates a block for `layout`; null when out of memory.
    fn alloc(&mut self, layout: Layout) -> *mut u8;

    /// Frees a block.
    ///
    /// # Safety
    ///
    /// `ptr` was returned by `alloc` on this allocator with `layout` and
    /// has not been freed since.
    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout);
}

struct State<R> {
    raw: R,
    extent: Extent,
}

/// A [`RawAlloc`] behind one lock, with its extent as reserved bytes.
pub struct Locked<R: RawAlloc> {
    label: String,
    state: Mutex<State<R>>,
    reserved: Published,
    // Declared last: the region is unmapped after the raw allocator (which
    // may point into it) is dropped.
    region: Region,
}

impl<R: RawAlloc> Locked<R> {
    /// Wraps `raw`, which manages `region`.
    pub fn new(label: String, raw: R, region: Region) -> Locked<R> {
        let extent = Extent::new(region.base() as usize, region.len());
        Locked {
            label,
            state: Mutex::new(State { raw, extent }),
            reserved: Published::default(),
            region,
        }
    }
}

struct LockedHandle<'a, R: RawAlloc>(&'a Locked<R>);

impl<R: RawAlloc> Handle for LockedHandle<'_, R> {
    fn alloc(&mut self, layout: Layout) -> *mut u8 {
        let l = self.0;
        let mut st = l.state.lock().unwrap_or_else(|e| e.into_inner());
        let p = st.raw.alloc(layout);
        if !p.is_null() {
            st.extent.on_alloc(p, layout.size(), &l.reserved);
        }
        p
    }

    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        let l = self.0;
        let mut st = l.state.lock().unwrap_or_else(|e| e.into_inner());
        st.extent.on_free(ptr, layout.size(), &l.reserved);
        // SAFETY: the caller guarantees (Handle::dealloc) that `ptr` came
        // from this allocator with `layout` and is live.
        unsafe { st.raw.dealloc(ptr, layout) };
    }
}

impl<R: RawAlloc> RegionAlloc for Locked<R> {
    fn label(&self) -> String {
        self.label.clone()
    }

    fn attach(&self) -> Result<Box<dyn Handle + '_>, Refused> {
        Ok(Box::new(LockedHandle(self)))
    }

    fn reserved_bytes(&self) -> usize {
        self.reserved.current()
    }

    fn peak_reserved_bytes(&self) -> Option<usize> {
        Some(self.reserved.peak())
    }

    fn region(&self) -> Option<&Region> {
        Some(&self.region)
    }
}
