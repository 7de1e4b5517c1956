//! The C layout of `struct snugalloc_stats` (see `include/snugalloc.h`),
//! shared by the preload library and the Open Enclave library.
//!
//! Compatibility rule: fields never move; a version adds fields at the end
//! only, and bumps [`STATS_VERSION`].
//!
//! - `snugalloc_stats` (version 1, which wrote the whole structure of its
//!   day) writes exactly the first [`STATS_V1_BYTES`], with `version` 1, so
//!   a program built against the version 1 header gets what it has room
//!   for, and one built against a later header sees from `version` that
//!   the later fields were not written.
//! - `snugalloc_stats_sized` is told the caller's `sizeof`, writes as many
//!   whole words of the present structure as fit, and returns how many
//!   bytes it wrote; `version` says which fields this library knows.
//!
//! `class_count` says how many rows of `classes` are filled; the rest are
//! zero.

use core::mem::{offset_of, size_of};

use snugalloc_core::{Snapshot, NUM_CLASSES};

/// `SNUGALLOC_STATS_VERSION` in the header.
pub const STATS_VERSION: usize = 2;
/// Bytes of the version 1 structure: every field before `room_waits`.
pub const STATS_V1_BYTES: usize = offset_of!(CStats, room_waits);
/// `SNUGALLOC_MAX_CLASSES` in the header: room for per-class rows.
pub const MAX_CLASSES: usize = 96;

const _: () = assert!(NUM_CLASSES <= MAX_CLASSES, "raise SNUGALLOC_MAX_CLASSES");

/// `struct snugalloc_class_stats`: one size class.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct CClassStats {
    /// Object size of the class.
    pub object_bytes: usize,
    /// Objects handed out.
    pub live_objects: usize,
    /// `live_objects * object_bytes`.
    pub live_bytes: usize,
    /// Bytes of the class's slabs.
    pub slab_bytes: usize,
    /// Number of slabs.
    pub slab_count: usize,
}

/// `struct snugalloc_stats`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CStats {
    /// Which version's fields this library knows: [`STATS_VERSION`] from
    /// `snugalloc_stats_sized`, 1 from `snugalloc_stats`.
    pub version: usize,
    /// Region size (fixed heap) or reserved address space (OS heap).
    pub heap_bytes: usize,
    /// Bytes of the region in use: metadata plus chunks handed out.
    pub reserved_bytes: usize,
    /// Highest `reserved_bytes`.
    pub peak_reserved_bytes: usize,
    /// Bytes the program holds (usable sizes of live blocks).
    pub live_bytes: usize,
    /// Highest `live_bytes` seen.
    pub peak_live_bytes: usize,
    /// Chunk size.
    pub chunk_bytes: usize,
    /// Heap metadata.
    pub metadata_bytes: usize,
    /// Bytes of free chunks.
    pub free_bytes: usize,
    /// Allocators created.
    pub allocators: usize,
    /// Live large objects (chunk runs).
    pub large_objects: usize,
    /// Bytes of their runs.
    pub large_bytes: usize,
    /// Free bytes in slabs held by idle allocators.
    pub idle_bytes: usize,
    /// Cross-thread frees not yet handled by the owner.
    pub remote_in_flight: usize,
    /// Largest block that can be allocated now.
    pub largest_free_bytes: usize,
    /// Rows of `classes` filled.
    pub class_count: usize,
    /// Per-size-class rows.
    pub classes: [CClassStats; MAX_CLASSES],
    // ----- version 2 -----
    /// Allocations that found no room and waited for other threads to
    /// free some (`SNUGALLOC_OOM_WAIT_MS`).
    pub room_waits: usize,
    /// Of those, the ones that returned null all the same.
    pub room_waits_failed: usize,
    /// Of `remote_in_flight`, objects in the freeing threads' outgoing
    /// batches.
    pub remote_outgoing: usize,
    /// Of `remote_in_flight`, objects waiting in their owners' inboxes.
    pub remote_inbox: usize,
    /// Bytes of objects kept for reuse by an allocator that does not own
    /// them (counted as live in their classes' rows).
    pub foreign_bytes: usize,
    /// Of `foreign_bytes`, those in the heap's depot.
    pub depot_bytes: usize,
    /// Bytes of free chunk runs held in allocators' chunk caches.
    pub cached_bytes: usize,
}

