//! The model's only source of randomness: a seeded ChaCha8 stream.
//!
//! Every random decision of an [`Impairment`](crate::Impairment) is drawn
//! here, in a fixed order per packet, so the same seed, stream and packet
//! sequence give the same decisions on every machine. The conversions to
//! floats are written out (rather than taken from `rand`'s distributions)
//! so that a `rand` upgrade cannot silently change a recorded run.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// 2^-53: one step of a 53-bit mantissa.
const UNIT: f64 = 1.0 / (1u64 << 53) as f64;

#[derive(Debug, Clone)]
pub(crate) struct Dice {
    rng: ChaCha8Rng,
}

impl Dice {
    /// `stream` selects one of ChaCha's 2^64 independent streams of the
    /// same seed: one per direction or per peer, without deriving seeds.
    pub(crate) fn new(seed: u64, stream: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        Self { rng }
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * UNIT
    }

    /// Uniform in `(0, 1)`: for inverse CDFs that diverge at 0 or 1.
    pub(crate) fn open_unit(&mut self) -> f64 {
        ((self.rng.next_u64() >> 11) as f64 + 0.5) * UNIT
    }

    /// True with probability `p`. Certain outcomes (`p <= 0`, `p >= 1`)
    /// draw nothing, so a disabled feature costs no randomness.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            false
        } else if p >= 1.0 {
            true
        } else {
            self.unit() < p
        }
    }

    /// Uniform integer in `0..n` (`n > 0`), by a widening multiply. The
    /// bias is below 2^-64 * n, irrelevant for bit positions in a packet.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.rng.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_is_within_bounds_and_streams_differ() {
        let mut a = Dice::new(7, 0);
        let mut b = Dice::new(7, 1);
        let mut same = 0;
        for _ in 0..1000 {
            let (x, y) = (a.unit(), b.unit());
            assert!((0.0..1.0).contains(&x));
            let z = a.open_unit();
            assert!(z > 0.0 && z < 1.0);
            if x == y {
                same += 1;
            }
            assert!(a.below(10) < 10);
        }
        assert!(same < 5);
    }
}
