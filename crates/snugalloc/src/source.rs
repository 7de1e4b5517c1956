//! Region sources: where a heap's memory comes from, and what may be done
//! with chunks that fall free.
//!
//! A heap is laid over one contiguous region. [`FixedRegion`] is memory the
//! caller owns (an enclave heap, a static array); it never grows and is
//! never given back. [`OsRegion`] is address space reserved from the OS;
//! free chunks are given back with `MADV_DONTNEED`.

#[cfg(feature = "std")]
use crate::platform;
pub(crate) use crate::platform::Decommitted;

/// What the chunk backend may do with a region's free chunks.
///
/// Implementations must never call into an allocator.
pub(crate) trait Source: Sync {
    /// Whether free chunks should be given back to the OS.
    fn decommits(&self) -> bool;

    /// Whether chunks read zero until first used, and again after a
    /// decommit that says it zeroed them.
    fn zeroes(&self) -> bool;

    /// Gives `[base, base + bytes)` back to the OS; returns how much went.
    ///
    /// # Safety
    /// The range must be free chunks of a heap over this source, claimed by
    /// the caller so that nobody uses them during the call.
    unsafe fn decommit(&self, base: *mut u8, bytes: usize) -> Decommitted;
}

/// A region the caller owns; nothing is ever given back.
pub(crate) struct FixedRegion;

impl Source for FixedRegion {
    fn decommits(&self) -> bool {
        false
    }
    fn zeroes(&self) -> bool {
        false
    }
    unsafe fn decommit(&self, _base: *mut u8, _bytes: usize) -> Decommitted {
        Decommitted::Nothing
    }
}

/// Address space reserved from the OS.
#[cfg(feature = "std")]
pub(crate) struct OsRegion;

#[cfg(feature = "std")]
impl Source for OsRegion {
    fn decommits(&self) -> bool {
        true
    }
    fn zeroes(&self) -> bool {
        // A fresh anonymous mapping reads zero; a decommit zeroes only if
        // the OS does what it says.
        platform::decommit_zeroes()
    }
    unsafe fn decommit(&self, base: *mut u8, bytes: usize) -> Decommitted {
        // SAFETY: the caller guarantees the range is free chunks of an OS
        // reservation, claimed for the duration of the call.
        unsafe { platform::decommit(base, bytes) }
    }
}

pub(crate) static FIXED_REGION: FixedRegion = FixedRegion;
#[cfg(feature = "std")]
pub(crate) static OS_REGION: OsRegion = OsRegion;