// Every field is a word, so the structure has no padding and whole words
// are whole fields.
const _: () = assert!(size_of::<CStats>() % size_of::<usize>() == 0);
const _: () = assert!(STATS_V1_BYTES == (16 + 5 * MAX_CLASSES) * size_of::<usize>());

impl CStats {
    /// The statistics of a heap (all zero but `version` without one).
    pub fn new(snapshot: Option<&Snapshot>) -> CStats {
        let mut out = CStats {
            version: STATS_VERSION,
            heap_bytes: 0,
            reserved_bytes: 0,
            peak_reserved_bytes: 0,
            live_bytes: 0,
            peak_live_bytes: 0,
            chunk_bytes: 0,
            metadata_bytes: 0,
            free_bytes: 0,
            allocators: 0,
            large_objects: 0,
            large_bytes: 0,
            idle_bytes: 0,
            remote_in_flight: 0,
            largest_free_bytes: 0,
            class_count: 0,
            classes: [CClassStats::default(); MAX_CLASSES],
            room_waits: 0,
            room_waits_failed: 0,
            remote_outgoing: 0,
            remote_inbox: 0,
            foreign_bytes: 0,
            depot_bytes: 0,
            cached_bytes: 0,
        };
        let Some(snap) = snapshot else {
            return out;
        };
        let s = &snap.stats;
        out.heap_bytes = s.heap_bytes;
        out.reserved_bytes = s.reserved_bytes;
        out.peak_reserved_bytes = s.peak_reserved_bytes;
        out.live_bytes = s.live_bytes;
        out.peak_live_bytes = s.peak_live_bytes;
        out.chunk_bytes = s.chunk_bytes;
        out.metadata_bytes = s.metadata_bytes;
        out.free_bytes = s.free_bytes;
        out.allocators = s.allocators;
        out.large_objects = snap.large_objects;
        out.large_bytes = snap.large_bytes;
        out.idle_bytes = snap.idle_bytes;
        out.remote_in_flight = snap.remote_in_flight;
        out.largest_free_bytes = snap.largest_free_bytes;
        out.room_waits = s.room_waits;
        out.room_waits_failed = s.room_waits_failed;
        out.remote_outgoing = snap.remote_outgoing;
        out.remote_inbox = snap.remote_inbox;
        out.foreign_bytes = snap.foreign_bytes;
        out.depot_bytes = snap.depot_bytes;
        out.cached_bytes = snap.cached_bytes;
        out.class_count = snap.classes().len().min(MAX_CLASSES);
        for (row, class) in out.classes.iter_mut().zip(snap.classes()) {
            *row = CClassStats {
                object_bytes: class.object_bytes,
                live_objects: class.live_objects,
                live_bytes: class.live_bytes,
                slab_bytes: class.slab_bytes,
                slab_count: class.slab_count,
            };
        }
        out
    }

    /// Writes the version 1 part of the statistics of `snapshot` to `out`
    /// (`snugalloc_stats`), with `version` 1.
    ///
    /// # Safety
    /// `out` must be null (then nothing happens) or valid for writing
    /// [`STATS_V1_BYTES`] bytes.
    pub unsafe fn write_v1(out: *mut CStats, snapshot: Option<&Snapshot>) {
        let mut stats = CStats::new(snapshot);
        stats.version = 1;
        // SAFETY: `STATS_V1_BYTES <= size_of::<CStats>()` (it is the offset
        // of a field), and the caller's contract covers those bytes.
        unsafe { stats.write_prefix(out.cast(), STATS_V1_BYTES) };
    }

