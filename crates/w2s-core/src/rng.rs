//! A small, explicit, portable random number generator (xoshiro256**).
//!
//! The search owns one stream per row. A row that is copied K times keeps its own stream
//! in the first copy and hands derived streams to the others, so a search with one row
//! (W = K = 1) draws exactly the numbers plain sampling draws, whatever the chunk length.

/// Per-row random stream. Same seed, same numbers, on every platform and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowRng {
    s: [u64; 4],
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl RowRng {
    /// The stream `stream` of the generator seeded with `seed`.
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut sm = seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
        let mut s = [0u64; 4];
        for word in &mut s {
            *word = splitmix64(&mut sm);
        }
        RowRng { s }
    }

    /// A new stream derived from this one's current state and `index`; `self` is unchanged.
    pub fn fork(&self, index: u64) -> Self {
        let mix = self.s[0] ^ self.s[1].rotate_left(17) ^ self.s[2].rotate_left(31) ^ self.s[3];
        RowRng::new(mix, index.wrapping_add(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// A uniform number in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = RowRng::new(7, 3);
        let mut b = RowRng::new(7, 3);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn streams_and_forks_differ() {
        let a = RowRng::new(7, 0);
        let b = RowRng::new(7, 1);
        assert_ne!(a, b);
        assert_ne!(a.fork(1), a.fork(2));
        assert_ne!(a.fork(1), a);
    }

    #[test]
    fn uniform_in_unit_interval_with_plausible_mean() {
        let mut r = RowRng::new(1, 0);
        let n = 20_000;
        let mut sum = 0.0;
        for _ in 0..n {
            let x = r.next_f64();
            assert!((0.0..1.0).contains(&x));
            sum += x;
        }
        let mean = sum / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
    }
}
