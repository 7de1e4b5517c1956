//! Depot: objects freed by a thread other than their owner's, kept where
//! any allocator can hand them out again.
//!
//! A small object belongs to its slab, and its slab to one allocator: only
//! that allocator may put the object back on the slab's free list. An
//! allocator that frees another's object keeps it (`foreign`, up to a
//! bound) and hands it out on its next allocations of the class; past that
//! bound the object used to go to its owner's inbox. With more threads than
//! cores the owner is usually attached to a descheduled thread, and its
//! inbox, with the slabs it pins, waited for that thread's next timeslice
//! (11,596 objects at the peak of a replay with slices of 30,000
//! operations, whose slabs of objects up to 1 KiB then held 5.3 MiB
//! against 2.9 MiB with slices of 1,500). The depot takes those overflows instead:
//! whole lists of one class, which the next allocator short of objects of
//! that class takes, whichever thread it serves.
//!
//! The protocol is one word per list, as in the run cache. A slot is null
//! (empty) or the head of a list of free objects of its class, linked
//! through their first word, whose head's second word holds the list's
//! length. Anyone fills a slot with a compare-and-swap from null, and
//! empties it with one swap; whoever's swap returns the list owns it, so a
//! list is never handed out twice and there is no ABA: a slot's value is
//! only ever replaced by null, or null by a list.

use crate::pagemap::FreeObject;
use crate::size_class::NUM_CLASSES;
use crate::sync::model::{AtomicPtr, AtomicUsize, Ordering};
use crate::sync::CachePadded;
use core::ptr::null_mut;

/// Lists the depot holds per class. Measured with the replay at slices of
/// 30,000 operations (session 13): with 2, a third of the overflows still
/// found the class's slots full and went home. 16 and 32 cut the
/// replay's failures further (docs/architecture.md, "The depot"), but 32
/// cost 9% of threaded throughput when the cores were far apart: every
/// list that passes through the depot is a cache line moved between them.
#[cfg(not(loom))]
pub(crate) const DEPOT_LISTS: usize = 8;
/// Fewer slots under loom, which explores every interleaving of them.
#[cfg(loom)]
pub(crate) const DEPOT_LISTS: usize = 2;

/// The objects of one list, handed over by [`Depot::take`] or
/// [`Depot::drain`]: `count` free objects linked from `head` through
/// their first word, null after the last.
pub(crate) struct List {
    pub(crate) head: *mut FreeObject,
    pub(crate) count: usize,
}

/// Lists of freed objects by class.
///
/// Invariants: a non-null slot of class `c` heads a list of `count`
/// distinct free objects of class `c` (each an object slot of a slab of
/// this heap that counts it as in use), linked through their first word
/// and ended by null, with `count`, which is at least 1, in the head's
/// second word; no other slot, allocator list or inbox holds any of them;
/// `bytes` is at least the size of the objects in the slots (a statistic:
/// raised before a slot is filled, lowered after it is emptied).
pub(crate) struct Depot {
    classes: [CachePadded<[AtomicPtr<FreeObject>; DEPOT_LISTS]>; NUM_CLASSES],
    bytes: AtomicUsize,
}

/// The length a list's head carries (its second word).
///
/// # Safety
/// `head` must be the head of a list as [`Depot`]'s invariant describes,
/// owned by the caller.
unsafe fn count_of(head: *mut FreeObject) -> usize {
    // SAFETY: objects are at least 16 bytes and aligned to 16, so the
    // second word is in the object; the caller owns it.
    unsafe { head.cast::<usize>().add(1).read() }
}

impl Depot {
    pub(crate) fn new() -> Depot {
        Depot {
            classes: core::array::from_fn(|_| {
                CachePadded(core::array::from_fn(|_| AtomicPtr::new(null_mut())))
            }),
            bytes: AtomicUsize::new(0),
        }
    }

    /// Bytes of objects in the depot (a statistic).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Keeps `count` objects of `class`, `object_bytes` each, linked from
    /// `head`, if a slot of the class is empty; returns whether it did.
    ///
    /// # Safety
    /// `head` must link `count >= 1` free objects of `class` through their
    /// first word, ended by null, each an object slot of this heap's slabs
    /// that counts it as in use, held by nothing else; the caller gives them
    /// up if this returns true.
    pub(crate) unsafe fn put(
        &self,
        class: usize,
        head: *mut FreeObject,
        count: usize,
        object_bytes: usize,
        limit_bytes: usize,
    ) -> bool {
        let Some(slots) = self.classes.get(class) else {
            return false;
        };
        if self.bytes.load(Ordering::Relaxed) + count * object_bytes > limit_bytes {
            return false;
        }
        for slot in slots.0.iter() {
            if !slot.load(Ordering::Relaxed).is_null() {
                continue;
            }
            // SAFETY: the caller owns the list and every object has a
            // second word (16 bytes at least).
            unsafe { head.cast::<usize>().add(1).write(count) };
            // Counted first: the count never falls below the slots.
            self.bytes
                .fetch_add(count * object_bytes, Ordering::Relaxed);
            // Release pairs with the Acquire swaps in `take` and `drain`:
            // whoever empties the slot sees the links and the count.
            if slot
                .compare_exchange(null_mut(), head, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                return true;
            }
            self.bytes
                .fetch_sub(count * object_bytes, Ordering::Relaxed);
        }
        false
    }

