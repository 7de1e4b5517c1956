//! How long one cache line takes to go from one core to another and back,
//! measured just before and after each run, so that a throughput figure
//! can be read with the machine's state beside it.
//!
//! On a virtual machine the hypervisor may place two virtual CPUs on cores
//! that share a cache or on cores that do not, and move them while the
//! guest runs. On the development machine (2 vCPUs, AMD EPYC) the round
//! trip measured here is either about 55 ns or about 320 ns, and it
//! changes every few minutes; snugalloc, whose threads share its chunk
//! backend, ran the ecall-churn workload 40% slower in the second state,
//! jemalloc 20% (docs/architecture.md, "Where the time goes (session
//! 12)").

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Round trips per batch; the figure is the fastest batch's mean, so that
/// a moment the other thread spends descheduled (the machine is busy, or
/// the hypervisor takes the vCPU) does not count as distance.
const BATCH: u64 = 1_000;

/// Batches per measurement: about 10 ms at 55 ns, 60 ms at 320 ns.
const BATCHES: u64 = 200;

/// Gives up when the other thread has not answered for this long, or the
/// whole measurement takes longer than [`DEADLINE`].
const PATIENCE: Duration = Duration::from_millis(200);

/// See [`PATIENCE`].
const DEADLINE: Duration = Duration::from_secs(1);

/// The time, in nanoseconds, for a cache line to go from the first CPU
/// this process may run on to the second and back, between two threads
/// pinned one to each: the mean of the fastest of 200 batches of 1,000
/// round trips. `None` with fewer than two CPUs, when pinning fails, or
/// when a thread waits for the other too long. The calling thread is not
/// pinned: two threads of their own do the work.
pub fn round_trip_ns() -> Option<f64> {
    let mask = affinity()?;
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `mask` is an initialised cpu_set_t and `c` is below
        // CPU_SETSIZE.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &mask) })
        .take(2)
        .collect();
    let [a, b] = cpus[..] else {
        return None;
    };
    ping_pong(a, b)
}

fn ping_pong(a: usize, b: usize) -> Option<f64> {
    let line = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let start = Instant::now();
    let wait_for = |value: u64| -> bool {
        let since = Instant::now();
        let mut spins = 0u32;
        while line.load(Ordering::Acquire) != value {
            if failed.load(Ordering::Relaxed) {
                return false;
            }
            spins = spins.wrapping_add(1);
            if spins % 4096 == 0 && (since.elapsed() > PATIENCE || start.elapsed() > DEADLINE) {
                failed.store(true, Ordering::Relaxed);
                return false;
            }
            std::hint::spin_loop();
        }
        true
    };
    let best = std::thread::scope(|s| {
        s.spawn(|| {
            if !pin(b) {
                failed.store(true, Ordering::Relaxed);
                return;
            }
            for i in 0..BATCH * BATCHES {
                if !wait_for(2 * i + 1) {
                    return;
                }
                line.store(2 * i + 2, Ordering::Release);
            }
        });
        let pinger = s.spawn(|| {
            if !pin(a) {
                failed.store(true, Ordering::Relaxed);
                return None;
            }
            let mut best = Duration::MAX;
            for batch in 0..BATCHES {
                let began = Instant::now();
                for i in batch * BATCH..(batch + 1) * BATCH {
                    line.store(2 * i + 1, Ordering::Release);
                    if !wait_for(2 * i + 2) {
                        return None;
                    }
                }
                best = best.min(began.elapsed());
            }
            Some(best)
        });
        pinger.join().ok().flatten()
    });
    if failed.load(Ordering::Relaxed) {
        return None;
    }
    best.map(|d| d.as_nanos() as f64 / BATCH as f64)
}

/// The calling thread's CPU affinity.
fn affinity() -> Option<libc::cpu_set_t> {
    // SAFETY: an all-zero cpu_set_t is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is writable and its size is passed; pid 0 is the
    // calling thread.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    (rc == 0).then_some(set)
}

/// Sets the calling thread's CPU affinity to `set`.
fn set_affinity(set: &libc::cpu_set_t) -> bool {
    // SAFETY: `set` is an initialised cpu_set_t of the size passed; pid 0
    // is the calling thread.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) == 0 }
}

/// Pins the calling thread to `cpu`.
fn pin(cpu: usize) -> bool {
    // SAFETY: an all-zero cpu_set_t is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` came from the process's own mask, below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    set_affinity(&set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_trip_takes_time_and_leaves_the_caller_unpinned() {
        let before = affinity().expect("affinity");
        let ns = round_trip_ns();
        let after = affinity().expect("affinity");
        // SAFETY: both are initialised cpu_set_t values.
        assert!(unsafe { libc::CPU_EQUAL(&before, &after) });
        // SAFETY: `before` is an initialised cpu_set_t.
        if unsafe { libc::CPU_COUNT(&before) } >= 2 {
            // None only if a thread was not scheduled for 200 ms.
            if let Some(ns) = ns {
                assert!(ns > 1.0 && ns < 1_000_000.0, "{ns} ns");
            }
        } else {
            assert_eq!(ns, None);
        }
    }
}
