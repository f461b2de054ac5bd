//! Inputs and comparisons shared by the kernels' tests.

use candle_core::Tensor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// `n` numbers uniform in [-2, 2), the same for the same seed.
pub fn uniform(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
}

fn diffs(a: &Tensor, b: &Tensor) -> Vec<(f32, f32)> {
    let flat = |t: &Tensor| {
        t.flatten_all()
            .unwrap()
            .to_dtype(candle_core::DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let (a, b) = (flat(a), flat(b));
    assert_eq!(a.len(), b.len(), "tensors of different sizes");
    a.into_iter().zip(b).collect()
}

/// The largest |a - b| (NaN anywhere gives NaN, which fails any `<` check).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    diffs(a, b)
        .into_iter()
        .map(|(x, y)| if x == y { 0.0 } else { (x - y).abs() })
        .fold(0.0, |m, d| {
            if d.is_nan() || m.is_nan() {
                f32::NAN
            } else {
                m.max(d)
            }
        })
}

/// The largest |a - b| / max(|b|, 1): relative for large values, absolute near zero.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))] // the GPU tests' comparison
pub fn max_rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    diffs(a, b)
        .into_iter()
        .map(|(x, y)| {
            if x == y {
                0.0
            } else {
                (x - y).abs() / y.abs().max(1.0)
            }
        })
        .fold(0.0, |m, d| {
            if d.is_nan() || m.is_nan() {
                f32::NAN
            } else {
                m.max(d)
            }
        })
}
