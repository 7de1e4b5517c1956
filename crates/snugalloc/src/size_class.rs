//! Size classes: the object sizes slabs are carved into, and the mapping
//! from a requested size to the smallest class that holds it.
//!
//! The classes are 16 B apart up to 128 B, then eight per power of two
//! (steps of 1/8 of the lower power), up to 64 KiB: 80 classes. The worst
//! internal waste of a class is the step below it over its size, so:
//!
//! | sizes | step | worst waste per object |
//! |---|---|---|
//! | 16 - 128 B | 16 B | 50% at 17 B, 11% at 128 B |
//! | 129 B - 64 KiB | 1/8 of the power of two below | 11.1% (a request 1 B above a class) |
//!
//! Every class size is a multiple of 16, so every object is 16-byte aligned
//! (slab starts are chunk-aligned). Which classes a heap serves from slabs,
//! and how many chunks each slab takes, is decided per heap by
//! [`ClassTable::new`] from the [`Config`](crate::Config). A heap may also
//! serve fewer classes (`Config::classes_per_doubling`: 4 or 2 per power of
//! two above 128 B, worst waste 25% or 50%): a request then takes the next
//! class the heap keeps. Small fixed heaps use 4, because every attached
//! allocator holds a partly used slab for each class it touches.

/// Number of size classes.
pub const NUM_CLASSES: usize = 80;
/// The largest size class, in bytes.
pub const MAX_CLASS_BYTES: usize = 64 * 1024;

/// Size in bytes of class `class` (which must be below [`NUM_CLASSES`]).
#[inline]
pub fn class_size(class: usize) -> usize {
    CLASS_SIZES[class] as usize
}

/// `CLASS_SIZES[c]` is the size of class `c`.
static CLASS_SIZES: [u32; NUM_CLASSES] = {
    let mut table = [0u32; NUM_CLASSES];
    let mut c = 0;
    while c < NUM_CLASSES {
        table[c] = computed_class_size(c) as u32;
        c += 1;
    }
    table
};

/// Size of class `class`, computed (for the table).
const fn computed_class_size(class: usize) -> usize {
    if class < 8 {
        (class + 1) * 16
    } else {
        let bits = 7 + (class - 8) / 8;
        let mantissa = (class - 8) % 8;
        (1 << bits) + (mantissa + 1) * (1 << (bits - 3))
    }
}

/// The class for sizes above 1 KiB, computed from the bit length.
#[inline]
pub(crate) const fn class_of_computed(size: usize) -> usize {
    let s = size - 1;
    let bits = (usize::BITS - 1 - s.leading_zeros()) as usize;
    let mantissa = (s >> (bits - 3)) & 7;
    8 + (bits - 7) * 8 + mantissa
}

/// Sizes up to this are mapped to classes by table.
pub(crate) const LOOKUP_LIMIT: usize = 1024;
/// Entries of a size-to-class table.
pub(crate) const LOOKUP_LEN: usize = LOOKUP_LIMIT / 16 + 1;

/// `SMALL_LOOKUP[(size + 15) / 16]` is the class of `size` for sizes up to 1 KiB.
static SMALL_LOOKUP: [u8; LOOKUP_LEN] = {
    let mut table = [0u8; LOOKUP_LEN];
    let mut i = 1;
    while i < table.len() {
        let size = i * 16;
        table[i] = if size <= 128 {
            (i - 1) as u8
        } else {
            class_of_computed(size) as u8
        };
        debug_assert!(computed_class_size(table[i] as usize) >= size);
        i += 1;
    }
    table
};

/// The smallest class holding `size` bytes, for `size <= MAX_CLASS_BYTES`.
#[inline(always)]
pub(crate) fn class_of(size: usize) -> usize {
    debug_assert!(size <= MAX_CLASS_BYTES);
    if size <= LOOKUP_LIMIT {
        SMALL_LOOKUP[(size + 15) >> 4] as usize
    } else {
        class_of_computed(size)
    }
}

/// The size class a heap with the widest configuration would use for
/// `size` (`None` above 64 KiB). A heap serves classes up to its
/// `max_slab_object_bytes` from slabs; see [`crate::Heap::size_class_of`].
pub fn size_class_of(size: usize) -> Option<usize> {
    (size <= MAX_CLASS_BYTES).then(|| class_of(size))
}

/// Per-heap facts about one class.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClassInfo {
    /// Object size in bytes.
    pub(crate) object_bytes: u32,
    /// Chunks per slab.
    pub(crate) slab_chunks: u32,
    /// Objects per slab.
    pub(crate) capacity: u32,
    /// `capacity * object_bytes`: offsets below this are object slots.
    pub(crate) span_bytes: u32,
    /// `u64::MAX / object_bytes + 1`: `n` (below 2^32) is a multiple of
    /// `object_bytes` iff `n * magic` (wrapping) is below `magic`.
    pub(crate) divide_magic: u64,
}

