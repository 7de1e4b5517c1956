//! firstfit and bestfit: the textbook reference points, an address-ordered
//! free list with immediate coalescing over the region, behind one lock.
//!
//! Every block, free or used, starts with a 16-byte header holding its total
//! size (header included). Free blocks also hold the offset of the next free
//! block. The free list is sorted by address. `alloc` takes the lowest block
//! that fits ([`Fit::First`]) or the smallest, the lowest of equals
//! ([`Fit::Best`]), and splits off its tail; `dealloc` walks the list to
//! the freed block's position and merges it with free neighbours. Both are
//! O(free blocks): memory-frugal and very slow, which is the point of having
//! them in the comparison. They are the two placement policies that studies
//! of real programs found to fragment least, so they bound what placement
//! alone can do on a workload.
//!
//! Invariants (checked by `check_invariants` in tests):
//! - free blocks are sorted by address, never overlap and never touch (a
//!   touching pair would have been merged);
//! - every block size is a multiple of [`UNIT_BYTES`] and at least
//!   [`MIN_BLOCK_BYTES`];
//! - alignment above 16 bytes is not supported (such requests get null).
//!
//! Reserved bytes: the extent (see [`super::extent`]).

use std::alloc::Layout;

use super::locked::{Locked, RawAlloc};
use crate::region::Region;

/// Header size and allocation unit.
pub const UNIT_BYTES: usize = 16;
/// Smallest block: a header and one unit of payload.
pub const MIN_BLOCK_BYTES: usize = 2 * UNIT_BYTES;
/// End-of-list marker.
const NIL: usize = usize::MAX;

/// Which free block an allocation takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// The lowest that is large enough (address-ordered first fit).
    First,
    /// The smallest that is large enough, the lowest of equals
    /// (address-ordered best fit).
    Best,
}

/// The free list over a region (addresses are offsets from `base`).
pub struct FreeList {
    base: *mut u8,
    len: usize,
    head: usize,
    fit: Fit,
}

// SAFETY: the list is only a description of memory in the region; it is
// always used under the adapter's lock.
unsafe impl Send for FreeList {}

impl FreeList {
    /// A list whose one free block is the whole of `base .. base + len`,
    /// placing allocations by `fit`.
    ///
    /// # Safety
    ///
    /// `base` is 16-byte aligned, `base .. base + len` is writable memory that
    /// nothing else uses for the life of the list, and `len >= MIN_BLOCK_BYTES`.
    pub unsafe fn new(base: *mut u8, len: usize, fit: Fit) -> FreeList {
        debug_assert!(base as usize % UNIT_BYTES == 0 && len >= MIN_BLOCK_BYTES);
        let len = len / UNIT_BYTES * UNIT_BYTES;
        let mut list = FreeList {
            base,
            len,
            head: 0,
            fit,
        };
        list.set_size(0, len);
        list.set_next(0, NIL);
        list
    }

    fn word(&self, off: usize, index: usize) -> *mut usize {
        debug_assert!(off + 16 <= self.len);
        self.base
            .wrapping_add(off)
            .cast::<usize>()
            .wrapping_add(index)
    }
    fn size(&self, off: usize) -> usize {
        // SAFETY: `off` is a block start inside the region (list invariant),
        // 16-byte aligned, so its header words are in bounds and aligned.
        unsafe { self.word(off, 0).read() }
    }
    fn set_size(&mut self, off: usize, size: usize) {
        // SAFETY: as in `size`.
        unsafe { self.word(off, 0).write(size) }
    }
    fn next(&self, off: usize) -> usize {
        // SAFETY: as in `size`; `off` is a free block, whose second word is
        // its next link.
        unsafe { self.word(off, 1).read() }
    }
    fn set_next(&mut self, off: usize, next: usize) {
        // SAFETY: as in `next`.
        unsafe { self.word(off, 1).write(next) }
    }
    fn set_link(&mut self, prev: usize, next: usize) {
        if prev == NIL {
            self.head = next;
        } else {
            self.set_next(prev, next);
        }
    }

