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

/// Round trips per measurement: about 10 ms at 55 ns, 60 ms at 320 ns.
const ROUND_TRIPS: u64 = 200_000;

/// Gives up when the other thread has not answered for this long (it was
/// not scheduled: the measurement would say nothing about caches).
const PATIENCE: Duration = Duration::from_millis(200);

/// The mean time, in nanoseconds, for a cache line to go from the first
/// CPU this process may run on to the second and back, with a thread
/// pinned to each. `None` with fewer than two CPUs, when pinning fails, or
/// when a thread waits for the other for too long. The calling thread's
/// CPU affinity is put back as it was.
pub fn round_trip_ns() -> Option<f64> {
    let saved = affinity()?;
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `saved` is an initialised cpu_set_t and `c` is below
        // CPU_SETSIZE.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &saved) })
        .take(2)
        .collect();
    let [a, b] = cpus[..] else {
        return None;
    };
    let result = ping_pong(a, b);
    set_affinity(&saved);
    result
}

fn ping_pong(a: usize, b: usize) -> Option<f64> {
    let line = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let wait_for = |value: u64| -> bool {
        let since = Instant::now();
        let mut spins = 0u32;
        while line.load(Ordering::Acquire) != value {
            if failed.load(Ordering::Relaxed) {
                return false;
            }
            spins = spins.wrapping_add(1);
            if spins % 4096 == 0 && since.elapsed() > PATIENCE {
                failed.store(true, Ordering::Relaxed);
                return false;
            }
            std::hint::spin_loop();
        }
        true
    };
    let (start, end) = std::thread::scope(|s| {
        s.spawn(|| {
            if !pin(b) {
                failed.store(true, Ordering::Relaxed);
                return;
            }
            for i in 0..ROUND_TRIPS {
                if !wait_for(2 * i + 1) {
                    return;
                }
                line.store(2 * i + 2, Ordering::Release);
            }
        });
        if !pin(a) {
            failed.store(true, Ordering::Relaxed);
        }
        let start = Instant::now();
        for i in 0..ROUND_TRIPS {
            if failed.load(Ordering::Relaxed) {
                break;
            }
            line.store(2 * i + 1, Ordering::Release);
            if !wait_for(2 * i + 2) {
                break;
            }
        }
        (start, Instant::now())
    });
    if failed.load(Ordering::Relaxed) {
        return None;
    }
    Some((end - start).as_nanos() as f64 / ROUND_TRIPS as f64)
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
    fn a_round_trip_takes_time_and_the_affinity_is_put_back() {
        let before = affinity().expect("affinity");
        let ns = round_trip_ns();
        let after = affinity().expect("affinity");
        // SAFETY: both are initialised cpu_set_t values.
        assert!(unsafe { libc::CPU_EQUAL(&before, &after) });
        if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
            // None only if the other thread was not scheduled for 200 ms.
            if let Some(ns) = ns {
                assert!(ns > 1.0 && ns < 1_000_000.0, "{ns} ns");
            }
        } else {
            assert_eq!(ns, None);
        }
    }
}
