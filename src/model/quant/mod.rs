//! Quantized linear layers. Every weight format that common GGUF files hold (Q4_0, Q4_1,
//! Q5_0, Q8_0, Q4_K, Q5_K, Q6_K: all of a Q4_K_M or Q5_K_M file) runs on wick's own kernels
//! on the CPU (the `wick-quant` crate, crates/quant). Other formats (the 2- and 3-bit
//! K-quants, IQ formats, Q5_1, Q8_1, f16/f32 matrices), and every non-CPU device, keep
//! candle's `QMatMul`.

pub use wick_quant::{activation, kernels, matmul_many, panel, pool, Format, QMatrix, SharedOut};

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Result, Tensor};

use activation::QRows;

/// The kernels' format of a GGUF tensor type, where wick has kernels for it.
pub fn format_of(dtype: GgmlDType) -> Option<Format> {
    Some(match dtype {
        GgmlDType::Q4_0 => Format::Q4_0,
        GgmlDType::Q4_1 => Format::Q4_1,
        GgmlDType::Q5_0 => Format::Q5_0,
        GgmlDType::Q8_0 => Format::Q8_0,
        GgmlDType::Q4K => Format::Q4K,
        GgmlDType::Q5K => Format::Q5K,
        GgmlDType::Q6K => Format::Q6K,
        _ => return None,
    })
}

/// Repack a GGUF tensor for wick's kernels, if its format is one they take.
pub fn repack(t: &QTensor) -> Result<Option<QMatrix>> {
    let Some(format) = format_of(t.dtype()) else {
        return Ok(None);
    };
    let (rows, k) = t.shape().dims2()?;
    if !k.is_multiple_of(format.gguf_block().0) {
        return Ok(None);
    }
    QMatrix::repack(format, rows, k, &t.data()?)
        .map(Some)
        .map_err(candle_core::Error::wrap)
}

/// A linear layer without bias: wick's kernels where it has them, candle's otherwise.
pub enum Linear {
    Own(QMatrix),
    Candle(QMatMul),
}

impl Linear {
    pub fn new(t: QTensor, device: &Device) -> Result<Self> {
        if device.is_cpu() {
            if let Some(matrix) = repack(&t)? {
                return Ok(Self::Own(matrix));
            }
        }
        Ok(Self::Candle(QMatMul::from_qtensor(t)?))
    }

    /// `x`: `[tokens, k]` → `[tokens, rows]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Candle(matmul) => {
                // candle's CPU product of several rows can take another path than that of
                // one row, so a token's logits would depend on what it is batched with:
                // on the CPU, one token at a time.
                let tokens = x.dim(0)?;
                if x.device().is_cpu() && tokens > 1 {
                    let rows = (0..tokens)
                        .map(|t| matmul.forward(&x.narrow(0, t, 1)?))
                        .collect::<Result<Vec<_>>>()?;
                    Tensor::cat(&rows, 0)
                } else {
                    matmul.forward(x)
                }
            }
            Self::Own(m) => Ok(LinearGroup::own(&[m], x)?.remove(0)),
        }
    }

    /// Bytes of weights this layer holds, in whichever layout holds them.
    pub fn bytes(&self) -> usize {
        match self {
            Self::Own(m) => m.bytes(),
            Self::Candle(QMatMul::QTensor(t)) => t.storage_size_in_bytes(),
            Self::Candle(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => tensor_bytes(t),
        }
    }
}

/// Bytes of a dense tensor's elements.
pub fn tensor_bytes(t: &Tensor) -> usize {
    t.elem_count() * t.dtype().size_in_bytes()
}

/// Linear layers that read the same input (q, k and v; gate and up): when wick's kernels
/// hold them all, the input is quantized once and one parallel loop runs them all.
pub struct LinearGroup {
    parts: Vec<Linear>,
}

impl LinearGroup {
    pub fn new(parts: Vec<Linear>) -> Self {
        Self { parts }
    }

