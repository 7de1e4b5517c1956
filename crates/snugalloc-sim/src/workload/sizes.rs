//! sizes: a single-thread sweep of alloc/free batches per size.
//!
//! It models nothing in particular; it isolates each allocator's per-size
//! overhead (rounding, headers, slab granularity) from fragmentation and
//! threading. Sizes go geometrically from `--min-size` (16 B) to
//! `--max-size` (1 MiB) with `--steps-per-doubling` (4) steps per power of
//! two. For each size, one ECall allocates a batch of min(`--batch` (256),
//! `--batch-bytes` (4 MiB) / size) blocks and frees them in random order,
//! `--rounds` (4) times. The sweep repeats until the run ends; the reserved
//! curve over time shows the footprint per size.

use super::{Block, Ctx, Worker, Workload};
use crate::rng::Rng;

/// Parameters of sizes.
#[derive(Clone, Debug)]
pub struct Params {
    /// Smallest size.
    pub min_size: usize,
    /// Largest size.
    pub max_size: usize,
    /// Steps per power of two.
    pub steps_per_doubling: usize,
    /// Blocks per batch.
    pub batch: usize,
    /// Bound on a batch's bytes.
    pub batch_bytes: usize,
    /// Batches per size.
    pub rounds: usize,
    /// `--seed`.
    pub seed: u64,
}

impl Params {
    /// Largest object the workload may request.
    pub fn largest_object_bytes(&self) -> usize {
        self.max_size
    }

    /// The sizes of one sweep, ascending.
    pub fn sweep(&self) -> Vec<usize> {
        let mut out = Vec::new();
        let steps = self.steps_per_doubling.max(1) as f64;
        let mut k = 0.0;
        loop {
            let s = (self.min_size as f64 * 2f64.powf(k / steps)).round() as usize;
            if s > self.max_size {
                break;
            }
            if out.last() != Some(&s) {
                out.push(s);
            }
            k += 1.0;
        }
        out
    }

    fn batch_of(&self, size: usize) -> usize {
        self.batch.min(self.batch_bytes / size.max(1)).max(1)
    }
}

/// The (size, free-order) decisions of the first `sweeps` sweeps.
pub fn trace(p: &Params, sweeps: usize) -> Vec<(usize, Vec<usize>)> {
    let mut rng = Rng::for_thread(p.seed, 0);
    let mut out = Vec::new();
    for _ in 0..sweeps {
        for size in p.sweep() {
            for _ in 0..p.rounds {
                let n = p.batch_of(size);
                let mut order = Vec::with_capacity(n);
                let mut left = n;
                while left > 0 {
                    order.push(rng.below(left));
                    left -= 1;
                }
                out.push((size, order));
            }
        }
    }
    out
}

/// A running sizes sweep.
pub struct Sizes {
    p: Params,
}

impl Sizes {
    /// A fresh instance.
    pub fn new(p: Params) -> Sizes {
        Sizes { p }
    }
}

impl Workload for Sizes {
    fn thread_count(&self) -> usize {
        1
    }

    fn run_thread(&self, index: usize, ctx: &Ctx<'_>) {
        let mut rng = Rng::for_thread(self.p.seed, index);
        let mut w = Worker::new(ctx, index);
        let sweep = self.p.sweep();
        let mut live: Vec<Block> = Vec::new();
        'run: loop {
            for &size in &sweep {
                for _ in 0..self.p.rounds {
                    if ctx.stopping() {
                        break 'run;
                    }
                    let Some(mut h) = w.attach(ctx) else {
                        break 'run;
                    };
                    for _ in 0..self.p.batch_of(size) {
                        if let Some(b) = w.alloc(h.as_mut(), size) {
                            live.push(b);
                        }
                    }
                    while !live.is_empty() {
                        let i = rng.below(live.len());
                        w.free(h.as_mut(), live.swap_remove(i));
                    }
                }
            }
        }
    }

    fn finish(&self, _ctx: &Ctx<'_>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(seed: u64) -> Params {
        Params {
            min_size: 16,
            max_size: 1 << 20,
            steps_per_doubling: 4,
            batch: 256,
            batch_bytes: 4 << 20,
            rounds: 2,
            seed,
        }
    }

    #[test]
    fn generator_is_deterministic_for_a_seed() {
        assert_eq!(trace(&params(3), 1), trace(&params(3), 1));
        assert_ne!(trace(&params(3), 1), trace(&params(4), 1));
        let sweep = params(3).sweep();
        assert_eq!(sweep.first(), Some(&16));
        assert_eq!(sweep.last(), Some(&(1 << 20)));
    }
}
