//! The C layout of `struct snugalloc_stats` (see `include/snugalloc.h`),
//! shared by the preload library and the Open Enclave library.
//!
//! Compatibility rule: the first six fields (`version` to
//! `peak_live_bytes`) never move. `snugalloc_stats` writes the whole
//! structure into the caller's, so this layout cannot grow under programs
//! built against it: a version with more fields needs a function that is
//! told the caller's size (and bumps [`STATS_VERSION`]). `class_count`
//! says how many rows of `classes` are filled; the rest are zero.

use snugalloc_core::{Snapshot, NUM_CLASSES};

/// `SNUGALLOC_STATS_VERSION` in the header.
pub const STATS_VERSION: usize = 1;
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
    /// [`STATS_VERSION`].
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
}

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

    /// Writes the statistics of `snapshot` to `out`.
    ///
    /// # Safety
    /// `out` must be null (then nothing happens) or valid for writing a
    /// `struct snugalloc_stats`.
    pub unsafe fn write_to(out: *mut CStats, snapshot: Option<&Snapshot>) {
        if out.is_null() {
            return;
        }
        let stats = CStats::new(snapshot);
        // SAFETY: the caller guarantees `out` is valid for writes of a
        // CStats; `write_unaligned` does not require alignment.
        unsafe { out.write_unaligned(stats) };
    }
}