    fn own(matrices: &[&QMatrix], x: &Tensor) -> Result<Vec<Tensor>> {
        let (tokens, k) = x.dims2()?;
        let xs = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let q = QRows::quantize(&xs, k);
        let mut ys: Vec<Vec<f32>> = matrices
            .iter()
            .map(|m| vec![0f32; tokens * m.rows()])
            .collect();
        let mut views: Vec<&mut [f32]> = ys.iter_mut().map(|y| y.as_mut_slice()).collect();
        matmul_many(matrices, &q, &mut views);
        ys.into_iter()
            .zip(matrices)
            .map(|(y, m)| Tensor::from_vec(y, (tokens, m.rows()), x.device()))
            .collect()
    }

    /// One output per layer, in the order given to `new`.
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let own: Vec<&QMatrix> = self
            .parts
            .iter()
            .filter_map(|p| match p {
                Linear::Own(m) => Some(m),
                Linear::Candle(_) => None,
            })
            .collect();
        if own.len() == self.parts.len() {
            return Self::own(&own, x);
        }
        self.parts.iter().map(|p| p.forward(x)).collect()
    }

    pub fn bytes(&self) -> usize {
        self.parts.iter().map(Linear::bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::kernels::TOKENS;
    use super::*;

    /// Every format with wick kernels, as candle names them.
    const FORMATS: [GgmlDType; 7] = [
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q5_0,
        GgmlDType::Q8_0,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
    ];

    fn to_vec(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    /// K-quants need whole super-blocks of 256 values.
    fn min_k(dtype: GgmlDType) -> usize {
        format_of(dtype).unwrap().gguf_block().0
    }

    /// Weights with a spread of magnitudes per row (as real layers have), so sub-block
    /// scales and mins differ.
    fn weights(rows: usize, k: usize) -> Tensor {
        let w = Tensor::randn(0f32, 1f32, (rows, k), &Device::Cpu).unwrap();
        let scale: Vec<f32> = (0..rows * k)
            .map(|i| 0.2 + ((i / 16) * 7919 % 13) as f32 / 4.0)
            .collect();
        let scale = Tensor::from_vec(scale, (rows, k), &Device::Cpu).unwrap();
        (w * scale).unwrap()
    }

    /// Per token and weight row, the most that rounding the activations to int8 blocks of
    /// `block` values (scale = the block's largest magnitude / 127) can move the product:
    /// Σ_k |w[r][k]| · d(k) / 2.
    fn rounding_bound(x: &[f32], w_abs: &[f32], rows: usize, k: usize, block: usize) -> Vec<f32> {
        let tokens = x.len() / k;
        let mut bound = vec![0f32; tokens * rows];
        for t in 0..tokens {
            let x = &x[t * k..(t + 1) * k];
            let half_step: Vec<f32> = x
                .chunks(block)
                .flat_map(|b| {
                    let d = b.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
                    std::iter::repeat_n(d / 2.0, b.len())
                })
                .collect();
            for r in 0..rows {
                let w = &w_abs[r * k..(r + 1) * k];
                bound[t * rows + r] = w.iter().zip(&half_step).map(|(w, h)| w * h).sum();
            }
        }
        bound
    }

    /// wick's kernels against candle's quantized matmul and the exact product of the same
    /// weights: both quantize the activations to int8 blocks, so each lies within that
    /// rounding's bound of the exact product (wick: blocks of 32; candle: 32, or 256 for
    /// the K-quants), and within the sum of the two bounds of each other.
    fn check_shape(dtype: GgmlDType, rows: usize, k: usize) {
        let w = weights(rows, k);
        let qt = QTensor::quantize(&w, dtype).unwrap();
        let candle = QMatMul::from_qtensor(QTensor::quantize(&w, dtype).unwrap()).unwrap();
        let own = Linear::Own(repack(&qt).unwrap().expect("supported format"));
        let dense = qt.dequantize(&Device::Cpu).unwrap();
        let w_abs = to_vec(&dense.abs().unwrap());
        // More tokens than one register tile, and a partial tile.
        for tokens in [1, 3, TOKENS + 2] {
            let x = Tensor::randn(0f32, 1f32, (tokens, k), &Device::Cpu).unwrap();
            let want = to_vec(&candle.forward(&x).unwrap());
            let got = to_vec(&own.forward(&x).unwrap());
            let exact = to_vec(&x.matmul(&dense.t().unwrap()).unwrap());
            // Float summation order adds a little on top, relative to the terms' size.
            let size = to_vec(
                &x.abs()
                    .unwrap()
                    .matmul(&dense.abs().unwrap().t().unwrap())
                    .unwrap(),
            );
            let xs = to_vec(&x);
            let own_bound = rounding_bound(&xs, &w_abs, rows, k, 32);
            let candle_bound = rounding_bound(&xs, &w_abs, rows, k, 256);
            for i in 0..got.len() {
                let slack = 1e-4 * size[i];
                assert!(
                    (got[i] - exact[i]).abs() <= own_bound[i] + slack,
                    "{dtype:?} vs exact at {i}: {} vs {} (bound {})",
                    got[i],
                    exact[i],
                    own_bound[i]
                );
                assert!(
                    (got[i] - want[i]).abs() <= own_bound[i] + candle_bound[i] + slack,
                    "{dtype:?} vs candle at {i}: {} vs {}",
                    got[i],
                    want[i]
                );
            }
        }
    }

    #[test]
    fn every_format_matches_candle_and_the_exact_product() {
        for dtype in FORMATS {
            let k = min_k(dtype);
            // Not a whole number of panels: the last panel is padded.
            check_shape(dtype, 98, 2 * k.max(128));
            // An odd number of blocks (or super-blocks).
            check_shape(dtype, 32, 3 * k);
        }
    }

    // Every instruction set against the scalar reference: crates/quant/src/tests.rs (run for
    // aarch64 too, by scripts/kernels-aarch64.sh).

    #[test]
    fn the_panel_layout_holds_the_gguf_values() {
        for dtype in FORMATS {
            let (rows, k) = (20, 2 * min_k(dtype).max(64));
            let w = weights(rows, k);
            let qt = QTensor::quantize(&w, dtype).unwrap();
            let dense = to_vec(&qt.dequantize(&Device::Cpu).unwrap());
            let own = repack(&qt).unwrap().unwrap();
            let mut row = vec![0f32; k];
            for r in 0..rows {
                own.dequantize_row(r, &mut row);
                for j in 0..k {
                    assert_eq!(row[j], dense[r * k + j], "{dtype:?} row {r} col {j}");
                }
            }
        }
    }

    #[test]
    fn a_group_gives_each_layer_its_own_output() {
        let x = Tensor::randn(0f32, 1f32, (3, 256), &Device::Cpu).unwrap();
        let layer = |rows, dtype| {
            let w = Tensor::randn(0f32, 1f32, (rows, 256), &Device::Cpu).unwrap();
            Linear::new(QTensor::quantize(&w, dtype).unwrap(), &Device::Cpu).unwrap()
        };
        let parts = vec![
            layer(16, GgmlDType::Q4K),
            layer(40, GgmlDType::Q5_0),
            layer(8, GgmlDType::Q8_0),
        ];
        let want: Vec<Tensor> = parts.iter().map(|p| p.forward(&x).unwrap()).collect();
        let group = LinearGroup::new(parts);
        for (got, want) in group.forward(&x).unwrap().iter().zip(&want) {
            let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
        }
    }

    /// Every layer gives a token the same output whatever else shares its step, candle's
    /// formats included.
    #[test]
    fn a_token_s_output_does_not_depend_on_its_batch() {
        let mut dtypes = FORMATS.to_vec();
        dtypes.extend([GgmlDType::Q5_1, GgmlDType::Q3K]);
        for dtype in dtypes {
            let w = Tensor::randn(0f32, 1f32, (64, 512), &Device::Cpu).unwrap();
            let layer = Linear::new(QTensor::quantize(&w, dtype).unwrap(), &Device::Cpu).unwrap();
            let x = Tensor::randn(0f32, 1f32, (5, 512), &Device::Cpu).unwrap();
            let batched = layer.forward(&x).unwrap().to_vec2::<f32>().unwrap();
            for (t, row) in batched.iter().enumerate() {
                let alone = to_vec(&layer.forward(&x.narrow(0, t, 1).unwrap()).unwrap());
                assert_eq!(&alone, row, "{dtype:?} token {t}");
            }
        }
    }
}