    /// Whether a list of `class` headed by `head` is in the depot now (a
    /// racy read; nothing is dereferenced).
    pub(crate) fn holds_list(&self, class: usize, head: *mut FreeObject) -> bool {
        self.classes
            .get(class)
            .is_some_and(|slots| slots.0.iter().any(|s| s.load(Ordering::Relaxed) == head))
    }

    /// Takes a list of `class` (objects of `object_bytes`), if one is
    /// there; the caller then holds its objects.
    #[inline]
    pub(crate) fn take(&self, class: usize, object_bytes: usize) -> Option<List> {
        let slots = self.classes.get(class)?;
        slots
            .0
            .iter()
            .find_map(|slot| self.empty_slot(slot, object_bytes))
    }

    /// Empties `slot` (of a class of objects of `object_bytes`), returning
    /// the list it held, which the caller then holds.
    #[inline]
    fn empty_slot(&self, slot: &AtomicPtr<FreeObject>, object_bytes: usize) -> Option<List> {
        if slot.load(Ordering::Relaxed).is_null() {
            return None;
        }
        // Acquire pairs with the Release in `put`.
        let head = slot.swap(null_mut(), Ordering::Acquire);
        if head.is_null() {
            return None;
        }
        // SAFETY: a non-null slot heads a list (invariant), which the swap
        // made ours.
        let count = unsafe { count_of(head) };
        self.bytes
            .fetch_sub(count * object_bytes, Ordering::Relaxed);
        Some(List { head, count })
    }

    /// Empties every slot, handing each list taken to `give` with its
    /// class, which then holds its objects. Any thread may call this at any
    /// time; `object_bytes` gives a class's object size.
    pub(crate) fn drain(
        &self,
        object_bytes: impl Fn(usize) -> usize,
        mut give: impl FnMut(usize, List),
    ) {
        if self.bytes.load(Ordering::Relaxed) == 0 {
            return;
        }
        for (class, slots) in self.classes.iter().enumerate() {
            for slot in slots.0.iter() {
                if let Some(list) = self.empty_slot(slot, object_bytes(class)) {
                    give(class, list);
                }
            }
        }
    }
}

#[cfg(test)]
mod test_lists {
    extern crate std;
    use super::*;
    use std::boxed::Box;
    use std::vec::Vec;

    /// `n` made-up free objects (16 bytes, aligned to 16) linked into a
    /// list; leaked, as the model threads share them.
    pub(super) fn list(n: usize) -> *mut FreeObject {
        let mut head: *mut FreeObject = null_mut();
        for _ in 0..n {
            // 16 bytes, aligned to 16, as the smallest class's objects.
            let obj = Box::into_raw(Box::new(0u128)).cast::<FreeObject>();
            // SAFETY: just allocated, ours.
            unsafe { (*obj).next = head };
            head = obj;
        }
        head
    }

    /// Frees the made-up objects of a list from `list`.
    #[cfg_attr(loom, allow(dead_code))]
    pub(super) fn free_list(mut head: *mut FreeObject) {
        while !head.is_null() {
            // SAFETY: the list links objects `list` made with
            // `Box::into_raw`, each freed once here.
            let next = unsafe { (*head).next };
            // SAFETY: as above.
            drop(unsafe { Box::from_raw(head.cast::<u128>()) });
            head = next;
        }
    }

    /// The objects of a list handed over, by address.
    pub(super) fn objects(l: &List) -> Vec<usize> {
        let mut out = Vec::new();
        let mut p = l.head;
        while !p.is_null() {
            out.push(p as usize);
            // SAFETY: the list links made-up objects from `list`.
            p = unsafe { (*p).next };
        }
        assert_eq!(out.len(), l.count, "a list's count is its length");
        out
    }

