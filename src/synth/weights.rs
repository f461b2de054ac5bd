//! Random tensors scaled like a trained model's, quantized to their file's ggml type.
//!
//! A tensor is drawn and quantized in chunks of whole rows on every core, so the float
//! values of at most a few chunks exist at once (not the 6 GB of a 1.5B model); ggml blocks
//! never span rows, so the chunks' bytes joined are the whole tensor quantized at once.
//! Each chunk's generator is seeded from the seed, the tensor's name and the chunk's index:
//! a file is the same for the same seed however many threads made it, and a layer is the
//! same whatever `--layers` says.

use candle_core::quantized::{ggml_file, QTensor};
use candle_core::{Device, Result, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::shapes::{Init, TensorSpec};

/// Values per chunk: 4 MiB of f32, enough to keep a core busy and few enough to stay small.
const CHUNK_VALUES: usize = 1 << 20;

/// Standard deviation of weights, embeddings and biases: the usual initialisation scale,
/// and about that of trained small models' weights.
const WEIGHT_STD: f32 = 0.02;

/// A tensor of random values, quantized to `spec.dtype`.
pub fn generate(spec: &TensorSpec, seed: u64) -> Result<QTensor> {
    let cols = *spec.dims.last().expect("a tensor has dimensions");
    let rows: usize = spec.dims.iter().product::<usize>() / cols;
    let rows_per_chunk = (CHUNK_VALUES / cols).max(1);
    let chunk_rows: Vec<usize> = (0..rows)
        .step_by(rows_per_chunk)
        .map(|first| rows_per_chunk.min(rows - first))
        .collect();
    let parts = chunk_rows
        .into_par_iter()
        .enumerate()
        .map(|(index, n_rows)| {
            let mut rng = chunk_rng(seed, &spec.name, index);
            let mut values = vec![0f32; n_rows * cols];
            let (mean, std) = match spec.init {
                Init::Weight | Init::Bias => (0.0, WEIGHT_STD),
                // Trained norm scales sit around 1.
                Init::Norm => (1.0, WEIGHT_STD),
            };
            fill_normal(&mut rng, &mut values, mean, std);
            let chunk = Tensor::from_vec(values, (n_rows, cols), &Device::Cpu)?;
            Ok(QTensor::quantize(&chunk, spec.dtype)?.data()?.into_owned())
        })
        .collect::<Result<Vec<Vec<u8>>>>()?;
    ggml_file::qtensor_from_ggml(spec.dtype, &parts.concat(), spec.dims.clone(), &Device::Cpu)
}

fn chunk_rng(seed: u64, tensor: &str, chunk: usize) -> StdRng {
    let digest = Sha256::new()
        .chain_update(seed.to_le_bytes())
        .chain_update(tensor.as_bytes())
        .chain_update((chunk as u64).to_le_bytes())
        .finalize();
    StdRng::from_seed(digest.into())
}

/// Normal values (Box–Muller, two per pair of uniforms).
fn fill_normal(rng: &mut StdRng, out: &mut [f32], mean: f32, std: f32) {
    for pair in out.chunks_mut(2) {
        // In (0, 1], so the logarithm is finite.
        let u1 = 1.0 - rng.random::<f32>();
        let u2 = rng.random::<f32>();
        let radius = (-2.0 * u1.ln()).sqrt() * std;
        let (sin, cos) = (std::f32::consts::TAU * u2).sin_cos();
        pair[0] = mean + radius * cos;
        if let Some(second) = pair.get_mut(1) {
            *second = mean + radius * sin;
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::GgmlDType;

    use super::*;

    fn spec(dims: &[usize], dtype: GgmlDType, init: Init) -> TensorSpec {
        TensorSpec {
            name: "blk.0.test".into(),
            dims: dims.to_vec(),
            dtype,
            init,
        }
    }

    fn values(q: &QTensor) -> Vec<f32> {
        q.dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn weights_have_the_scale_asked_for() {
        // Several chunks' worth, so chunks are joined in order.
        let q = generate(&spec(&[1024, 2048], GgmlDType::Q4K, Init::Weight), 7).unwrap();
        assert_eq!(q.shape().dims(), [1024, 2048]);
        assert_eq!(q.dtype(), GgmlDType::Q4K);
        let v = values(&q);
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32).sqrt();
        assert!(mean.abs() < 1e-3, "mean {mean}");
        assert!((std - WEIGHT_STD).abs() < 0.002, "std {std}");
    }

    #[test]
    fn norms_sit_around_one() {
        let v = values(&generate(&spec(&[1536], GgmlDType::F32, Init::Norm), 1).unwrap());
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        assert!((mean - 1.0).abs() < 0.01, "mean {mean}");
    }

    #[test]
    fn the_seed_decides_the_values() {
        let s = spec(&[64, 256], GgmlDType::Q6K, Init::Weight);
        let a = generate(&s, 3).unwrap().data().unwrap().into_owned();
        let b = generate(&s, 3).unwrap().data().unwrap().into_owned();
        let c = generate(&s, 4).unwrap().data().unwrap().into_owned();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
