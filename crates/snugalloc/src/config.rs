//! Configuration: a typed [`Config`], validated once when a heap is built,
//! and the crate's [`Error`] type.
//!
//! Every field has a documented range; [`Config::validate`] names the field,
//! the value and what is allowed when a value is outside it.

use core::fmt;

use crate::size_class::MAX_CLASS_BYTES;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
const GIB: usize = 1024 * MIB;

/// Smallest chunk a heap may use.
pub const MIN_CHUNK_BYTES: usize = 4 * KIB;
/// Largest chunk a heap may use.
pub const MAX_CHUNK_BYTES: usize = 64 * KIB;
/// Largest number of allocators one heap may create.
pub const MAX_ALLOCATORS: usize = 16 * 1024;
/// Most chunks a heap uses: chunk indices are kept in 32 bits (slab
/// links, whose end marker is `u32::MAX`, cached runs, large objects'
/// lengths). 16 TiB of 4 KiB chunks; a bigger region is used only up to
/// that, and a bigger OS reservation is a configuration error.
pub const MAX_CHUNKS: usize = u32::MAX as usize - 1;
/// Fixed regions of this size and more default to 16 KiB chunks (and the
/// other big-heap settings, the chunk cache among them).
pub const SMALL_HEAP_BYTES: usize = 256 * MIB;
/// Largest `Config::decommit_delay_ms` and `Config::decommit_epoch_ms`: a
/// minute.
pub const MAX_DECOMMIT_DELAY_MS: u64 = 60_000;
/// Default `Config::decommit_epoch_ms`. The sqlite3 workload of the C
/// library's tests rebuilds memory that stayed free for 1 to 2 s; of 1, 2
/// and 3 s epochs, 2 and 3 s returned none of it (see docs/architecture.md,
/// "Decommit"). Twice 2 s, for slower machines.
const DECOMMIT_EPOCH_MS: u64 = 4000;
/// Default `Config::depot_bytes`.
const DEPOT_BYTES: usize = 256 * KIB;
/// Largest `Config::out_of_memory_wait_ms`: a second.
pub const MAX_OUT_OF_MEMORY_WAIT_MS: u64 = 1000;
/// Default `Config::out_of_memory_wait_ms` of fixed regions. On
/// ecall-churn (20 threads on 2 cores) one yield to the other threads took
/// up to about 20 ms; in a 39 MiB region the allocations that waited found
/// room after one to four yields, within 30 ms, and a bound of 100 ms
/// left no fewer failures than one of 20 ms (docs/architecture.md, "Waiting
/// for room before failing").
const OUT_OF_MEMORY_WAIT_MS: u64 = 20;

