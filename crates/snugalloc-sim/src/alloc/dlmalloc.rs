//! dlmalloc over the region: the `dlmalloc` crate (a port of Doug Lea's
//! malloc 2.8.x) behind one global lock, growing through an sbrk-like bump
//! pointer over the region, which is how Open Enclave configures dlmalloc.
//!
//! The system-allocator side ([`Sbrk`]) hands out the region from its start
//! in requests of dlmalloc's granularity (64 KiB by default, or
//! `dlmalloc:granularity=`), and lets dlmalloc give back the top of the heap
//! when it trims (a negative sbrk).
//!
//! Reserved bytes: the bytes currently handed out by the sbrk, i.e. the
//! break minus the region base. Invariant: `base <= brk <= end`.
//!
//! One difference from Open Enclave's dlmalloc remains: the crate extends
//! its heap by the whole request rather than by what its free top lacks,
//! so its break runs ahead of the original's by up to the free top at
//! each extension (at most about one large request), and the reserved
//! figures read that much high. Only the end of the region is emulated
//! (see `Sbrk::alloc`).

use std::alloc::Layout;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dlmalloc::Dlmalloc;

use super::{Handle, Refused, RegionAlloc};
use crate::region::Region;

/// The sbrk over the region.
struct Sbrk {
    base: usize,
    end: usize,
    /// Current break; written only under the dlmalloc lock, read by the
    /// sampler.
    brk: Arc<AtomicUsize>,
    /// Highest break so far.
    peak: Arc<AtomicUsize>,
}

impl Sbrk {
    fn brk(&self) -> usize {
        // Relaxed: `brk` is only written under the dlmalloc lock, which the
        // caller holds; the sampler's reads are statistics.
        self.brk.load(Ordering::Relaxed)
    }
}

// SAFETY: `alloc` hands out only fresh, never-overlapping ranges of the
// region (the bump pointer only moves past what it returned, and moves back
// only over memory dlmalloc itself gave back via `free_part`/`free`); it
// never calls into dlmalloc.
unsafe impl dlmalloc::Allocator for Sbrk {
    /// Grants `size` bytes at the break, or what is left of the region if
    /// that is less (and not nothing). The `dlmalloc` crate asks for the
    /// whole request, where Doug Lea's dlmalloc over a contiguous sbrk (as
    /// in Open Enclave) asks only for what its free top lacks; granting the
    /// rest of the region lets the crate merge it with its top and serve
    /// the request if the two together suffice, as the original would.
    /// Without it, requests near the end of the region failed with enough
    /// room, and the min-heap came out up to one request too high.
    fn alloc(&self, size: usize) -> (*mut u8, usize, u32) {
        let brk = self.brk();
        let grant = size.min(self.end - brk);
        if grant == 0 {
            return (std::ptr::null_mut(), 0, 0);
        }
        let new = brk + grant;
        self.brk.store(new, Ordering::Relaxed);
        // Relaxed: a statistic, as `brk`.
        self.peak.fetch_max(new, Ordering::Relaxed);
        (brk as *mut u8, grant, 0)
    }

    fn remap(&self, _ptr: *mut u8, _oldsize: usize, _newsize: usize, _can_move: bool) -> *mut u8 {
        std::ptr::null_mut()
    }

    fn free_part(&self, ptr: *mut u8, oldsize: usize, newsize: usize) -> bool {
        let start = ptr as usize;
        if start + oldsize == self.brk() && newsize <= oldsize {
            self.brk.store(start + newsize, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    fn free(&self, ptr: *mut u8, size: usize) -> bool {
        let start = ptr as usize;
        if start >= self.base && start + size == self.brk() {
            self.brk.store(start, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    fn can_release_part(&self, _flags: u32) -> bool {
        true
    }

    fn allocates_zeros(&self) -> bool {
        false
    }

    fn page_size(&self) -> usize {
        4096
    }
}

/// dlmalloc over one region.
pub struct DlmallocRegion {
    label: String,
    heap: Mutex<Dlmalloc<Sbrk>>,
    brk: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    base: usize,
    region: Region,
}

impl DlmallocRegion {
    /// A fresh dlmalloc whose sbrk covers `region`.
    pub fn new(
        label: String,
        region: Region,
        granularity_bytes: Option<usize>,
    ) -> Result<Self, String> {
        let base = region.base() as usize;
        let brk = Arc::new(AtomicUsize::new(base));
        let peak = Arc::new(AtomicUsize::new(base));
        let sbrk = Sbrk {
            base,
            end: region.end_addr(),
            brk: Arc::clone(&brk),
            peak: Arc::clone(&peak),
        };
        let mut heap = Dlmalloc::new_with_allocator(sbrk);
        if let Some(g) = granularity_bytes {
            if !heap.set_granularity(g) {
                return Err(format!("dlmalloc rejected granularity {g}"));
            }
        }
        Ok(DlmallocRegion {
            label,
            heap: Mutex::new(heap),
            brk,
            peak,
            base,
            region,
        })
    }
}

struct DlHandle<'a>(&'a DlmallocRegion);

impl Handle for DlHandle<'_> {
    fn alloc(&mut self, layout: Layout) -> *mut u8 {
        let mut h = self.0.heap.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: non-zero size and a power-of-two alignment (a `Layout`).
        unsafe { h.malloc(layout.size(), layout.align()) }
    }

    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        let mut h = self.0.heap.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the caller guarantees `ptr` came from this dlmalloc with
        // `layout` and is live.
        unsafe { h.free(ptr, layout.size(), layout.align()) }
    }
}

impl RegionAlloc for DlmallocRegion {
    fn label(&self) -> String {
        self.label.clone()
    }
    fn attach(&self) -> Result<Box<dyn Handle + '_>, Refused> {
        Ok(Box::new(DlHandle(self)))
    }
    fn reserved_bytes(&self) -> usize {
        // Relaxed: a statistic; see `Sbrk::brk`.
        self.brk.load(Ordering::Relaxed) - self.base
    }
    fn peak_reserved_bytes(&self) -> Option<usize> {
        // Relaxed: a statistic.
        Some(self.peak.load(Ordering::Relaxed) - self.base)
    }
    fn region(&self) -> Option<&Region> {
        Some(&self.region)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Near the end of the region the crate asks for its whole request;
    /// the original dlmalloc would ask only for what its free top lacks.
    /// 700 KiB freed at the top and 324 KiB left unused serve 800 KiB in a
    /// 1 MiB region (found by review: it returned null).
    #[test]
    fn a_request_the_free_top_and_the_rest_of_the_region_hold_succeeds() {
        let region = Region::map(1 << 20).expect("map");
        let d = DlmallocRegion::new("dlmalloc".into(), region, None).expect("dlmalloc");
        let mut h = d.attach().expect("attach");
        let small = Layout::from_size_align(700 << 10, 16).expect("layout");
        let p = h.alloc(small);
        assert!(!p.is_null());
        // SAFETY: `p` is live, from this heap, with this layout.
        unsafe { h.dealloc(p, small) };
        let big = Layout::from_size_align(800 << 10, 16).expect("layout");
        let q = h.alloc(big);
        assert!(
            !q.is_null(),
            "the free top and the region's tail hold 800 KiB"
        );
        // SAFETY: as above.
        unsafe { h.dealloc(q, big) };
        let too_big = Layout::from_size_align(1 << 20, 16).expect("layout");
        assert!(
            h.alloc(too_big).is_null(),
            "a whole region's request cannot fit"
        );
    }
}
