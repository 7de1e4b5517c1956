//! churn: many short ECalls around one bounded shared queue of small objects.
//!
//! It models a message-passing service inside an enclave: `--churn-threads`
//! threads (8) each attach, make `--churn-ops` (100) queue operations, detach
//! and sleep 0 to `--churn-max-sleep` (2 ms). An operation pushes a new
//! object (with probability 1/2, or when the queue is empty) or pops and frees
//! the oldest one (otherwise, or when the queue holds `--queue-capacity`
//! objects). Objects are `--small-bytes` (48 B), except that with probability
//! `--buffer-prob` (1%) one is a 16, 32 or 64 KiB buffer. After an ECall, with
//! probability `--drain-prob` (0.2%) the thread drains the whole queue, so the
//! live set collapses now and then and the allocator must give memory back
//! and take it again. Almost every free is of a block another thread
//! allocated.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use super::{free_all, Block, Ctx, Worker, Workload};
use crate::rng::Rng;

/// Parameters of churn.
#[derive(Clone, Debug)]
pub struct Params {
    /// Threads.
    pub threads: usize,
    /// Queue operations per ECall.
    pub ops: usize,
    /// Queue capacity in objects.
    pub queue_capacity: usize,
    /// Size of the common object.
    pub small_bytes: usize,
    /// Probability that a pushed object is a large buffer.
    pub buffer_prob: f64,
    /// Probability of draining the queue after an ECall.
    pub drain_prob: f64,
    /// Longest sleep between ECalls.
    pub max_sleep: Duration,
    /// `--seed`.
    pub seed: u64,
}

/// Buffer sizes drawn with probability `buffer_prob`.
pub const BUFFER_SIZES: [usize; 3] = [16 << 10, 32 << 10, 64 << 10];

impl Params {
    /// Largest object the workload may request.
    pub fn largest_object_bytes(&self) -> usize {
        self.small_bytes.max(BUFFER_SIZES[2])
    }
}

/// One generator decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Push a new object of this size (if the queue has room).
    Push(usize),
    /// Pop and free the oldest object (if any).
    Pop,
    /// Drain the queue.
    Drain,
    /// Sleep this many microseconds.
    SleepUs(u64),
}

/// The request generator of one thread.
pub struct Gen {
    rng: Rng,
    p: Params,
}

impl Gen {
    /// The generator of thread `index`.
    pub fn new(p: &Params, index: usize) -> Gen {
        Gen {
            rng: Rng::for_thread(p.seed, index),
            p: p.clone(),
        }
    }

    /// The next queue operation.
    pub fn op(&mut self) -> Event {
        if self.rng.chance(0.5) {
            let size = if self.rng.chance(self.p.buffer_prob) {
                BUFFER_SIZES[self.rng.below(3)]
            } else {
                self.p.small_bytes
            };
            Event::Push(size)
        } else {
            Event::Pop
        }
    }

    /// The decisions after an ECall: drain or not, then the sleep.
    pub fn after_ecall(&mut self) -> (bool, u64) {
        let drain = self.rng.chance(self.p.drain_prob);
        let max_us = self.p.max_sleep.as_micros() as u64;
        (drain, self.rng.range_inclusive(0, max_us))
    }
}

/// The decisions of thread `index` over its first `ecalls` ECalls.
pub fn trace(p: &Params, index: usize, ecalls: usize) -> Vec<Event> {
    let mut g = Gen::new(p, index);
    let mut out = Vec::new();
    for _ in 0..ecalls {
        for _ in 0..p.ops {
            out.push(g.op());
        }
        let (drain, us) = g.after_ecall();
        if drain {
            out.push(Event::Drain);
        }
        out.push(Event::SleepUs(us));
    }
    out
}

/// A running churn.
pub struct Churn {
    p: Params,
    queue: Mutex<VecDeque<Block>>,
}

impl Churn {
    /// A fresh instance with an empty queue.
    pub fn new(p: Params) -> Churn {
        Churn {
            p,
            queue: Mutex::new(VecDeque::new()),
        }
    }
}

impl Churn {
    /// Empties the queue.
    fn take_all(&self) -> Vec<Block> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.drain(..).collect()
    }
}

impl Workload for Churn {
    fn thread_count(&self) -> usize {
        self.p.threads
    }

    fn run_thread(&self, index: usize, ctx: &Ctx<'_>) {
        let mut g = Gen::new(&self.p, index);
        let mut w = Worker::new(ctx, index);
        while !ctx.stopping() {
            let Some(mut h) = w.attach(ctx) else { break };
            for _ in 0..self.p.ops {
                let op = g.op();
                let len = self.queue.lock().unwrap_or_else(|e| e.into_inner()).len();
                let push = match op {
                    Event::Push(_) => len < self.p.queue_capacity,
                    _ => len == 0,
                };
                if push {
                    let size = if let Event::Push(s) = op {
                        s
                    } else {
                        self.p.small_bytes
                    };
                    if let Some(b) = w.alloc(h.as_mut(), size) {
                        self.queue
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push_back(b);
                    }
                } else {
                    let b = self
                        .queue
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .pop_front();
                    if let Some(b) = b {
                        w.free(h.as_mut(), b);
                    }
                }
            }
            let (drain, us) = g.after_ecall();
            if drain {
                for b in self.take_all() {
                    w.free(h.as_mut(), b);
                }
            }
            drop(h);
            if us > 0 {
                std::thread::sleep(Duration::from_micros(us));
            }
        }
    }

    fn finish(&self, ctx: &Ctx<'_>) {
        free_all(ctx, self.thread_count(), self.take_all());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(seed: u64) -> Params {
        Params {
            threads: 8,
            ops: 100,
            queue_capacity: 4096,
            small_bytes: 48,
            buffer_prob: 0.01,
            drain_prob: 0.002,
            max_sleep: Duration::from_millis(2),
            seed,
        }
    }

    #[test]
    fn generator_is_deterministic_for_a_seed() {
        assert_eq!(trace(&params(4), 3, 200), trace(&params(4), 3, 200));
        assert_ne!(trace(&params(4), 3, 20), trace(&params(5), 3, 20));
    }
}