/// How a heap is laid out and how much it may keep in reserve.
///
/// Build one with [`Config::for_region`] or [`Config::for_os`], adjust the
/// public fields, and pass it to a heap constructor, which validates it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Granularity of the chunk backend: slabs and large objects are whole
    /// runs of chunks. A power of two from 4 KiB to 64 KiB.
    pub chunk_bytes: usize,
    /// Size classes per power of two above 128 B: 8 (worst rounding 11%),
    /// 4 (25%) or 2 (50%). Fewer classes mean fewer partly used slabs per
    /// allocator, which in a small heap with many allocators outweighs the
    /// rounding.
    pub classes_per_doubling: usize,
    /// Requests up to the largest served class not above this size are
    /// served from slabs of size-classed objects; larger ones take whole
    /// chunk runs. From 16 B to 64 KiB, and at most `max_slab_bytes`.
    pub max_slab_object_bytes: usize,
    /// Serve requests above the largest slab class and up to half a chunk
    /// from half chunks, shared by all allocators (a chunk holds two such
    /// objects, and goes back to the backend when both are free), instead
    /// of whole chunks. In force only when the largest slab class is below
    /// half a chunk (the small fixed heap defaults: objects of 1-2 KiB).
    pub half_chunks: bool,
    /// Largest slab: a multiple of `chunk_bytes`, at most 64 chunks and
    /// 1 MiB. Slabs are sized per class to waste little of this.
    pub max_slab_bytes: usize,
    /// Most allocators the pool will create (attached at once): 1 to 16384.
    pub max_allocators: usize,
    /// Bytes of empty slabs a detached allocator may keep for its next
    /// attach; the rest go back to the chunk backend at detach.
    pub idle_retain_bytes: usize,
    /// Bytes of other allocators' objects an allocator keeps to hand out
    /// again (freed through it, attached or not), instead of sending them
    /// to an owner that may be descheduled for milliseconds. They stay
    /// with the allocator across a detach in a fixed region; a reclaim
    /// sends them home. In a heap with less than a quarter of its chunks
    /// free (a fixed region, or an OS heap whose reservation is nearly
    /// used), allocators created, attached or detached then, or taking a
    /// new slab, keep at most a quarter of this. At most 64 MiB.
    pub foreign_retain_bytes: usize,
    /// Bytes of other allocators' objects the heap's depot may hold: objects
    /// freed by a thread that does not own them, past what its allocator
    /// keeps (`foreign_retain_bytes` in all, and an eighth of this per class),
    /// go there as a list, and wait for whichever allocator next runs short
    /// of their class instead of in the inbox of an owner that may be
    /// descheduled. The bound is checked before each list a free adds, so
    /// racing threads may pass it by a list each, and lists given back by
    /// an allocator that detaches or by a reclaim, or shed because the heap
    /// filled (see `foreign_retain_bytes`), may pass it too. `trim`
    /// and [`crate::Heap::reclaim`] send the depot's objects home; an
    /// allocation about to fail (or an attach that needs memory) sends
    /// those of owners nobody is attached to, and its own. 0 turns the
    /// depot off; at most 64 MiB.
    pub depot_bytes: usize,
    /// Bytes of free chunk runs each allocator may cache instead of giving
    /// them back to the backend (a speed policy for big heaps). In force only
    /// when the heap is at least `chunk_cache_min_heap_bytes`; 0 turns it off;
    /// at most 64 MiB. An allocation about to fail takes the cached runs of every
    /// allocator, attached or not, before it reports out of memory.
    pub chunk_cache_bytes: usize,
    /// Smallest heap in which the per-allocator chunk cache is used: in a
    /// smaller heap every allocator's cache would strand memory others need.
    pub chunk_cache_min_heap_bytes: usize,
    /// OS heaps: address space to reserve (at least 1 MiB, a multiple of
    /// `chunk_bytes`); memory is committed on first touch. Fixed regions
    /// do not use it, but it is validated there too, so keep the default.
    pub os_reserve_bytes: usize,
    /// OS heaps only: free chunks still resident ("dirty") are returned to
    /// the OS at once when they exceed the most of this many bytes, a
    /// quarter of the chunks in use, and the room from the chunks in use up
    /// to their peak over this and the last `decommit_epoch_ms` epoch (at
    /// most as much as is in use). Any value; below one chunk counts as one.
    pub dirty_limit_bytes: usize,
    /// OS heaps only: when no chunk was freed and no dirty chunk reused for
    /// this many milliseconds, every dirty chunk is returned to the OS at
    /// the next chunk backend operation. 0 returns free chunks at once; at
    /// most 60 000 (a minute).
    pub decommit_delay_ms: u64,
    /// OS heaps only: the length of a purge epoch in milliseconds. At the
    /// first backend operation after an epoch, as many dirty chunks as
    /// stayed unused throughout it are returned to the OS, so a busy
    /// program keeps what it reuses within an epoch. At most 60 000.
    pub decommit_epoch_ms: u64,
    /// How long an allocation that finds no room, even after reclaiming
    /// what idle allocators hold, keeps looking before it returns null, in
    /// milliseconds: it gives the processor to the other threads, reclaims
    /// again and retries, for as long as another thread is attached and
    /// not itself waiting (that thread may free what is needed). A nearly
    /// full heap then costs the allocations that meet it latency instead
    /// of failures. With `std` each pause is a `sched_yield` and the bound
    /// is on a clock (or 1,000 yields a millisecond, if an idle machine
    /// gets through them first); without it each pause is a burst of spin
    /// hints, a millisecond being counted as about 16,000 of them, which
    /// helps only where the threads that will free run on other cores. A program alone
    /// in its heap, or one whose other threads are all detached, never
    /// waits. A thread that needs a new allocator (its first allocation)
    /// and finds no room for it waits the same way before its attach fails.
    /// 0 returns null at once; at most 1000. Default: 20 in fixed
    /// regions, 0 in OS heaps (whose reservation is rarely the limit).
    pub out_of_memory_wait_ms: u64,
}

