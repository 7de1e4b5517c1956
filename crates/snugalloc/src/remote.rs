//! Remote frees: objects freed by an allocator that does not own their slab
//! travel back to the owner as messages.
//!
//! The freeing allocator collects them in [`Outgoing`], a small
//! direct-mapped cache of batches keyed by owner. A batch is a linked list
//! threaded through the freed objects themselves; when it is full, when its
//! slot is needed for another owner, or when the allocator detaches, it is
//! posted to the owner's [`Inbox`] with one compare-and-swap. The owner
//! takes its whole inbox with one swap on its slow path, at attach and at
//! detach; reclamation takes the inboxes of idle allocators. Messages are
//! never dropped: an idle owner's inbox simply waits.

use core::ptr::null_mut;

use crate::pagemap::FreeObject;
use crate::sync::model::{AtomicPtr, AtomicUsize, Ordering};

/// Objects per batch before it is posted.
pub(crate) const BATCH_OBJECTS: u32 = 64;
/// Slots in the outgoing cache (a power of two).
pub(crate) const OUTGOING_SLOTS: usize = 16;

/// An allocator's multi-producer, single-consumer list of freed objects.
///
/// Invariant: `head` links objects (through `FreeObject::next`) that were
/// freed by clients and belong (or belonged, before adoption) to slabs of
/// this allocator; `count` is at least the number of objects on it: raised
/// before a batch is linked in, lowered after one is taken out.
pub(crate) struct Inbox {
    head: AtomicPtr<FreeObject>,
    count: AtomicUsize,
}

impl Inbox {
    pub(crate) fn new() -> Inbox {
        Inbox {
            head: AtomicPtr::new(null_mut()),
            count: AtomicUsize::new(0),
        }
    }

    /// Links the batch `first ..= last` (already linked, `count` objects)
    /// in front of the inbox.
    ///
    /// # Safety
    /// `first ..= last` must be a list of `count` valid free objects, owned
    /// by nobody else, whose last `next` field may be overwritten.
    pub(crate) unsafe fn post(&self, first: *mut FreeObject, last: *mut FreeObject, count: usize) {
        // Counted before the batch is linked, so a drain never subtracts
        // objects that were not counted yet (Relaxed: a statistic only).
        self.count.fetch_add(count, Ordering::Relaxed);
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            // SAFETY: `last` is a free object the caller handed over.
            unsafe { (*last).next = head };
            // Release pairs with the Acquire swap in `take`: the owner sees
            // the links written above.
            match self
                .head
                .compare_exchange_weak(head, first, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => head = now,
            }
        }
    }

    /// Whether anything is waiting (a hint; may race with posts).
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.head.load(Ordering::Relaxed).is_null()
    }

    /// Takes the whole list.
    pub(crate) fn take(&self) -> *mut FreeObject {
        // Acquire pairs with the Release CAS in `post`.
        self.head.swap(null_mut(), Ordering::Acquire)
    }

    /// Records that `n` objects taken from the inbox have been handled.
    pub(crate) fn taken(&self, n: usize) {
        // Relaxed: a statistic only.
        self.count.fetch_sub(n, Ordering::Relaxed);
    }

    /// Objects waiting (racy).
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

/// One outgoing batch for one owner: `count` free objects of slabs that
/// `owner` owns, linked through their first word from `first` to `last`
/// (whose link is null); `first` and `last` are null when `count` is 0.
#[derive(Clone, Copy)]
pub(crate) struct Batch {
    pub(crate) owner: u32,
    pub(crate) first: *mut FreeObject,
    pub(crate) last: *mut FreeObject,
    pub(crate) count: u32,
}

impl Batch {
    pub(crate) const EMPTY: Batch = Batch {
        owner: u32::MAX,
        first: null_mut(),
        last: null_mut(),
        count: 0,
    };
}

/// An allocator's outgoing batches.
///
/// Invariant: a slot with `count > 0` holds a list `first ..= last` of
/// `count` objects, all of slabs owned by allocator `owner`; `pending` is
/// the sum of the counts.
pub(crate) struct Outgoing {
    pub(crate) slots: [Batch; OUTGOING_SLOTS],
    pub(crate) pending: usize,
}

impl Outgoing {
    pub(crate) const fn new() -> Outgoing {
        Outgoing {
            slots: [Batch::EMPTY; OUTGOING_SLOTS],
            pending: 0,
        }
    }

    /// Adds `obj` to the batch for `owner`. Returns a batch that must be
    /// posted now (full, or evicted from the slot), if any.
    ///
    /// # Safety
    /// `obj` must be a valid object of a slab owned by `owner`, given up by
    /// the client.
    #[inline]
    pub(crate) unsafe fn push(&mut self, owner: u16, obj: *mut FreeObject) -> Option<Batch> {
        let slot = &mut self.slots[owner as usize & (OUTGOING_SLOTS - 1)];
        let mut evicted = None;
        if slot.owner != u32::from(owner) {
            if slot.count > 0 {
                evicted = Some(*slot);
                self.pending -= slot.count as usize;
            }
            *slot = Batch {
                owner: u32::from(owner),
                ..Batch::EMPTY
            };
        }
        // SAFETY: the caller gave us `obj`; its first word is ours to link.
        unsafe { (*obj).next = slot.first };
        if slot.last.is_null() {
            slot.last = obj;
        }
        slot.first = obj;
        slot.count += 1;
        self.pending += 1;
        if evicted.is_none() && slot.count >= BATCH_OBJECTS {
            let full = *slot;
            self.pending -= full.count as usize;
            *slot = Batch::EMPTY;
            return Some(full);
        }
        evicted
    }

