//! Rng: the simulator's deterministic pseudo-random generator.
//!
//! Every random choice a workload makes comes from one [`Rng`] per thread,
//! seeded from `--seed` and the thread's index by [`Rng::for_thread`], so the
//! sequence of requests each thread issues is the same on every run with the
//! same seed, whatever the allocator (the interleaving of threads is not).
//!
//! The generator is xoshiro256** (Blackman and Vigna), seeded through
//! splitmix64 as its authors recommend. It is not cryptographic.

/// A xoshiro256** generator.
///
/// Invariant: `state` is never all zero (splitmix64 seeding guarantees it).
#[derive(Clone, Debug)]
pub struct Rng {
    state: [u64; 4],
}

/// One step of splitmix64: advances `x` and returns the next output.
fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator whose whole state is derived from `seed`.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut state = [0u64; 4];
        for word in &mut state {
            *word = splitmix64(&mut x);
        }
        if state == [0; 4] {
            state[0] = 1;
        }
        Rng { state }
    }

    /// The generator of thread `index` of a run seeded with `seed`.
    pub fn for_thread(seed: u64, index: usize) -> Self {
        let mut x = seed ^ 0x5EED_0000_0000_0000;
        let a = splitmix64(&mut x);
        Rng::new(a ^ (index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03))
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A uniform float in `[0, 1)`.
    #[inline]
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform integer in `[0, n)`; `n` must be non-zero.
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0, "Rng::below(0)");
        // Lemire's multiply-shift; the bias is below 2^-64 * n, irrelevant here.
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// True with probability `p`.
    #[inline]
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A log-uniform integer in `[lo, hi)` (`lo >= 1`, `hi > lo`): every
    /// doubling of size is equally likely.
    #[inline]
    pub fn log_uniform(&mut self, lo: usize, hi: usize) -> usize {
        debug_assert!(lo >= 1 && hi > lo);
        let (l, h) = ((lo as f64).ln(), (hi as f64).ln());
        let v = (l + (h - l) * self.unit()).exp() as usize;
        v.clamp(lo, hi - 1)
    }

    /// A uniform integer in `[lo, hi]`.
    #[inline]
    pub fn range_inclusive(&mut self, lo: u64, hi: u64) -> u64 {
        debug_assert!(hi >= lo);
        lo + self.below((hi - lo + 1) as usize) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn same_seed_same_stream() {
        let mut a = Rng::for_thread(7, 3);
        let mut b = Rng::for_thread(7, 3);
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn threads_and_seeds_differ() {
        let mut a = Rng::for_thread(7, 3);
        let mut b = Rng::for_thread(7, 4);
        let mut c = Rng::for_thread(8, 3);
        let (x, y, z) = (a.next_u64(), b.next_u64(), c.next_u64());
        assert_ne!(x, y);
        assert_ne!(x, z);
    }

    #[test]
    fn log_uniform_stays_in_range() {
        let mut r = Rng::new(1);
        for _ in 0..10_000 {
            let v = r.log_uniform(16, 512);
            assert!((16..512).contains(&v));
        }
    }
}