impl Config {
    /// Defaults for a fixed region of `region_bytes` bytes: below 256 MiB,
    /// 4 KiB chunks, slabs of at most four chunks, objects of 1-2 KiB in
    /// half chunks and larger ones served as chunk runs, and little kept by
    /// idle allocators; from 256 MiB up, 16 KiB chunks, objects above one
    /// chunk served as chunk runs, and the per-allocator chunk cache
    /// (256 KiB) in force.
    pub const fn for_region(region_bytes: usize) -> Config {
        let small = region_bytes < SMALL_HEAP_BYTES;
        let chunk_bytes = if small { 4 * KIB } else { 16 * KIB };
        Config {
            chunk_bytes,
            classes_per_doubling: if small { 4 } else { 8 },
            // Measured on ecall-churn (64 MiB, 20 threads): every attached
            // allocator keeps a partly used slab per class it touches, so in
            // a small heap mid-sized objects cost less as chunk runs, which
            // go back to the backend the moment they are freed. Objects up to
            // 1 KiB: exact peak 39.4-40.7 MiB; up to 4 KiB: 47.9 MiB.
            max_slab_object_bytes: if small { 1024 } else { chunk_bytes },
            half_chunks: true,
            max_slab_bytes: 4 * chunk_bytes,
            max_allocators: 1024,
            idle_retain_bytes: if small { 2 * chunk_bytes } else { 256 * KIB },
            // Measured on ecall-churn (64 MiB): 32 KiB, 8 KiB while the
            // region is nearly full, made 7% more operations per second than
            // 8 KiB throughout, for about 1 MiB more at the exact peak (1.12x
            // the requested peak against 1.10x) and the same min-heap.
            foreign_retain_bytes: if small { 32 * KIB } else { 256 * KIB },
            // A 64th of the region, 256 KiB from 16 MiB up.
            depot_bytes: if region_bytes / 64 < DEPOT_BYTES {
                region_bytes / 64
            } else {
                DEPOT_BYTES
            },
            chunk_cache_bytes: 256 * KIB,
            chunk_cache_min_heap_bytes: SMALL_HEAP_BYTES,
            os_reserve_bytes: 64 * GIB,
            dirty_limit_bytes: 16 * MIB,
            decommit_delay_ms: 1000,
            decommit_epoch_ms: DECOMMIT_EPOCH_MS,
            out_of_memory_wait_ms: OUT_OF_MEMORY_WAIT_MS,
        }
    }

    /// Defaults for a heap over OS memory: 16 KiB chunks, objects up to
    /// 16 KiB from slabs of up to 64 KiB, 64 GiB of address space.
    pub const fn for_os() -> Config {
        Config {
            chunk_bytes: 16 * KIB,
            classes_per_doubling: 8,
            max_slab_object_bytes: 16 * KIB,
            half_chunks: true,
            max_slab_bytes: 64 * KIB,
            max_allocators: MAX_ALLOCATORS,
            idle_retain_bytes: 256 * KIB,
            foreign_retain_bytes: 256 * KIB,
            depot_bytes: DEPOT_BYTES,
            chunk_cache_bytes: 256 * KIB,
            chunk_cache_min_heap_bytes: SMALL_HEAP_BYTES,
            os_reserve_bytes: 64 * GIB,
            dirty_limit_bytes: 16 * MIB,
            decommit_delay_ms: 1000,
            decommit_epoch_ms: DECOMMIT_EPOCH_MS,
            out_of_memory_wait_ms: 0,
        }
    }

