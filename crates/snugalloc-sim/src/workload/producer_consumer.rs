//! producer-consumer: objects allocated on one set of threads and freed on
//! another.
//!
//! It models an enclave pipeline where request threads build messages that
//! worker threads consume: `--producers` (4) threads each ECall allocate
//! `--pc-ops` (200) objects from the ecall-churn worker size mix
//! (`--worker-mix`) and hand them to a shared queue; `--consumers` (4)
//! threads each ECall take up to `--pc-ops` objects from it and free them.
//! Producers wait (100 µs naps) while the queue holds more than
//! `--pc-queue-bytes` (16 MiB) of requested bytes. Every free is remote, the
//! worst case for allocators that keep per-thread free lists.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use super::{free_all, Block, Ctx, SizeMix, Worker, Workload, MIX_MAX_BYTES};
use crate::rng::Rng;

/// Parameters of producer-consumer.
#[derive(Clone, Debug)]
pub struct Params {
    /// Producer threads.
    pub producers: usize,
    /// Consumer threads.
    pub consumers: usize,
    /// Objects per ECall.
    pub ops: usize,
    /// Bound on the queue's requested bytes.
    pub queue_bytes: usize,
    /// Size mix of produced objects.
    pub mix: SizeMix,
    /// `--seed`.
    pub seed: u64,
}

impl Params {
    /// Largest object the workload may request.
    pub fn largest_object_bytes(&self) -> usize {
        MIX_MAX_BYTES
    }
}

const NAP: Duration = Duration::from_micros(100);

/// The sizes producer `index` allocates, in order (consumers draw nothing).
pub fn trace(p: &Params, index: usize, count: usize) -> Vec<usize> {
    let mut rng = Rng::for_thread(p.seed, index);
    (0..count).map(|_| p.mix.draw(&mut rng)).collect()
}

#[derive(Default)]
struct Queue {
    blocks: VecDeque<Block>,
    bytes: usize,
}

/// A running producer-consumer.
pub struct ProducerConsumer {
    p: Params,
    queue: Mutex<Queue>,
}

impl ProducerConsumer {
    /// A fresh instance with an empty queue.
    pub fn new(p: Params) -> ProducerConsumer {
        ProducerConsumer {
            p,
            queue: Mutex::new(Queue::default()),
        }
    }

    fn produce(&self, index: usize, ctx: &Ctx<'_>) {
        let mut rng = Rng::for_thread(self.p.seed, index);
        let mut w = Worker::new(ctx, index);
        let mut batch = Vec::with_capacity(self.p.ops);
        while !ctx.stopping() {
            let full =
                self.queue.lock().unwrap_or_else(|e| e.into_inner()).bytes > self.p.queue_bytes;
            if full {
                std::thread::sleep(NAP);
                continue;
            }
            let Some(mut h) = w.attach(ctx) else { break };
            for _ in 0..self.p.ops {
                let size = self.p.mix.draw(&mut rng);
                if let Some(b) = w.alloc(h.as_mut(), size) {
                    batch.push(b);
                }
            }
            drop(h);
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            for b in batch.drain(..) {
                q.bytes += b.size();
                q.blocks.push_back(b);
            }
        }
    }

    fn consume(&self, index: usize, ctx: &Ctx<'_>) {
        let mut w = Worker::new(ctx, index);
        let mut batch = Vec::with_capacity(self.p.ops);
        while !ctx.stopping() {
            {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                while batch.len() < self.p.ops {
                    let Some(b) = q.blocks.pop_front() else { break };
                    q.bytes -= b.size();
                    batch.push(b);
                }
            }
            if batch.is_empty() {
                std::thread::sleep(NAP);
                continue;
            }
            let Some(mut h) = w.attach(ctx) else { break };
            for b in batch.drain(..) {
                w.free(h.as_mut(), b);
            }
        }
        // Blocks taken but not freed when stopping go back to the queue.
        if !batch.is_empty() {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            for b in batch.drain(..) {
                q.bytes += b.size();
                q.blocks.push_back(b);
            }
        }
    }
}

impl Workload for ProducerConsumer {
    fn thread_count(&self) -> usize {
        self.p.producers + self.p.consumers
    }

    fn run_thread(&self, index: usize, ctx: &Ctx<'_>) {
        if index < self.p.producers {
            self.produce(index, ctx);
        } else {
            self.consume(index, ctx);
        }
    }

    fn finish(&self, ctx: &Ctx<'_>) {
        let all: Vec<Block> = self
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .blocks
            .drain(..)
            .collect();
        free_all(ctx, self.thread_count(), all);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_deterministic_for_a_seed() {
        let p = |seed| Params {
            producers: 4,
            consumers: 4,
            ops: 200,
            queue_bytes: 16 << 20,
            mix: SizeMix::parse("70,20,8,2").expect("mix"),
            seed,
        };
        assert_eq!(trace(&p(1), 2, 1000), trace(&p(1), 2, 1000));
        assert_ne!(trace(&p(1), 2, 100), trace(&p(2), 2, 100));
    }
}
