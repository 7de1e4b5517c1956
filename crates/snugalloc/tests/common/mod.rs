//! Helpers shared by the integration tests.
#![allow(dead_code)]

use core::alloc::Layout;
use snugalloc::{Attached, Config, Heap};

/// A heap over a leaked, 64-byte-aligned buffer of `bytes` bytes.
pub fn fixed_heap(bytes: usize) -> Heap {
    fixed_heap_with(bytes, Config::for_region(bytes))
}

pub fn fixed_heap_with(bytes: usize, config: Config) -> Heap {
    let region: &'static mut [u64] = vec![0u64; bytes / 8].leak();
    // SAFETY: the leaked buffer lives forever and nothing else uses it.
    unsafe { Heap::from_region(region.as_mut_ptr().cast(), bytes, config) }.expect("valid heap")
}

/// Allocates blocks of `layout` from `a` until the heap refuses one; the
/// blocks got.
pub fn alloc_until_full(a: &mut Attached<'_>, layout: Layout) -> Vec<*mut u8> {
    core::iter::from_fn(|| Some(a.alloc(layout)).filter(|p| !p.is_null())).collect()
}

/// Bytes of chunks handed out for objects (slabs and large runs), i.e.
/// reserved bytes less metadata.
pub fn object_chunk_bytes(heap: &Heap) -> usize {
    let s = heap.stats();
    s.reserved_bytes - s.metadata_bytes
}

/// Fills `len` bytes at `p` with a pattern derived from `seed`.
///
/// # Safety
/// `p` must be valid for writes of `len` bytes.
pub unsafe fn fill(p: *mut u8, len: usize, seed: u8) {
    for i in 0..len {
        // SAFETY: the caller guarantees `len` valid bytes at `p`.
        unsafe { *p.add(i) = seed.wrapping_add(i as u8) };
    }
}

/// Checks the pattern written by [`fill`].
///
/// # Safety
/// `p` must be valid for reads of `len` bytes.
pub unsafe fn check(p: *const u8, len: usize, seed: u8) -> bool {
    (0..len).all(|i| {
        // SAFETY: the caller guarantees `len` valid bytes at `p`.
        unsafe { *p.add(i) == seed.wrapping_add(i as u8) }
    })
}

/// For a test that must be the only one in its process (it measures the
/// whole process, or the heap of a global allocator other tests share):
/// in the test harness's process, runs test `name` again alone in a child
/// marked by the environment variable `marker`, asserts that it passed,
/// and returns false; in that child, returns true, so the test goes on.
pub fn alone_in_a_child(name: &str, marker: &str) -> bool {
    if std::env::var_os(marker).is_some() {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(marker, "1")
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("1 passed"),
        "the child ran no test:\n{stdout}"
    );
    false
}