    /// Checks every field against its documented range.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |field, value, allowed| {
            Err(Error::Config(ConfigError {
                field,
                value,
                allowed,
                related: None,
            }))
        };
        let c = self.chunk_bytes;
        // A field whose range depends on another names that one's value too
        // (it may be the field the caller changed).
        let bad_beside = |field, value, allowed, related| {
            Err(Error::Config(ConfigError {
                field,
                value,
                allowed,
                related: Some(related),
            }))
        };
        if !c.is_power_of_two() || !(MIN_CHUNK_BYTES..=MAX_CHUNK_BYTES).contains(&c) {
            return bad("chunk_bytes", c, "a power of two from 4 KiB to 64 KiB");
        }
        if ![2, 4, 8].contains(&self.classes_per_doubling) {
            return bad(
                "classes_per_doubling",
                self.classes_per_doubling,
                "2, 4 or 8",
            );
        }
        let s = self.max_slab_bytes;
        if s % c != 0 || s < c || s / c > 64 || s > MIB {
            return bad_beside(
                "max_slab_bytes",
                s,
                "a multiple of chunk_bytes, one to 64 chunks and at most 1 MiB",
                ("chunk_bytes", c),
            );
        }
        let o = self.max_slab_object_bytes;
        if !(16..=MAX_CLASS_BYTES).contains(&o) || o > s {
            return bad_beside(
                "max_slab_object_bytes",
                o,
                "16 B to 64 KiB, and at most max_slab_bytes",
                ("max_slab_bytes", s),
            );
        }
        if self.foreign_retain_bytes > 64 * MIB {
            return bad(
                "foreign_retain_bytes",
                self.foreign_retain_bytes,
                "0 to 64 MiB",
            );
        }
        if self.depot_bytes > 64 * MIB {
            return bad("depot_bytes", self.depot_bytes, "0 (off) to 64 MiB");
        }
        if self.chunk_cache_bytes > 64 * MIB {
            return bad(
                "chunk_cache_bytes",
                self.chunk_cache_bytes,
                "0 (off) to 64 MiB",
            );
        }
        if !(1..=MAX_ALLOCATORS).contains(&self.max_allocators) {
            return bad("max_allocators", self.max_allocators, "1 to 16384");
        }
        for (field, ms) in [
            ("decommit_delay_ms", self.decommit_delay_ms),
            ("decommit_epoch_ms", self.decommit_epoch_ms),
        ] {
            if ms > MAX_DECOMMIT_DELAY_MS {
                return bad(
                    field,
                    usize::try_from(ms).unwrap_or(usize::MAX),
                    "0 to 60000 (a minute)",
                );
            }
        }
        if self.out_of_memory_wait_ms > MAX_OUT_OF_MEMORY_WAIT_MS {
            return bad(
                "out_of_memory_wait_ms",
                usize::try_from(self.out_of_memory_wait_ms).unwrap_or(usize::MAX),
                "0 (fail at once) to 1000 (a second)",
            );
        }
        let r = self.os_reserve_bytes;
        if r < MIB || r % c != 0 || r / c > MAX_CHUNKS {
            return bad_beside(
                "os_reserve_bytes",
                r,
                "at least 1 MiB, a multiple of chunk_bytes, and at most 2^32 - 2 chunks",
                ("chunk_bytes", c),
            );
        }
        Ok(())
    }
}

/// A configuration field outside its allowed range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The field's name in [`Config`].
    pub field: &'static str,
    /// The value given.
    pub value: usize,
    /// What the field allows.
    pub allowed: &'static str,
    /// The other field its range depends on, and that field's value: the
    /// caller may have changed that one (`chunk_bytes` for
    /// `max_slab_bytes`, say), not the field named.
    pub related: Option<(&'static str, usize)>,
}