impl ClassInfo {
    /// Whether `offset` (below 2^32) is a whole number of objects.
    #[inline(always)]
    pub(crate) fn is_object_start(&self, offset: usize) -> bool {
        (offset as u64).wrapping_mul(self.divide_magic) < self.divide_magic
    }
}

/// Slab geometry for every class of one heap.
///
/// Invariant: for every class `c <= max_small`, `capacity >= 1`,
/// `slab_chunks * chunk_bytes >= capacity * object_bytes`, and
/// `slab_chunks * chunk_bytes <= max_slab_bytes`.
pub(crate) struct ClassTable {
    pub(crate) info: [ClassInfo; NUM_CLASSES],
    /// The classes this heap serves, as a map: `serves[c]` is the class
    /// that serves requests of class `c` (itself, or the next larger class
    /// when the heap uses fewer classes per power of two).
    pub(crate) serves: [u8; NUM_CLASSES],
    /// `lookup[(size + 15) / 16]` is the serving class of `size`, for sizes
    /// up to 1 KiB.
    pub(crate) lookup: [u8; LOOKUP_LEN],
    /// The largest class served from slabs.
    pub(crate) max_small: usize,
    /// `class_size(max_small)`: requests up to this size use slabs.
    pub(crate) small_limit_bytes: usize,
}

/// Fewest objects a slab should hold when a slab within the limit allows it.
const MIN_OBJECTS: usize = 4;

/// Chunks per slab for objects of `size`: the smallest slab that wastes at
/// most 1/16 of itself and holds at least [`MIN_OBJECTS`]; else the
/// smallest wasting at most 1/16; else the one wasting the least.
fn slab_chunks_for(size: usize, chunk_bytes: usize, max_chunks: usize) -> usize {
    let waste = |k: usize| (k * chunk_bytes) % size;
    let fits = |k: usize| (k * chunk_bytes) / size >= 1;
    let low_waste = |k: usize| waste(k) * 16 <= k * chunk_bytes;
    let candidates = || (1..=max_chunks).filter(|&k| fits(k));
    if let Some(k) = candidates().find(|&k| low_waste(k) && (k * chunk_bytes) / size >= MIN_OBJECTS)
    {
        return k;
    }
    if let Some(k) = candidates().find(|&k| low_waste(k)) {
        return k;
    }
    // Least wasted fraction: compare waste(a)/a against waste(b)/b.
    candidates()
        .min_by(|&a, &b| (waste(a) * b).cmp(&(waste(b) * a)))
        .unwrap_or(max_chunks)
}