    /// Every object of a list, by address (before it is handed over).
    pub(super) fn addresses(head: *mut FreeObject) -> Vec<usize> {
        objects(&List {
            head,
            count: {
                let mut n = 0;
                let mut p = head;
                while !p.is_null() {
                    n += 1;
                    // SAFETY: as in `objects`.
                    p = unsafe { (*p).next };
                }
                n
            },
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    extern crate std;
    use super::test_lists::{addresses, free_list, list, objects};
    use super::*;
    use std::vec::Vec;

    #[test]
    fn lists_go_whole_to_one_taker_within_the_slots_and_the_limit() {
        let d = Depot::new();
        // Every list that comes back to the test, freed at the end.
        let mut back = Vec::new();
        let a = list(3);
        let want = addresses(a);
        // SAFETY: made-up objects, given up.
        assert!(unsafe { d.put(5, a, 3, 16, 1024) });
        assert_eq!(d.bytes(), 48);
        assert!(d.take(4, 16).is_none(), "another class");
        let got = d.take(5, 16).expect("the list");
        assert_eq!(objects(&got), want);
        back.push(got.head);
        assert_eq!(d.bytes(), 0);
        assert!(d.take(5, 16).is_none());
        // The byte limit, then the slots.
        let over = list(2);
        // SAFETY: made-up objects.
        assert!(!unsafe { d.put(5, over, 2, 16, 31) }, "over the limit");
        back.push(over);
        for _ in 0..DEPOT_LISTS {
            // SAFETY: made-up objects.
            assert!(unsafe { d.put(5, list(1), 1, 16, usize::MAX) });
        }
        let (extra, other) = (list(1), list(1));
        // SAFETY: made-up objects.
        let full = unsafe { d.put(5, extra, 1, 16, usize::MAX) };
        assert!(!full, "slots full");
        // SAFETY: made-up objects.
        let no_class = unsafe { d.put(NUM_CLASSES, other, 1, 16, usize::MAX) };
        assert!(!no_class, "no such class");
        back.extend([extra, other]);
        let mut drained = Vec::new();
        d.drain(
            |_| 16,
            |class, l| {
                drained.push((class, l.count));
                back.push(l.head);
            },
        );
        assert_eq!(drained, std::vec![(5, 1); DEPOT_LISTS]);
        assert_eq!(d.bytes(), 0);
        for head in back {
            free_list(head);
        }
    }
}

/// Model checks (run with `RUSTFLAGS="--cfg loom"`, see `.ci/loom`).
#[cfg(all(test, loom))]
mod loom_tests {
    extern crate std;
    use super::test_lists::{addresses, list, objects};
    use super::*;
    use loom::sync::Arc;
    use std::vec::Vec;

    /// Lists of made-up objects, and all their objects by address.
    fn lists(lens: &[usize]) -> (Vec<usize>, Vec<usize>) {
        let heads: Vec<*mut FreeObject> = lens.iter().map(|&n| list(n)).collect();
        let all = heads.iter().flat_map(|&h| addresses(h)).collect();
        // Pointers as addresses: the model's threads share made-up
        // objects, which only the depot's protocol hands over.
        (heads.into_iter().map(|h| h as usize).collect(), all)
    }

    /// Puts the list at `head` (`n` objects) or returns its objects.
    fn put_or_keep(d: &Depot, head: usize, n: usize) -> Vec<usize> {
        let head = head as *mut FreeObject;
        // SAFETY: made-up objects, given up if put.
        if unsafe { d.put(0, head, n, 16, usize::MAX) } {
            Vec::new()
        } else {
            addresses(head)
        }
    }

    fn check(mut got: Vec<usize>, mut want: Vec<usize>, d: &Depot) {
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want, "every object exactly once");
        assert_eq!(d.bytes(), 0);
    }

    /// Two threads put a list each into the same class while a third takes
    /// one: no list is lost or handed out twice (a plain store of a seen
    /// empty slot would overwrite the other's list).
    #[test]
    fn loom_lists_put_at_once_and_taken_each_have_one_holder() {
        loom::model(|| {
            let d = Arc::new(Depot::new());
            let (heads, want) = lists(&[1, 2]);
            let (a, b) = (heads[0], heads[1]);
            let putter = {
                let d = d.clone();
                loom::thread::spawn(move || put_or_keep(&d, b, 2))
            };
            let taker = {
                let d = d.clone();
                loom::thread::spawn(move || d.take(0, 16).map_or(Vec::new(), |l| objects(&l)))
            };
            let mut got = put_or_keep(&d, a, 1);
            got.extend(putter.join().unwrap());
            got.extend(taker.join().unwrap());
            d.drain(|_| 16, |_, l| got.extend(objects(&l)));
            check(got, want, &d);
        });
    }

    /// A take and a drain race for the same lists while another list is
    /// put: each list goes to one of them (a take that read a slot and then
    /// cleared it, instead of one swap, would hand a list to both), and the
    /// drain's early return on a zero count never leaves a list behind that
    /// the final drain would not find.
    #[test]
    fn loom_a_take_and_a_drain_never_share_a_list() {
        loom::model(|| {
            let d = Arc::new(Depot::new());
            let (heads, want) = lists(&[1, 2]);
            let mut got = put_or_keep(&d, heads[0], 1);
            let b = heads[1];
            let putter = {
                let d = d.clone();
                loom::thread::spawn(move || put_or_keep(&d, b, 2))
            };
            let taker = {
                let d = d.clone();
                loom::thread::spawn(move || d.take(0, 16).map_or(Vec::new(), |l| objects(&l)))
            };
            d.drain(|_| 16, |_, l| got.extend(objects(&l)));
            got.extend(putter.join().unwrap());
            got.extend(taker.join().unwrap());
            d.drain(|_| 16, |_, l| got.extend(objects(&l)));
            check(got, want, &d);
        });
    }
}
