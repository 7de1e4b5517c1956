//! Guard: the integrity check of every block.
//!
//! On allocation, up to [`GUARD_BYTES`] bytes at the start and at the end of a
//! block are filled with a pattern derived from the block's address, size
//! and a tag unique to the allocation; before the block is freed both are
//! compared. Any difference means the block's contents changed while the
//! simulator owned it: the allocator handed the same memory out twice
//! (the tag tells two allocations of one size at one address apart), or
//! wrote its metadata into a live block.

/// Bytes checked at each end of a block (fewer for blocks under 16 bytes).
pub const GUARD_BYTES: usize = 8;

fn pattern(ptr: *const u8, size: usize, tag: u64) -> [u8; GUARD_BYTES] {
    let x = (ptr as u64 ^ (size as u64).rotate_left(32) ^ tag.rotate_left(17))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x ^ 0xA5A5_5A5A_C3C3_3C3C).to_le_bytes()
}

fn span(size: usize) -> usize {
    GUARD_BYTES.min(size / 2)
}

/// Writes the guards of a block.
///
/// # Safety
///
/// `ptr .. ptr + size` is writable memory owned by the caller.
pub unsafe fn write(ptr: *mut u8, size: usize, tag: u64) {
    let pat = pattern(ptr, size, tag);
    let n = span(size);
    // SAFETY: both ranges lie within `ptr .. ptr + size` (n <= size / 2) and
    // do not overlap `pat`, which is on the stack.
    unsafe {
        std::ptr::copy_nonoverlapping(pat.as_ptr(), ptr, n);
        std::ptr::copy_nonoverlapping(pat.as_ptr(), ptr.add(size - n), n);
    }
}

/// Checks the guards of a block; `Err(offset)` names the first changed byte.
///
/// # Safety
///
/// `ptr .. ptr + size` is readable memory owned by the caller.
pub unsafe fn check(ptr: *const u8, size: usize, tag: u64) -> Result<(), usize> {
    let pat = pattern(ptr, size, tag);
    let n = span(size);
    for (i, &expected) in pat.iter().enumerate().take(n) {
        // SAFETY: offsets below `n <= size / 2` are inside the block.
        if unsafe { ptr.add(i).read() } != expected {
            return Err(i);
        }
        let off = size - n + i;
        // SAFETY: offsets from `size - n` to `size - 1` are inside the block.
        if unsafe { ptr.add(off).read() } != expected {
            return Err(off);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_a_changed_byte_at_either_end() {
        for size in [1usize, 2, 15, 16, 17, 100, 4096] {
            for victim in [0, size - 1] {
                let mut buf = vec![0u8; size];
                let p = buf.as_mut_ptr();
                // SAFETY: `buf` is `size` writable bytes.
                unsafe { write(p, size, 7) };
                // SAFETY: as above.
                assert_eq!(unsafe { check(p, size, 7) }, Ok(()));
                if size >= 2 {
                    buf[victim] ^= 1;
                    // SAFETY: as above.
                    let damaged = unsafe { check(buf.as_ptr(), size, 7) };
                    assert!(damaged.is_err(), "size {size} byte {victim}");
                }
            }
        }
    }

    #[test]
    fn tells_two_allocations_of_one_size_at_one_address_apart() {
        for size in [16usize, 8192, 32768] {
            let mut buf = vec![0u8; size];
            let p = buf.as_mut_ptr();
            // SAFETY: `buf` is `size` writable bytes. The second write is
            // the same memory handed out again, with the same size.
            unsafe {
                write(p, size, 1);
                write(p, size, 2);
            }
            // SAFETY: as above.
            assert!(unsafe { check(p, size, 1) }.is_err(), "size {size}");
        }
    }
}
