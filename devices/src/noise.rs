//! Deterministic pseudo-randomness: a pure function of a seed and a few
//! integers, so the same seed always yields the same catalogue and readings,
//! whatever order they are computed in.

/// SplitMix64 finaliser (Steele, Lea and Flood, 2014).
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A hash of `(seed, a, b)`.
pub fn hash(seed: u64, a: u64, b: u64) -> u64 {
    mix(mix(mix(seed) ^ a) ^ b)
}

/// A number in `[0, 1)` determined by `(seed, a, b)`.
pub fn unit(seed: u64, a: u64, b: u64) -> f64 {
    (hash(seed, a, b) >> 11) as f64 / (1u64 << 53) as f64
}

/// A standard-normal-ish number (sum of four uniforms, rescaled) for `(seed, a, b)`.
pub fn gauss(seed: u64, a: u64, b: u64) -> f64 {
    let s: f64 = (0..4)
        .map(|k| unit(seed, a, b.wrapping_mul(4).wrapping_add(k)))
        .sum();
    (s - 2.0) * (3.0f64).sqrt()
}