    /// Allocates a block for `layout`; null when nothing fits.
    pub fn alloc(&mut self, layout: Layout) -> *mut u8 {
        if layout.align() > UNIT_BYTES {
            return std::ptr::null_mut();
        }
        let Some(need) = layout
            .size()
            .checked_add(UNIT_BYTES + UNIT_BYTES - 1)
            .map(|n| (n / UNIT_BYTES * UNIT_BYTES).max(MIN_BLOCK_BYTES))
        else {
            return std::ptr::null_mut();
        };
        let Some((prev, cur)) = self.find(need) else {
            return std::ptr::null_mut();
        };
        let (size, next) = (self.size(cur), self.next(cur));
        if size - need >= MIN_BLOCK_BYTES {
            let rest = cur + need;
            self.set_size(rest, size - need);
            self.set_next(rest, next);
            self.set_link(prev, rest);
            self.set_size(cur, need);
        } else {
            self.set_link(prev, next);
        }
        self.base.wrapping_add(cur + UNIT_BYTES)
    }

    /// The free block an allocation of `need` bytes (header included)
    /// takes, by the list's policy, with the free block before it (`NIL`
    /// if it heads the list).
    fn find(&self, need: usize) -> Option<(usize, usize)> {
        let (mut prev, mut cur) = (NIL, self.head);
        let mut best: Option<(usize, usize, usize)> = None; // (size, prev, block)
        while cur != NIL {
            let size = self.size(cur);
            if size >= need {
                match self.fit {
                    Fit::First => return Some((prev, cur)),
                    Fit::Best if size == need => return Some((prev, cur)),
                    Fit::Best => {
                        // Strictly smaller: the lowest of equals stays.
                        if best.map_or(true, |(b, _, _)| size < b) {
                            best = Some((size, prev, cur));
                        }
                    }
                }
            }
            prev = cur;
            cur = self.next(cur);
        }
        best.map(|(_, prev, block)| (prev, block))
    }

    /// Frees the block whose payload starts at `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` was returned by `alloc` on this list and not freed since.
    pub unsafe fn dealloc(&mut self, ptr: *mut u8) {
        let off = ptr as usize - self.base as usize - UNIT_BYTES;
        let mut size = self.size(off);
        debug_assert!(
            size >= MIN_BLOCK_BYTES && off + size <= self.len,
            "firstfit: bad block {ptr:p}"
        );
        let (mut prev, mut next) = (NIL, self.head);
        while next != NIL && next < off {
            prev = next;
            next = self.next(next);
        }
        debug_assert!(next != off, "firstfit: double free of {ptr:p}");
        // Merge with the following free block.
        let mut link = next;
        if next != NIL && off + size == next {
            size += self.size(next);
            link = self.next(next);
        }
        // Merge with the preceding free block, or link in.
        if prev != NIL && prev + self.size(prev) == off {
            let merged = self.size(prev) + size;
            self.set_size(prev, merged);
            self.set_next(prev, link);
        } else {
            self.set_size(off, size);
            self.set_next(off, link);
            self.set_link(prev, off);
        }
    }

    /// Total free bytes and free-block count.
    pub fn free_totals(&self) -> (usize, usize) {
        let (mut bytes, mut count, mut cur) = (0, 0, self.head);
        while cur != NIL {
            bytes += self.size(cur);
            count += 1;
            cur = self.next(cur);
        }
        (bytes, count)
    }

