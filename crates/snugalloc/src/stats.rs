//! Statistics: always-on counters ([`Stats`]) and an on-demand per-size-class
//! [`Snapshot`]. Neither allocates; `docs/stats.md` defines every figure.

use core::fmt;

use crate::size_class::NUM_CLASSES;

/// Always-on counters of a heap. All sizes are bytes.
///
/// Later versions may add fields (`#[non_exhaustive]`): outside this crate
/// a `Stats` is read, or made with `Stats::default()` and its fields
/// assigned, never written out as a literal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// The region's size (fixed heaps) or the reserved address space (OS heaps).
    pub heap_bytes: usize,
    /// The heap's chunk size.
    pub chunk_bytes: usize,
    /// Bytes of the region in use: metadata plus every chunk handed out
    /// (slabs, large objects, allocators).
    pub reserved_bytes: usize,
    /// The highest `reserved_bytes` so far: exact for a fixed region; for
    /// an OS heap its metadata part is today's, which can only be higher
    /// (see docs/stats.md).
    pub peak_reserved_bytes: usize,
    /// Bytes the program holds: requested sizes (sizes passed to
    /// `alloc`/`dealloc`), or usable sizes for C-style `malloc`/`free`.
    pub live_bytes: usize,
    /// The highest `live_bytes` published by the allocators' slow paths
    /// and at detach, or added up by a call of `stats`; never lower on a
    /// later call. Within 64 KiB per allocator plus the slab objects of its
    /// fast paths (see docs/stats.md).
    pub peak_live_bytes: usize,
    /// Heap metadata: header, allocator table, bitmaps, pagemap, allocators.
    pub metadata_bytes: usize,
    /// Bytes of free chunks.
    pub free_bytes: usize,
    /// Allocators created so far.
    pub allocators: usize,
    /// Allocations that found no room even after a reclaim and waited for
    /// other threads to free some (`Config::out_of_memory_wait_ms`),
    /// including attaches that waited for room for a new allocator.
    pub room_waits: usize,
    /// Of `room_waits`, those that found none in time and returned null.
    pub room_waits_failed: usize,
}

/// One size class in a [`Snapshot`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClassRow {
    /// Class index (see [`crate::Heap::size_class_of`]).
    pub class: usize,
    /// Object size of the class.
    pub object_bytes: usize,
    /// Objects handed out (not on a free list; includes remote frees in
    /// flight and foreign objects kept for reuse).
    pub live_objects: usize,
    /// `live_objects * object_bytes`.
    pub live_bytes: usize,
    /// Bytes of all slabs of this class.
    pub slab_bytes: usize,
    /// Number of slabs of this class.
    pub slab_count: usize,
}

/// A per-size-class picture of a heap, taken by walking the pagemap.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Snapshot {
    pub(crate) rows: [ClassRow; NUM_CLASSES],
    /// Large objects (runs of whole chunks) live.
    pub large_objects: usize,
    /// Bytes of their chunk runs.
    pub large_bytes: usize,
    /// Bytes in slabs of allocators nobody is attached to that hold no live
    /// object (free slots and empty slabs kept for the next attach).
    pub idle_bytes: usize,
    /// Objects freed by one allocator and not yet handled by their owner:
    /// `remote_outgoing + remote_inbox`.
    pub remote_in_flight: usize,
    /// Of those, objects still in the freeing allocators' outgoing batches.
    pub remote_outgoing: usize,
    /// Of those, objects waiting in their owners' inboxes.
    pub remote_inbox: usize,
    /// Bytes of free chunk runs held in allocators' chunk caches.
    pub cached_bytes: usize,
    /// Bytes of objects freed through an allocator that does not own them,
    /// kept by it to hand out again (counted in their slabs' live objects).
    pub foreign_bytes: usize,
    /// Of `foreign_bytes`, those in the heap's depot (kept for any
    /// allocator rather than by one).
    pub depot_bytes: usize,
    /// Longest run of free chunks, in bytes: the largest block that can
    /// be allocated now.
    pub largest_free_bytes: usize,
    /// Free chunk runs by length, shortest first: where the free bytes are
    /// and how large a block each can hold (chunk-level holes).
    pub free_runs: [FreeRuns; crate::backend::FREE_RUN_BUCKETS],
    /// The counters at the time of the snapshot.
    pub stats: Stats,
}

/// Free chunk runs of one length range in a [`Snapshot`]: runs of at least
/// `min_bytes` and less than twice that (the last row is open-ended).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FreeRuns {
    /// Shortest run of the range, bytes.
    pub min_bytes: usize,
    /// Runs in the range.
    pub runs: usize,
    /// Free bytes in them.
    pub bytes: usize,
}

impl Snapshot {
    /// One row per size class (all classes, including unused ones).
    pub fn classes(&self) -> &[ClassRow] {
        &self.rows
    }
}

fn kib(bytes: usize) -> f64 {
    bytes as f64 / 1024.0
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "heap {:.0} KiB, chunk {} B, reserved {:.1} KiB (peak {:.1} KiB), live {:.1} KiB (peak {:.1} KiB)",
            kib(self.heap_bytes),
            self.chunk_bytes,
            kib(self.reserved_bytes),
            kib(self.peak_reserved_bytes),
            kib(self.live_bytes),
            kib(self.peak_live_bytes)
        )?;
        write!(
            f,
            "metadata {:.1} KiB, free {:.1} KiB, allocators {}, waits for room {} ({} failed)",
            kib(self.metadata_bytes),
            kib(self.free_bytes),
            self.allocators,
            self.room_waits,
            self.room_waits_failed
        )
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:>5} {:>9} {:>11} {:>12} {:>12} {:>7} {:>6}",
            "class", "object B", "live objs", "live KiB", "slab KiB", "slabs", "use %"
        )?;
        for r in self.rows.iter().filter(|r| r.slab_count > 0) {
            let use_pct = 100.0 * r.live_bytes as f64 / r.slab_bytes.max(1) as f64;
            writeln!(
                f,
                "{:>5} {:>9} {:>11} {:>12.1} {:>12.1} {:>7} {:>6.1}",
                r.class,
                r.object_bytes,
                r.live_objects,
                kib(r.live_bytes),
                kib(r.slab_bytes),
                r.slab_count,
                use_pct
            )?;
        }
        writeln!(
            f,
            "large objects {}, {:.1} KiB; idle allocators hold {:.1} KiB free in slabs; chunk caches {:.1} KiB; foreign objects kept for reuse {:.1} KiB ({:.1} in the depot); remote frees in flight {} ({} outgoing, {} in inboxes); largest free run {:.1} KiB",
            self.large_objects,
            kib(self.large_bytes),
            kib(self.idle_bytes),
            kib(self.cached_bytes),
            kib(self.foreign_bytes),
            kib(self.depot_bytes),
            self.remote_in_flight,
            self.remote_outgoing,
            self.remote_inbox,
            kib(self.largest_free_bytes)
        )?;
        write!(f, "free runs (from KiB: runs/KiB):")?;
        for r in self.free_runs.iter().filter(|r| r.runs > 0) {
            write!(f, " {}: {}/{:.0}", r.min_bytes / 1024, r.runs, kib(r.bytes))?;
        }
        writeln!(f)?;
        write!(f, "{}", self.stats)
    }
}
