//! Region: the one fixed block of memory a region allocator may use.
//!
//! A region is obtained once per run with `mmap` and released on drop. It is
//! surrounded by inaccessible guard pages, so a region allocator that hands
//! out memory just outside its region faults at once instead of silently
//! corrupting the simulator; [`Region::contains`] checks the same thing for
//! every block the workloads receive. This module, `alloc::process`
//! (resident memory) and `interrupt` (signals) are the only places that call
//! the OS.
//!
//! Invariant: `base` is aligned to [`REGION_ALIGN_BYTES`], `base .. base + len`
//! is readable and writable for the life of the `Region`, and nothing else in
//! the simulator maps or unmaps it.

use std::ptr::NonNull;

/// Alignment of a region's base address: 2 MiB, so chunked allocators never
/// lose space to aligning the start.
pub const REGION_ALIGN_BYTES: usize = 2 << 20;

/// Size of the guard area at each end of a region.
const GUARD_BYTES: usize = 64 << 10;

/// A fixed region of memory from `mmap`, with guard pages on both sides.
#[derive(Debug)]
pub struct Region {
    base: NonNull<u8>,
    len: usize,
    map_base: *mut u8,
    map_len: usize,
}

// SAFETY: a `Region` is a plain address range; the mapping it names is not
// tied to a thread, and the allocators layered on top synchronise access.
unsafe impl Send for Region {}
// SAFETY: `&Region` only reads the (immutable) bounds.
unsafe impl Sync for Region {}

impl Region {
    /// Maps a zero-filled region of `len` bytes (a positive multiple of
    /// 4 KiB) with guard pages around it.
    pub fn map(len: usize) -> Result<Region, String> {
        if len == 0 || len % 4096 != 0 {
            return Err(format!(
                "region length {len} is not a positive multiple of 4096"
            ));
        }
        let map_len = len
            .checked_add(2 * GUARD_BYTES + REGION_ALIGN_BYTES)
            .ok_or_else(|| format!("region length {len} is too large"))?;
        // SAFETY: an anonymous private mapping at an address of the kernel's
        // choosing aliases no existing Rust object.
        let map_base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if map_base == libc::MAP_FAILED {
            return Err(format!(
                "mmap of {len} bytes failed: {}",
                std::io::Error::last_os_error()
            ));
        }
        let map_base = map_base.cast::<u8>();
        let first = map_base as usize + GUARD_BYTES;
        let base_addr = first.div_ceil(REGION_ALIGN_BYTES) * REGION_ALIGN_BYTES;
        let base = map_base.wrapping_add(base_addr - map_base as usize);
        // SAFETY: `base .. base + len` lies inside the mapping just created
        // (base - map_base <= GUARD_BYTES + REGION_ALIGN_BYTES), page aligned.
        let rc = unsafe { libc::mprotect(base.cast(), len, libc::PROT_READ | libc::PROT_WRITE) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            // SAFETY: unmapping exactly the mapping created above.
            unsafe { libc::munmap(map_base.cast(), map_len) };
            return Err(format!("mprotect of the region failed: {err}"));
        }
        let base = NonNull::new(base).ok_or("mmap returned a null region")?;
        Ok(Region {
            base,
            len,
            map_base,
            map_len,
        })
    }

    /// First byte of the region.
    pub fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region is empty (never: `map` refuses length 0).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Address one past the end.
    pub fn end_addr(&self) -> usize {
        self.base.as_ptr() as usize + self.len
    }

    /// Whether `[p, p + size)` lies inside the region.
    #[inline]
    pub fn contains(&self, p: *const u8, size: usize) -> bool {
        let start = p as usize;
        let base = self.base.as_ptr() as usize;
        start >= base
            && start
                .checked_add(size)
                .is_some_and(|end| end <= base + self.len)
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping `map` created; no block of it
        // outlives the region (allocators borrow the region).
        unsafe { libc::munmap(self.map_base.cast(), self.map_len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_is_aligned_and_writable() {
        let r = Region::map(1 << 20).expect("map");
        assert_eq!(r.base() as usize % REGION_ALIGN_BYTES, 0);
        // SAFETY: inside the region.
        unsafe {
            r.base().write(1);
            r.base().add(r.len() - 1).write(2);
        }
        assert!(r.contains(r.base(), r.len()));
        assert!(!r.contains(r.base(), r.len() + 1));
        assert!(!r.contains(r.base().wrapping_sub(1), 1));
    }
}