    /// Checks the list invariants; panics with the offending offsets.
    pub fn check_invariants(&self) {
        let (mut cur, mut last_end) = (self.head, None::<usize>);
        while cur != NIL {
            let size = self.size(cur);
            assert!(
                size >= MIN_BLOCK_BYTES && size % UNIT_BYTES == 0,
                "block {cur:#x} size {size}"
            );
            assert!(
                cur + size <= self.len,
                "block {cur:#x}+{size} past the region"
            );
            if let Some(end) = last_end {
                assert!(
                    cur > end,
                    "free blocks unsorted or touching at {cur:#x} (previous end {end:#x})"
                );
            }
            last_end = Some(cur + size);
            cur = self.next(cur);
        }
    }
}

impl RawAlloc for FreeList {
    fn alloc(&mut self, layout: Layout) -> *mut u8 {
        FreeList::alloc(self, layout)
    }

    unsafe fn dealloc(&mut self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: the caller guarantees `ptr` came from this list and is live.
        unsafe { FreeList::dealloc(self, ptr) }
    }
}

/// A free list covering `region` placing by `fit`, behind one lock.
pub fn build(label: String, region: Region, fit: Fit) -> Result<Locked<FreeList>, String> {
    if region.len() < MIN_BLOCK_BYTES {
        return Err(format!("region too small for {label}"));
    }
    // SAFETY: the region is 2 MiB aligned, writable, used by nobody else and
    // outlives the list (`Locked` drops the region after the list).
    let list = unsafe { FreeList::new(region.base(), region.len(), fit) };
    Ok(Locked::new(label, list, region))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn alloc_free_coalesces_back_to_one_block() {
        for fit in [Fit::First, Fit::Best] {
            let region = Region::map(1 << 20).expect("map");
            // SAFETY: a fresh region used by nothing else.
            let mut list = unsafe { FreeList::new(region.base(), region.len(), fit) };
            let mut rng = Rng::new(3);
            let mut live = Vec::new();
            for i in 0..5000 {
                if live.is_empty() || rng.chance(0.6) {
                    let layout = Layout::from_size_align(1 + rng.below(2000), 16).expect("layout");
                    let p = list.alloc(layout);
                    if !p.is_null() {
                        assert!(region.contains(p, layout.size()));
                        live.push(p);
                    }
                } else {
                    let p = live.swap_remove(rng.below(live.len()));
                    // SAFETY: `p` is live and from this list.
                    unsafe { list.dealloc(p) };
                }
                if i % 500 == 0 {
                    list.check_invariants();
                }
            }
            for p in live {
                // SAFETY: as above.
                unsafe { list.dealloc(p) };
            }
            list.check_invariants();
            assert_eq!(list.free_totals(), (region.len(), 1), "{fit:?}");
        }
    }

    /// Holes of 4 KiB, 1 KiB, 2 KiB and 2 KiB (headers included), in that
    /// order by address: first fit takes the lowest that fits, best fit the
    /// smallest, the lower of equals.
    #[test]
    fn first_fit_takes_the_lowest_hole_and_best_fit_the_smallest() {
        let block = |payload: usize| Layout::from_size_align(payload, 16).expect("layout");
        // (payload asked, which hole first fit takes, which best fit takes)
        for (payload, first, best) in [(984, 0, 1), (1500, 0, 2), (3000, 0, 0)] {
            for fit in [Fit::First, Fit::Best] {
                let region = Region::map(1 << 20).expect("map");
                // SAFETY: a fresh region used by nothing else.
                let mut list = unsafe { FreeList::new(region.base(), region.len(), fit) };
                let mut holes = Vec::new();
                for hole in [4096, 1024, 2048, 2048] {
                    holes.push(list.alloc(block(hole - UNIT_BYTES)));
                    // A fence, so the holes do not merge.
                    assert!(!list.alloc(block(16)).is_null());
                }
                for &h in &holes {
                    assert!(!h.is_null());
                    // SAFETY: live and from this list.
                    unsafe { list.dealloc(h) };
                }
                list.check_invariants();
                let want = if fit == Fit::First { first } else { best };
                assert_eq!(
                    list.alloc(block(payload)),
                    holes[want],
                    "{fit:?}, {payload} bytes"
                );
            }
        }
    }
}