    /// Empties every slot, calling `post` for each non-empty batch.
    pub(crate) fn drain(&mut self, mut post: impl FnMut(Batch)) {
        for slot in self.slots.iter_mut() {
            if slot.count > 0 {
                post(*slot);
            }
            *slot = Batch::EMPTY;
        }
        self.pending = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    fn objects(n: usize) -> Vec<FreeObject> {
        (0..n).map(|_| FreeObject { next: null_mut() }).collect()
    }

    fn list_len(mut p: *mut FreeObject) -> usize {
        let mut n = 0;
        while !p.is_null() {
            n += 1;
            // SAFETY: the test's lists link valid objects of its vectors.
            p = unsafe { (*p).next };
        }
        n
    }

    #[test]
    fn batches_fill_and_evict() {
        let mut objs = objects(200);
        let mut out = Outgoing::new();
        let mut posted = Vec::new();
        for (i, o) in objs.iter_mut().enumerate() {
            // Owners 1 and 17 share slot 1, so they evict each other.
            let owner = if i < 150 { 1 } else { 17 };
            // SAFETY: each object is pushed once.
            if let Some(b) = unsafe { out.push(owner, o) } {
                posted.push(b);
            }
        }
        // Two full batches of owner 1, then the 22 left evicted by owner 17.
        assert_eq!(posted.len(), 3);
        assert_eq!(posted[0].count, 64);
        assert_eq!(posted[2].count, 22);
        assert!(posted.iter().all(|b| b.owner == 1));
        assert_eq!(out.pending, 50);
        let inbox = Inbox::new();
        for b in &posted {
            // SAFETY: each batch is a distinct list of test objects.
            unsafe { inbox.post(b.first, b.last, b.count as usize) };
        }
        out.drain(|b| {
            assert_eq!(b.owner, 17);
            assert_eq!(b.count, 50);
            // SAFETY: as above.
            unsafe { inbox.post(b.first, b.last, b.count as usize) };
        });
        assert_eq!(out.pending, 0);
        assert_eq!(inbox.count(), 200);
        let all = inbox.take();
        assert_eq!(list_len(all), 200);
        assert!(inbox.is_empty());
    }

    #[test]
    fn concurrent_posts_lose_nothing() {
        let inbox = Inbox::new();
        struct Objects(*mut FreeObject, usize);
        // SAFETY: each thread gets a distinct slice of objects to post.
        unsafe impl Send for Objects {}
        let mut pools: Vec<Vec<FreeObject>> = (0..4).map(|_| objects(250)).collect();
        std::thread::scope(|s| {
            for pool in pools.iter_mut() {
                let (inbox, objs) = (&inbox, Objects(pool.as_mut_ptr(), pool.len()));
                s.spawn(move || {
                    let objs = objs;
                    for i in 0..objs.1 {
                        // SAFETY: `i < len` of this thread's vector; each
                        // object is posted once, as a batch of one, and
                        // outlives the inbox's use of it.
                        unsafe {
                            let p = objs.0.add(i);
                            inbox.post(p, p, 1);
                        }
                    }
                });
            }
        });
        assert_eq!(list_len(inbox.take()), 1000);
        assert_eq!(inbox.count(), 1000);
        drop(pools);
    }
}

/// Model checks (run with `RUSTFLAGS="--cfg loom"`, see `.ci/loom`).
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    extern crate std;
    use loom::sync::Arc;
    use std::boxed::Box;

    fn object() -> *mut FreeObject {
        Box::into_raw(Box::new(FreeObject { next: null_mut() }))
    }

    /// Two senders post batches while the owner takes: every object arrives
    /// exactly once, and the links the senders wrote are visible to it.
    #[test]
    fn concurrent_posts_and_take_lose_nothing() {
        loom::model(|| {
            let inbox = Arc::new(Inbox::new());
            let senders: std::vec::Vec<_> = (0..2)
                .map(|_| {
                    let inbox = Arc::clone(&inbox);
                    loom::thread::spawn(move || {
                        let (a, b) = (object(), object());
                        // SAFETY: fresh objects; `a -> b` is a batch of two.
                        unsafe {
                            (*a).next = b;
                            inbox.post(a, b, 2);
                        }
                    })
                })
                .collect();
            let mut seen = 0;
            let mut drain = |p: *mut FreeObject| {
                let mut p = p;
                while !p.is_null() {
                    // SAFETY: objects in the inbox are valid boxes posted
                    // above; each is taken once and freed here.
                    let next = unsafe { (*p).next };
                    // SAFETY: as above; `p` is not used after this.
                    drop(unsafe { Box::from_raw(p) });
                    seen += 1;
                    p = next;
                }
            };
            drain(inbox.take());
            for s in senders {
                s.join().expect("sender");
            }
            drain(inbox.take());
            assert_eq!(seen, 4);
        });
    }
}