    /// Writes as many whole words of the statistics of `snapshot` as fit
    /// in `size` bytes at `out` (`snugalloc_stats_sized`); returns the
    /// bytes written (0 if `out` is null).
    ///
    /// # Safety
    /// `out` must be null or valid for writing `size` bytes.
    pub unsafe fn write_sized(out: *mut u8, size: usize, snapshot: Option<&Snapshot>) -> usize {
        if out.is_null() {
            return 0;
        }
        let bytes = size.min(size_of::<CStats>()) / size_of::<usize>() * size_of::<usize>();
        // SAFETY: the caller's contract; `bytes <= size`.
        unsafe { CStats::new(snapshot).write_prefix(out, bytes) };
        bytes
    }

    /// Copies the first `bytes` bytes of `self` to `out`.
    ///
    /// # Safety
    /// `bytes <= size_of::<CStats>()`, and `out` must be null (then
    /// nothing happens) or valid for writing `bytes` bytes.
    unsafe fn write_prefix(&self, out: *mut u8, bytes: usize) {
        debug_assert!(bytes <= size_of::<CStats>());
        if out.is_null() {
            return;
        }
        // SAFETY: `self` is `size_of::<CStats>() >= bytes` readable bytes
        // (no padding: every field is a word); the caller guarantees `out`
        // is writable for `bytes`; a byte copy needs no alignment, and the
        // caller's structure cannot overlap our local one.
        unsafe { core::ptr::copy_nonoverlapping((self as *const CStats).cast::<u8>(), out, bytes) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: usize = size_of::<usize>();

    /// The same offsets as `api.c` asserts for the C headers: field `i` of
    /// the version 2 part at word `16 + 5 * MAX_CLASSES + i`.
    #[test]
    fn version_two_fields_follow_version_one_word_by_word() {
        assert_eq!(
            STATS_V1_BYTES,
            offset_of!(CStats, classes) + MAX_CLASSES * size_of::<CClassStats>()
        );
        assert_eq!(STATS_V1_BYTES, (16 + 5 * MAX_CLASSES) * W);
        let v2 = [
            offset_of!(CStats, room_waits),
            offset_of!(CStats, room_waits_failed),
            offset_of!(CStats, remote_outgoing),
            offset_of!(CStats, remote_inbox),
            offset_of!(CStats, foreign_bytes),
            offset_of!(CStats, depot_bytes),
            offset_of!(CStats, cached_bytes),
        ];
        for (i, offset) in v2.into_iter().enumerate() {
            assert_eq!(offset, STATS_V1_BYTES + i * W, "field {i} of version 2");
        }
        assert_eq!(size_of::<CStats>(), STATS_V1_BYTES + 7 * W);
    }

    #[test]
    fn the_old_function_writes_version_one_and_nothing_past_it() {
        let mut buf = [0xffu8; size_of::<CStats>() + 8];
        // SAFETY: `buf` is larger than a CStats.
        unsafe { CStats::write_v1(buf.as_mut_ptr().cast(), None) };
        assert_eq!(usize::from_ne_bytes(buf[..W].try_into().unwrap()), 1);
        assert!(buf[W..STATS_V1_BYTES].iter().all(|&b| b == 0));
        assert!(buf[STATS_V1_BYTES..].iter().all(|&b| b == 0xff));
    }

    #[test]
    fn the_sized_function_writes_whole_words_up_to_the_callers_size() {
        let full = size_of::<CStats>();
        for (size, written) in [
            (0, 0),
            (W - 1, 0),
            (W, W),
            (W + 5, W),
            (STATS_V1_BYTES + 3, STATS_V1_BYTES),
            (full, full),
            (full + 100, full),
        ] {
            let mut buf = [0xffu8; size_of::<CStats>() + 100];
            // SAFETY: `buf` holds at least `size` bytes.
            let n = unsafe { CStats::write_sized(buf.as_mut_ptr(), size, None) };
            assert_eq!(n, written, "size {size}");
            assert!(
                buf[n..].iter().all(|&b| b == 0xff),
                "size {size}: wrote past {n}"
            );
            if n >= W {
                assert_eq!(
                    usize::from_ne_bytes(buf[..W].try_into().unwrap()),
                    STATS_VERSION
                );
            }
        }
        // SAFETY: a null `out` is allowed: nothing is written.
        let n = unsafe { CStats::write_sized(core::ptr::null_mut(), full, None) };
        assert_eq!(n, 0);
    }
}
