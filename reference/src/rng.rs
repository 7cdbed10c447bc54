//! SplitMix64: the one random-number generator of the workload.
//!
//! Templar draws pages with numpy's generator; we use SplitMix64 instead so that any language
//! can reproduce every draw from a few lines of integer arithmetic (WORKLOAD.md, "Data").
//! Output `i` (0-based) of a generator seeded with `s` is `mix(s + (i + 1)·γ)`, which makes the
//! stream addressable by counter: parameter init fills tensors in parallel from it.

/// The SplitMix64 increment, ⌊2⁶⁴/φ⌋.
pub const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The SplitMix64 output function (Stafford's Mix13 variant).
#[inline]
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The first output of a SplitMix64 generator seeded with `seed`.
#[inline]
pub fn splitmix64(seed: u64) -> u64 {
    mix(seed.wrapping_add(GAMMA))
}

/// Output `i` (0-based) of the SplitMix64 stream seeded with `seed`.
#[inline]
pub fn stream_at(seed: u64, i: u64) -> u64 {
    mix(seed.wrapping_add(i.wrapping_add(1).wrapping_mul(GAMMA)))
}

/// A sequential SplitMix64 generator.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix(self.state)
    }

    /// A uniform draw in the open interval (0, 1), from the top 53 bits.
    pub fn next_unit(&mut self) -> f64 {
        unit(self.next_u64())
    }
}

/// Maps 64 random bits to (0, 1): the top 52 bits, centred in their cell, so neither 0 nor 1
/// occurs (with 53 bits the top cell's centre rounds up to 1.0).
#[inline]
pub fn unit(bits: u64) -> f64 {
    ((bits >> 12) as f64 + 0.5) * (1.0 / (1u64 << 52) as f64)
}

/// FNV-1a over bytes: turns a parameter name into a stream key. Chosen for being trivial to
/// reproduce, not for quality; SplitMix64's mixing does the rest.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// Element `j` of the standard-normal stream with key `key`: Box–Muller on the stream's outputs
/// `2⌊j/2⌋` and `2⌊j/2⌋+1` (u₁, u₂); even `j` takes `r·cos(2πu₂)`, odd `j` takes `r·sin(2πu₂)`,
/// with `r = √(−2 ln u₁)`. Computed in f64.
#[inline]
pub fn normal_at(key: u64, j: u64) -> f64 {
    let pair = j & !1;
    let u1 = unit(stream_at(key, pair));
    let u2 = unit(stream_at(key, pair + 1));
    let r = (-2.0 * u1.ln()).sqrt();
    let angle = std::f64::consts::TAU * u2;
    if j & 1 == 0 {
        r * angle.cos()
    } else {
        r * angle.sin()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_splitmix64_sequence() {
        // Vigna's reference splitmix64.c seeded with 1234567: the first outputs.
        let mut g = SplitMix64::new(1234567);
        let got: Vec<u64> = (0..3).map(|_| g.next_u64()).collect();
        assert_eq!(
            got,
            vec![
                6457827717110365317,
                3203168211198807973,
                9817491932198370423
            ]
        );
        assert_eq!(splitmix64(1234567), got[0]);
        assert_eq!(stream_at(1234567, 2), got[2]);
    }

    #[test]
    fn normal_stream_has_unit_moments() {
        let key = fnv1a64(b"moments");
        let n = 200_000u64;
        let (mut s1, mut s2) = (0.0, 0.0);
        for j in 0..n {
            let z = normal_at(key, j);
            s1 += z;
            s2 += z * z;
        }
        let mean = s1 / n as f64;
        let var = s2 / n as f64 - mean * mean;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
    }

    #[test]
    fn unit_stays_inside_the_open_interval() {
        assert!(unit(0) > 0.0);
        assert!(unit(u64::MAX) < 1.0);
    }
}