/// Everything that can go wrong building or attaching to a heap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// A [`Config`] field is outside its range.
    Config(ConfigError),
    /// The region cannot hold the heap's metadata and at least one slab.
    RegionTooSmall {
        /// Bytes given.
        region_bytes: usize,
        /// Smallest region this configuration accepts at the same base
        /// address: the chunks start at a chunk boundary past the
        /// metadata, so another base may need up to a chunk less or more.
        min_bytes: usize,
    },
    /// The region's base pointer is null or the region wraps the address space.
    RegionInvalid,
    /// The OS refused to reserve address space.
    OsReserveFailed {
        /// The last size asked for: `Heap::from_os` halves a refused
        /// `os_reserve_bytes` down to 16 MiB (or to the size asked, if
        /// smaller) before it gives up.
        bytes: usize,
    },
    /// Every allocator the pool may create is attached.
    PoolExhausted {
        /// The configured maximum.
        max_allocators: usize,
    },
    /// The chunk backend had no room for an allocator's metadata.
    OutOfMemory,
    /// A global heap was initialised twice.
    AlreadyInitialized,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => {
                write!(
                    f,
                    "invalid snugalloc config: {} = {} (allowed: {})",
                    e.field, e.value, e.allowed
                )?;
                match e.related {
                    Some((field, value)) => write!(f, " with {field} = {value}"),
                    None => Ok(()),
                }
            }
            Error::RegionTooSmall {
                region_bytes,
                min_bytes,
            } => write!(
                f,
                "region of {region_bytes} bytes is too small for this config (at least {min_bytes} bytes)"
            ),
            Error::RegionInvalid => {
                write!(f, "region base is null or the region wraps the address space")
            }
            Error::OsReserveFailed { bytes } => {
                write!(f, "the OS refused to reserve {bytes} bytes of address space")
            }
            Error::PoolExhausted { max_allocators } => write!(
                f,
                "all {max_allocators} allocators are attached (raise Config::max_allocators)"
            ),
            Error::OutOfMemory => write!(f, "no room left in the heap for allocator metadata"),
            Error::AlreadyInitialized => write!(f, "the global heap is already initialised"),
        }
    }
}

impl core::error::Error for Error {}

/// A byte count that [`parse_bytes`] could not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseBytesError {
    /// Empty, or not digits followed by an optional unit.
    Malformed,
    /// The value does not fit in `usize`.
    Overflow,
}

impl fmt::Display for ParseBytesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseBytesError::Malformed => write!(
                f,
                "expected a byte count such as 4096, 16k, 64M or 1G (units k, M, G, T, optionally KiB/MiB/GiB/TiB or B)"
            ),
            ParseBytesError::Overflow => write!(f, "byte count too large"),
        }
    }
}

impl core::error::Error for ParseBytesError {}

