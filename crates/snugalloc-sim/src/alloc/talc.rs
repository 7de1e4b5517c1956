//! talc over the region: the `talc` crate's core allocator with a manual
//! source that claims the whole region once, behind one global lock
//! ([`super::locked`]).
//!
//! Reserved bytes: the extent (see [`super::extent`]); talc keeps its bin
//! heads at the start of the region, so they are inside the extent.

use std::alloc::Layout;

use talc::base::Talc;
use talc::source::Manual;
use talc::DefaultBinning;

use super::locked::{Locked, RawAlloc};
use crate::region::Region;

/// talc's allocator state.
pub struct TalcRaw(Talc<Manual, DefaultBinning>);

impl RawAlloc for TalcRaw {
    fn alloc(&mut self, layout: Layout) -> *mut u8 {
        // SAFETY: `layout` has a non-zero size (workloads never ask for 0).
        unsafe { self.0.allocate(layout) }.map_or(std::ptr::null_mut(), |p| p.as_ptr())
    }

    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller guarantees `ptr` came from this talc with
        // `layout` and is live (RawAlloc::dealloc contract).
        unsafe { self.0.deallocate(ptr, layout) }
    }
}

/// Claims `region` for a fresh talc.
pub fn build(label: String, region: Region) -> Result<Locked<TalcRaw>, String> {
    let mut talc = Talc::new(Manual);
    // SAFETY: the region is mapped read-write until `Locked` drops it, after
    // the talc (field order), and nothing else writes to it except through
    // blocks talc hands out.
    let claimed = unsafe { talc.claim(region.base(), region.len()) };
    if claimed.is_none() {
        return Err(format!(
            "talc could not claim a {} byte region",
            region.len()
        ));
    }
    Ok(Locked::new(label, TalcRaw(talc), region))
}
