//! Extent: the reserved-bytes figure for region allocators that claim the
//! whole region up front (talc, rlsf, firstfit, bestfit).
//!
//! Those allocators have no notion of memory taken from the region: they own
//! all of it from the start. What matters to an enclave is how far into the
//! heap they reach, so their reserved bytes are defined as the *extent*: the
//! distance from the region base to the end of the highest live block,
//! rounded up to a 4 KiB page. It is what an sbrk-style heap would have to
//! hold to serve the same blocks at the same addresses. An allocator that
//! scatters blocks over the region (TLSF's good fit) shows a large extent even
//! when little is live; min-heap is the decisive figure for all of them.
//!
//! Invariant: `top_page` is one past the highest page whose `live_count` is
//! non-zero (0 when none), `published.current` holds `top_page * PAGE_BYTES`
//! and `published.peak` the highest value it has held.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The extent as the sampler reads it, without the adapter's lock.
#[derive(Debug, Default)]
pub struct Published {
    current: AtomicUsize,
    peak: AtomicUsize,
}

impl Published {
    /// The current extent in bytes.
    pub fn current(&self) -> usize {
        // Relaxed: a statistic; no data depends on it.
        self.current.load(Ordering::Relaxed)
    }

    /// The highest extent so far.
    pub fn peak(&self) -> usize {
        // Relaxed: as in `current`.
        self.peak.load(Ordering::Relaxed)
    }

    fn set(&self, bytes: usize) {
        // Relaxed: statistics; written under the adapter's lock only.
        self.current.store(bytes, Ordering::Relaxed);
        self.peak.fetch_max(bytes, Ordering::Relaxed);
    }
}

/// The granularity of the extent.
pub const PAGE_BYTES: usize = 4096;

/// Live-block counts per page of the region, keyed by each block's last byte.
#[derive(Debug)]
pub struct Extent {
    base: usize,
    live_count: Vec<u32>,
    top_page: usize,
}

impl Extent {
    /// A tracker for a region starting at `base` of `len` bytes.
    pub fn new(base: usize, len: usize) -> Extent {
        Extent {
            base,
            live_count: vec![0; len.div_ceil(PAGE_BYTES)],
            top_page: 0,
        }
    }

    fn page_of_last_byte(&self, ptr: *const u8, size: usize) -> usize {
        let last = (ptr as usize + size.max(1) - 1).saturating_sub(self.base);
        (last / PAGE_BYTES).min(self.live_count.len().saturating_sub(1))
    }

    /// Records a new live block and publishes the extent into `published`.
    pub fn on_alloc(&mut self, ptr: *const u8, size: usize, published: &Published) {
        let page = self.page_of_last_byte(ptr, size);
        self.live_count[page] += 1;
        if page + 1 > self.top_page {
            self.top_page = page + 1;
            published.set(self.top_page * PAGE_BYTES);
        }
    }

    /// Records a freed block and publishes the extent into `published`.
    pub fn on_free(&mut self, ptr: *const u8, size: usize, published: &Published) {
        let page = self.page_of_last_byte(ptr, size);
        debug_assert!(
            self.live_count[page] > 0,
            "extent: free of an untracked block at {ptr:p}"
        );
        self.live_count[page] = self.live_count[page].saturating_sub(1);
        if page + 1 == self.top_page && self.live_count[page] == 0 {
            while self.top_page > 0 && self.live_count[self.top_page - 1] == 0 {
                self.top_page -= 1;
            }
            published.set(self.top_page * PAGE_BYTES);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extent_follows_the_highest_live_block() {
        let published = Published::default();
        let mut e = Extent::new(0x10_0000, 1 << 20);
        let base = 0x10_0000 as *const u8;
        e.on_alloc(base, 100, &published);
        assert_eq!(published.current(), 4096);
        let high = base.wrapping_add(10 * 4096);
        e.on_alloc(high, 8192, &published);
        assert_eq!(published.current(), 12 * 4096);
        e.on_free(high, 8192, &published);
        assert_eq!(published.current(), 4096);
        e.on_free(base, 100, &published);
        assert_eq!(published.current(), 0);
        assert_eq!(published.peak(), 12 * 4096);
    }
}
