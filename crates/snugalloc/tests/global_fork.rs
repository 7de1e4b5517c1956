//! `SnugAlloc` as the global allocator of a threaded program that forks
//! (it registers `pthread_atfork` handlers with its heap): another thread
//! keeps freeing blocks whose allocator is idle (their thread has exited),
//! and every child must still be able to start a thread and allocate.
//!
//! This run did not reproduce, here, the hang the handlers prevent (a child
//! inheriting a moment-long hold of the only idle allocator): with the
//! handlers left out it passed too, as the pool holds more than one idle
//! allocator. `heap::tests::no_idle_allocator_is_held_while_a_fork_is_prepared`
//! and the C library's `tests/c/fork_idle.c` do catch that; this test
//! checks that the handlers themselves leave parent and child working.

use snugalloc::SnugAlloc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[global_allocator]
static GLOBAL: SnugAlloc = SnugAlloc;

const FORKS: usize = 200;

/// The child's work: allocate and check blocks of many sizes.
extern "C" fn allocates_in_a_new_thread(_: *mut libc::c_void) -> *mut libc::c_void {
    let ok = (0..1000).all(|i| {
        let v = vec![7u8; 1 + i % 300];
        v.iter().all(|&b| b == 7)
    });
    usize::from(ok) as *mut libc::c_void
}

/// Runs `f` on a new POSIX thread and returns whether it returned non-null.
fn run_in_raw_thread(f: extern "C" fn(*mut libc::c_void) -> *mut libc::c_void) -> bool {
    let mut thread: libc::pthread_t = 0;
    // SAFETY: `thread` is a valid out-pointer; default attributes; `f`
    // takes and returns a plain pointer and unwinds nowhere.
    let made =
        unsafe { libc::pthread_create(&mut thread, core::ptr::null(), f, core::ptr::null_mut()) };
    if made != 0 {
        return false;
    }
    let mut result: *mut libc::c_void = core::ptr::null_mut();
    // SAFETY: `thread` was just created and is joined once.
    let joined = unsafe { libc::pthread_join(thread, &mut result) };
    joined == 0 && !result.is_null()
}

#[test]
fn children_of_a_busy_threaded_program_can_allocate() {
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    let freer = {
        let (stop, rounds) = (Arc::clone(&stop), Arc::clone(&rounds));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // A producer allocates and exits; its allocator goes idle
                // with the blocks' slabs, and this thread frees them.
                let blocks = Mutex::new(Vec::new());
                std::thread::scope(|s| {
                    s.spawn(|| {
                        let made: Vec<Box<[u8]>> =
                            (0..4096).map(|i| vec![1u8; 16 + i % 200].into()).collect();
                        *blocks.lock().expect("not poisoned") = made;
                    });
                });
                drop(blocks);
                rounds.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    while rounds.load(Ordering::Relaxed) == 0 {
        std::thread::yield_now();
    }
    let mut failed = Vec::new();
    for round in 0..FORKS {
        // SAFETY: the child only starts a thread, allocates and `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: arms a timer; a hung child dies of SIGALRM.
            unsafe { libc::alarm(10) };
            // A raw thread: `std::thread::spawn` takes a lock of the
            // standard library's (its stack-overflow handler's thread
            // table) that a thread of the parent starting up at the fork
            // may have held, which hung 1 child in 2,000 here.
            let ok = run_in_raw_thread(allocates_in_a_new_thread);
            // SAFETY: ends the child at once, without running the parent's
            // exit handlers a second time.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child just made.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(waited, pid, "waitpid failed");
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            failed.push((round, status));
        }
        // Let the freeing thread go on between forks.
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    stop.store(true, Ordering::Relaxed);
    freer.join().expect("the freeing thread ends");
    println!("{} producer rounds", rounds.load(Ordering::Relaxed));
    assert!(
        failed.is_empty(),
        "children that failed (round, wait status): {failed:?}"
    );
    assert!(rounds.load(Ordering::Relaxed) > 1, "the freeing thread ran");
}
