//! rlsf over the region: a TLSF (two-level segregated fit) allocator from the
//! `rlsf` crate given the whole region as one free block, behind one global
//! lock ([`super::locked`]).
//!
//! Parameters: `Tlsf<u32, u16, 24, 16>`: 16 second-level lists per power of
//! two and blocks up to 512 MiB (larger regions are split into several free
//! blocks by rlsf itself). The TLSF header (about 3 KiB of list heads) lives
//! outside the region, in the simulator's memory; it is not counted.
//!
//! Reserved bytes: the extent (see [`super::extent`]).

use std::alloc::Layout;
use std::ptr::NonNull;

use rlsf::Tlsf;

use super::locked::{Locked, RawAlloc};
use crate::region::Region;

type Pool = Tlsf<'static, u32, u16, 24, 16>;

/// The TLSF header.
pub struct RlsfRaw(Box<Pool>);

impl RawAlloc for RlsfRaw {
    fn alloc(&mut self, layout: Layout) -> *mut u8 {
        self.0
            .allocate(layout)
            .map_or(std::ptr::null_mut(), |p| p.as_ptr())
    }

    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        let Some(nn) = NonNull::new(ptr) else { return };
        // SAFETY: the caller guarantees `ptr` came from this TLSF with
        // `layout` (hence this alignment) and is live.
        unsafe { self.0.deallocate(nn, layout.align()) };
    }
}

/// Gives `region` to a fresh TLSF as free memory.
pub fn build(label: String, region: Region) -> Result<Locked<RlsfRaw>, String> {
    let mut tlsf: Box<Pool> = Box::new(Tlsf::new());
    let block = NonNull::slice_from_raw_parts(
        NonNull::new(region.base()).ok_or("null region")?,
        region.len(),
    );
    // SAFETY: the region is mapped until `Locked` drops it, after the TLSF
    // (field order), and only blocks the TLSF hands out are written by anyone
    // else. The `'static` in `Pool` is a promise that drop order keeps.
    let inserted = unsafe { tlsf.insert_free_block_ptr(block) };
    if inserted.is_none() {
        return Err(format!("rlsf could not use a {} byte region", region.len()));
    }
    Ok(Locked::new(label, RlsfRaw(tlsf), region))
}