impl ClassTable {
    /// Computes the table for a validated configuration.
    ///
    /// `classes_per_doubling` (8, 4 or 2) thins the classes above 128 B: with
    /// 4, every other class is served by the next one (worst waste 25%
    /// instead of 11%), so an allocator keeps half as many partly used slabs.
    pub(crate) fn new(
        chunk_bytes: usize,
        max_slab_bytes: usize,
        max_slab_object_bytes: usize,
        classes_per_doubling: usize,
    ) -> Self {
        // Classes above 128 B are `8 + 8 * octave + m`, m = 0..8; keep those
        // with `m | keep == m`, so the largest of each octave always stays.
        let keep = (8 / classes_per_doubling.clamp(1, 8)) - 1;
        let mut serves = [0u8; NUM_CLASSES];
        for (class, s) in serves.iter_mut().enumerate() {
            *s = if class < 8 {
                class as u8
            } else {
                (8 + ((class - 8) | keep)) as u8
            };
        }
        let max_chunks = max_slab_bytes / chunk_bytes;
        let max_small = class_of(max_slab_object_bytes.min(MAX_CLASS_BYTES));
        // class_of rounds up; step back if that class is above the limit.
        let mut max_small = if class_size(max_small) > max_slab_object_bytes && max_small > 0 {
            max_small - 1
        } else {
            max_small
        };
        // ... and further down to a class this heap serves.
        while serves[max_small] as usize != max_small {
            max_small -= 1;
        }
        let mut info = [ClassInfo {
            object_bytes: 0,
            slab_chunks: 0,
            capacity: 0,
            span_bytes: 0,
            divide_magic: 0,
        }; NUM_CLASSES];
        for (class, row) in info.iter_mut().enumerate() {
            let size = class_size(class);
            let chunks = if class <= max_small {
                slab_chunks_for(size, chunk_bytes, max_chunks)
            } else {
                0
            };
            let capacity = (chunks * chunk_bytes) / size;
            *row = ClassInfo {
                object_bytes: size as u32,
                slab_chunks: chunks as u32,
                capacity: capacity as u32,
                span_bytes: (capacity * size) as u32,
                divide_magic: u64::MAX / size as u64 + 1,
            };
        }
        let mut lookup = SMALL_LOOKUP;
        for class in lookup.iter_mut() {
            *class = serves[*class as usize];
        }
        ClassTable {
            info,
            serves,
            lookup,
            max_small,
            small_limit_bytes: class_size(max_small),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_trip() {
        for class in 0..NUM_CLASSES {
            let size = class_size(class);
            assert_eq!(class_of(size), class, "class {class} size {size}");
            assert_eq!(size % 16, 0);
            if class > 0 {
                let below = class_size(class - 1);
                assert!(below < size);
                assert_eq!(class_of(below + 1), class);
            }
        }
        assert_eq!(class_size(NUM_CLASSES - 1), MAX_CLASS_BYTES);
        assert_eq!(class_of(0), 0);
        assert_eq!(class_of(1), 0);
    }

    #[test]
    fn every_size_fits_its_class_with_bounded_waste() {
        for size in 1..=MAX_CLASS_BYTES {
            let class = class_of(size);
            let cs = class_size(class);
            assert!(cs >= size, "size {size} class {class}");
            if size > 128 {
                // At most one step (1/8 of the power below) over the request.
                assert!((cs - size) * 8 < cs, "size {size} wastes too much in {cs}");
            }
        }
    }

    #[test]
    fn lookup_agrees_with_computation() {
        for size in 129..=LOOKUP_LIMIT {
            assert_eq!(class_of(size), class_of_computed(size), "size {size}");
        }
    }

    #[test]
    fn object_start_check_is_exact() {
        // The rows the heap uses, every class in slabs.
        let table = ClassTable::new(65536, 1 << 20, MAX_CLASS_BYTES, 8);
        for class in 0..NUM_CLASSES {
            let size = class_size(class);
            let info = table.info[class];
            assert_eq!(info.object_bytes as usize, size);
            for offset in [
                0,
                1,
                size - 1,
                size,
                size + 16,
                2 * size,
                7 * size + 3,
                1 << 20,
            ] {
                assert_eq!(
                    info.is_object_start(offset),
                    offset % size == 0,
                    "size {size} offset {offset}"
                );
            }
        }
    }

    #[test]
    fn slab_geometry_respects_limits() {
        for (chunk, slab, obj) in [
            (4096, 16384, 4096),
            (16384, 65536, 16384),
            (4096, 4096, 4096),
            (65536, 1 << 20, 65536),
        ] {
            let table = ClassTable::new(chunk, slab, obj, 8);
            assert!(class_size(table.max_small) <= obj);
            for class in 0..=table.max_small {
                let i = table.info[class];
                assert!(i.capacity >= 1, "class {class}");
                assert!(i.slab_chunks as usize * chunk <= slab);
                assert!(
                    i.capacity as usize * i.object_bytes as usize <= i.slab_chunks as usize * chunk
                );
            }
        }
        let table = ClassTable::new(4096, 16384, 4096, 8);
        // 4 KiB objects get four to a 16 KiB slab; tiny ones one chunk.
        assert_eq!(table.info[class_of(4096)].capacity, 4);
        assert_eq!(table.info[0].slab_chunks, 1);
    }

    #[test]
    fn fewer_classes_per_doubling_serve_every_size_from_a_larger_kept_class() {
        for per in [2, 4, 8] {
            let table = ClassTable::new(4096, 16384, 4096, per);
            assert_eq!(table.serves[table.max_small] as usize, table.max_small);
            for size in 1..=table.small_limit_bytes {
                let served = table.serves[class_of(size)] as usize;
                // Kept classes map to themselves, so serving is idempotent.
                assert_eq!(table.serves[served] as usize, served, "size {size}");
                assert!(served <= table.max_small && class_size(served) >= size);
                if size <= LOOKUP_LIMIT {
                    assert_eq!(table.lookup[(size + 15) >> 4] as usize, served);
                }
                // Worst rounding: one step of `per` classes per doubling.
                if size > 128 {
                    let waste = class_size(served) - size;
                    assert!(
                        waste * per < size,
                        "per {per} size {size} -> {}",
                        class_size(served)
                    );
                }
            }
            let kept = (0..=table.max_small)
                .filter(|&c| table.serves[c] as usize == c)
                .count();
            // 8 classes up to 128 B, then `per` per power of two to 4 KiB.
            assert_eq!(kept, 8 + 5 * per, "per {per}");
        }
    }
}
