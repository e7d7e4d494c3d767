//! Seeded randomness for training: a small sequential generator (initialisation, test data) and
//! a counter-based hash (dropout masks), both fully specified here so that the CUDA port can
//! reproduce them bit for bit.

/// SplitMix64's finaliser: a bijective 64-bit mix with good avalanche.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The uniform value in `[0, 1)` attached to `(seed, index)`: the top 24 bits of
/// `mix64(seed ^ mix64(index + 1))`. Used for dropout, so a mask depends only on the seed and the
/// element's position, never on how the batch was split over threads.
#[inline]
pub fn hash_uniform(seed: u64, index: u64) -> f32 {
    (mix64(seed ^ mix64(index.wrapping_add(1))) >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
}

/// SplitMix64 (Steele, Lea, Flood 2014): a 64-bit state advanced by the golden-ratio increment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator seeded with `seed` (the same seed, the same sequence).
    pub fn new(seed: u64) -> Self {
        Rng {
            state: mix64(seed ^ 0x5851_F42D_4C95_7F2D),
        }
    }

    /// The state, for checkpoints; [`Rng::from_state`] restores it.
    pub fn state(&self) -> u64 {
        self.state
    }

    /// A generator resumed from [`Rng::state`].
    pub fn from_state(state: u64) -> Self {
        Rng { state }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.state)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Standard normal (Box–Muller; one of the pair is discarded for simplicity).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// A seed for a sub-stream (e.g. one per step), leaving this generator advanced by one.
    pub fn fork(&mut self) -> u64 {
        self.next_u64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproducible_and_roughly_uniform() {
        let (mut a, mut b) = (Rng::new(3), Rng::new(3));
        let xs: Vec<f64> = (0..10_000).map(|_| a.uniform()).collect();
        assert!(xs
            .iter()
            .zip((0..).map(|_| b.uniform()))
            .all(|(x, y)| *x == y));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((mean - 0.5).abs() < 0.02);
        let mut r = Rng::new(4);
        let ns: Vec<f64> = (0..20_000).map(|_| r.normal()).collect();
        let m = ns.iter().sum::<f64>() / ns.len() as f64;
        let v = ns.iter().map(|x| (x - m).powi(2)).sum::<f64>() / ns.len() as f64;
        assert!(m.abs() < 0.03 && (v - 1.0).abs() < 0.05, "{m} {v}");
        let h: f64 = (0..10_000).map(|i| hash_uniform(9, i) as f64).sum::<f64>() / 1e4;
        assert!((h - 0.5).abs() < 0.02);
        assert_ne!(hash_uniform(1, 0), hash_uniform(2, 0));
    }
}