/// Reads a byte count such as `4096`, `16k`, `64M`, `64MiB` or `1G`
/// (binary units, case-insensitive). Does not allocate.
pub fn parse_bytes(text: &str) -> Result<usize, ParseBytesError> {
    let text = text.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(ParseBytesError::Malformed);
    }
    let mut value: usize = 0;
    for b in text.as_bytes()[..digits].iter() {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(usize::from(b - b'0')))
            .ok_or(ParseBytesError::Overflow)?;
    }
    let unit = &text[digits..];
    let shift = match unit.as_bytes() {
        [] | [b'b' | b'B'] => 0,
        [u, rest @ ..] => {
            let shift = match u.to_ascii_lowercase() {
                b'k' => 10,
                b'm' => 20,
                b'g' => 30,
                b't' => 40,
                _ => return Err(ParseBytesError::Malformed),
            };
            match rest {
                [] | [b'b' | b'B'] => shift,
                [i, b] if i.eq_ignore_ascii_case(&b'i') && b.eq_ignore_ascii_case(&b'b') => shift,
                _ => return Err(ParseBytesError::Malformed),
            }
        }
    };
    value
        .checked_mul(1usize << shift)
        .ok_or(ParseBytesError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The errors work with `?` in functions that return a boxed
    /// `std::error::Error` (or anyhow's), as the README's examples do.
    #[test]
    fn errors_are_std_errors() {
        extern crate std;
        use std::boxed::Box;
        use std::string::ToString;
        fn validate(c: Config) -> Result<(), Box<dyn std::error::Error>> {
            c.validate()?;
            parse_bytes("64Q")?;
            Ok(())
        }
        let bad = Config {
            chunk_bytes: 3000,
            ..Config::for_os()
        };
        let e = validate(bad).expect_err("3000 is no chunk size");
        assert!(e.to_string().contains("chunk_bytes = 3000"), "{e}");
        let e = validate(Config::for_os()).expect_err("64Q is no size");
        assert!(e.to_string().starts_with("expected a byte count"), "{e}");
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("4k"), Ok(4096));
        assert_eq!(parse_bytes("64M"), Ok(64 << 20));
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("1g"), Ok(1 << 30));
        assert_eq!(parse_bytes(" 16KB "), Ok(16 << 10));
        assert_eq!(parse_bytes("64Q"), Err(ParseBytesError::Malformed));
        assert_eq!(parse_bytes("M"), Err(ParseBytesError::Malformed));
        assert_eq!(parse_bytes(""), Err(ParseBytesError::Malformed));
        assert_eq!(parse_bytes("1kk"), Err(ParseBytesError::Malformed));
        assert_eq!(
            parse_bytes("99999999999999999999"),
            Err(ParseBytesError::Overflow)
        );
        assert_eq!(parse_bytes("100000000T"), Err(ParseBytesError::Overflow));
    }

    #[test]
    fn defaults_validate() {
        assert_eq!(Config::for_region(64 << 20).validate(), Ok(()));
        assert_eq!(Config::for_region(4 << 30).validate(), Ok(()));
        assert_eq!(Config::for_os().validate(), Ok(()));
        assert_eq!(Config::for_region(64 << 20).chunk_bytes, 4096);
        assert_eq!(Config::for_region(512 << 20).chunk_bytes, 16384);
    }

    #[test]
    fn rejects_bad_fields_by_name() {
        let base = Config::for_region(64 << 20);
        let cases = [
            (
                Config {
                    chunk_bytes: 3000,
                    ..base
                },
                "chunk_bytes",
            ),
            (
                Config {
                    chunk_bytes: 2048,
                    ..base
                },
                "chunk_bytes",
            ),
            (
                Config {
                    chunk_bytes: 128 << 10,
                    ..base
                },
                "chunk_bytes",
            ),
            (
                Config {
                    classes_per_doubling: 3,
                    ..base
                },
                "classes_per_doubling",
            ),
            (
                Config {
                    foreign_retain_bytes: 65 << 20,
                    ..base
                },
                "foreign_retain_bytes",
            ),
            (
                Config {
                    max_slab_bytes: 6000,
                    ..base
                },
                "max_slab_bytes",
            ),
            (
                Config {
                    max_slab_object_bytes: 8,
                    ..base
                },
                "max_slab_object_bytes",
            ),
            (
                Config {
                    max_slab_object_bytes: 32 << 10,
                    ..base
                },
                "max_slab_object_bytes",
            ),
            (
                Config {
                    max_allocators: 0,
                    ..base
                },
                "max_allocators",
            ),
            (
                Config {
                    os_reserve_bytes: 1 << 19,
                    ..base
                },
                "os_reserve_bytes",
            ),
            (
                Config {
                    os_reserve_bytes: (MAX_CHUNKS + 1) * base.chunk_bytes,
                    ..base
                },
                "os_reserve_bytes",
            ),
            (
                Config {
                    decommit_delay_ms: MAX_DECOMMIT_DELAY_MS + 1,
                    ..base
                },
                "decommit_delay_ms",
            ),
            (
                Config {
                    decommit_epoch_ms: MAX_DECOMMIT_DELAY_MS + 1,
                    ..base
                },
                "decommit_epoch_ms",
            ),
            (
                Config {
                    out_of_memory_wait_ms: MAX_OUT_OF_MEMORY_WAIT_MS + 1,
                    ..base
                },
                "out_of_memory_wait_ms",
            ),
        ];
        for (config, field) in cases {
            match config.validate() {
                Err(Error::Config(e)) => assert_eq!(e.field, field),
                other => panic!("{field}: expected a config error, got {other:?}"),
            }
        }
    }

    /// Changing `chunk_bytes` alone can make a default field invalid: the
    /// message names the field the caller changed, with its value.
    #[test]
    fn an_error_names_the_field_its_range_depends_on() {
        let config = Config {
            chunk_bytes: 65536,
            ..Config::for_region(64 << 20)
        };
        let text = std::format!("{}", config.validate().expect_err("invalid"));
        assert!(text.contains("max_slab_bytes = 16384"), "{text}");
        assert!(text.contains("with chunk_bytes = 65536"), "{text}");
    }
}
