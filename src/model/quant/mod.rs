//! Quantized linear layers. The weight formats of the catalog's models that candle runs
//! slowly on the CPU (Q4_1 has no SIMD path there at all) get wick's own kernels: weights
//! repacked once at load, activations quantized to int8 once per step and shared by every
//! output row, rows split across the compute threads. Other formats, and every non-CPU
//! device, keep candle's `QMatMul`.

pub mod activation;
pub mod kernels;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Result, Tensor};
use half::f16;
use rayon::prelude::*;

use activation::{quantize_row, QBlock, BLOCK};
use kernels::Isa;

/// A weight matrix `[rows, k]` in wick's own layout: per-block scales as f32, quantized
/// values packed per row.
pub struct QMatrix {
    format: Format,
    rows: usize,
    blocks: usize,
    d: Vec<f32>,
    /// Q4_1's per-block offsets (empty for Q8_0).
    m: Vec<f32>,
    qs: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Q4_1,
    Q8_0,
}

impl Format {
    fn bytes_per_block(self) -> usize {
        match self {
            Format::Q4_1 => 16,
            Format::Q8_0 => 32,
        }
    }
}

impl QMatrix {
    /// Repack a GGUF tensor, if its format is one wick has kernels for.
    pub fn from_qtensor(t: &QTensor) -> Result<Option<Self>> {
        let format = match t.dtype() {
            GgmlDType::Q4_1 => Format::Q4_1,
            GgmlDType::Q8_0 => Format::Q8_0,
            _ => return Ok(None),
        };
        let (rows, k) = t.shape().dims2()?;
        if k % BLOCK != 0 {
            return Ok(None);
        }
        let blocks = k / BLOCK;
        let raw = t.data()?;
        // GGUF block sizes: Q4_1 = d, m (f16) + 16 bytes; Q8_0 = d (f16) + 32 bytes.
        let (header, body) = match format {
            Format::Q4_1 => (4, 16),
            Format::Q8_0 => (2, 32),
        };
        let stride = header + body;
        if raw.len() != rows * blocks * stride {
            candle_core::bail!("unexpected {format:?} data size for [{rows}, {k}]");
        }
        let n = rows * blocks;
        let mut d = Vec::with_capacity(n);
        let mut m = Vec::with_capacity(if format == Format::Q4_1 { n } else { 0 });
        let mut qs = Vec::with_capacity(n * body);
        for block in raw.chunks_exact(stride) {
            d.push(f16::from_le_bytes([block[0], block[1]]).to_f32());
            if format == Format::Q4_1 {
                m.push(f16::from_le_bytes([block[2], block[3]]).to_f32());
            }
            qs.extend_from_slice(&block[header..]);
        }
        Ok(Some(Self {
            format,
            rows,
            blocks,
            d,
            m,
            qs,
        }))
    }

    /// `y[t][r] = Σ_k w[r][k] x[t][k]` for activations already quantized (`t` rows of
    /// `blocks` blocks); `y` is `[t, rows]`.
    pub fn matmul_quantized(&self, x: &[QBlock], y: &mut [f32]) {
        let tokens = x.len() / self.blocks;
        debug_assert_eq!(y.len(), tokens * self.rows);
        let isa = kernels::isa();
        let threads = rayon::current_num_threads().max(1);
        // Few enough rows per task that both cores stay busy, enough that the handoff is
        // paid rarely.
        let per_task = self.rows.div_ceil(threads * 4).max(16);
        let out = SharedOut(y.as_mut_ptr());
        (0..self.rows.div_ceil(per_task))
            .into_par_iter()
            .for_each(|task| {
                let out = &out;
                let first = task * per_task;
                let last = (first + per_task).min(self.rows);
                for row in first..last {
                    for t in 0..tokens {
                        let xs = &x[t * self.blocks..(t + 1) * self.blocks];
                        let v = self.dot_row(isa, row, xs);
                        // SAFETY: each (t, row) is written by exactly one task, inside `y`.
                        unsafe { *out.0.add(t * self.rows + row) = v };
                    }
                }
            });
    }

    fn dot_row(&self, isa: Isa, row: usize, x: &[QBlock]) -> f32 {
        let b = self.blocks;
        let d = &self.d[row * b..(row + 1) * b];
        let bytes = self.format.bytes_per_block();
        let qs = &self.qs[row * b * bytes..(row + 1) * b * bytes];
        match self.format {
            Format::Q4_1 => kernels::dot_q4_1(isa, d, &self.m[row * b..(row + 1) * b], qs, x),
            Format::Q8_0 => kernels::dot_q8_0(isa, d, qs, x),
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
}

/// A raw output pointer shared by the tasks that write disjoint parts of it.
struct SharedOut(*mut f32);
// SAFETY: the tasks write disjoint elements (see `matmul_quantized`).
unsafe impl Sync for SharedOut {}
unsafe impl Send for SharedOut {}

/// A linear layer without bias: wick's kernels where it has them, candle's otherwise.
pub enum Linear {
    Own(QMatrix),
    Candle(QMatMul),
}

impl Linear {
    pub fn new(t: QTensor, device: &Device) -> Result<Self> {
        if device.is_cpu() {
            if let Some(matrix) = QMatrix::from_qtensor(&t)? {
                return Ok(Self::Own(matrix));
            }
        }
        Ok(Self::Candle(QMatMul::from_qtensor(t)?))
    }

    /// `x`: `[tokens, k]` → `[tokens, rows]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Candle(m) => m.forward(x),
            Self::Own(m) => {
                let (tokens, k) = x.dims2()?;
                let xs = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                let mut q = vec![QBlock::default(); tokens * (k / BLOCK)];
                for (row, out) in xs.chunks_exact(k).zip(q.chunks_exact_mut(k / BLOCK)) {
                    quantize_row(row, out);
                }
                let mut y = vec![0f32; tokens * m.rows];
                m.matmul_quantized(&q, &mut y);
                Tensor::from_vec(y, (tokens, m.rows), x.device())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// wick's kernels against candle's quantized matmul on the same weights: both quantize
    /// the activations to int8 blocks, so they agree to float rounding.
    fn check(dtype: GgmlDType) {
        let (rows, k) = (96, 256);
        let w = Tensor::randn(0f32, 1f32, (rows, k), &Device::Cpu).unwrap();
        let qt = QTensor::quantize(&w, dtype).unwrap();
        let own = QMatrix::from_qtensor(&qt)
            .unwrap()
            .expect("supported format");
        let candle = QMatMul::from_qtensor(QTensor::quantize(&w, dtype).unwrap()).unwrap();
        for tokens in [1, 3] {
            let x = Tensor::randn(0f32, 1f32, (tokens, k), &Device::Cpu).unwrap();
            let want = candle
                .forward(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let got = Linear::Own(QMatrix::from_qtensor(&qt).unwrap().unwrap())
                .forward(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            // An output is a sum of terms that cancel, so errors are measured against the
            // size of the terms, Σ|w·x|: int8 activations cost both implementations ~0.2 %.
            let dense = qt.dequantize(&Device::Cpu).unwrap();
            let to_vec = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let exact = to_vec(x.matmul(&dense.t().unwrap()).unwrap());
            let size = to_vec(
                x.abs()
                    .unwrap()
                    .matmul(&dense.abs().unwrap().t().unwrap())
                    .unwrap(),
            );
            for i in 0..got.len() {
                let tolerance = 5e-3 * size[i];
                assert!(
                    (got[i] - exact[i]).abs() <= tolerance,
                    "{dtype:?} vs exact at {i}"
                );
                assert!(
                    (got[i] - want[i]).abs() <= tolerance,
                    "{dtype:?} vs candle at {i}"
                );
            }
            // Every instruction set gives the scalar reference's answer.
            let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let mut q = vec![QBlock::default(); tokens * own.blocks];
            for (row, out) in xs.chunks_exact(k).zip(q.chunks_exact_mut(own.blocks)) {
                quantize_row(row, out);
            }
            for isa in [kernels::isa(), Isa::Scalar] {
                for row in 0..rows {
                    let a = own.dot_row(isa, row, &q[..own.blocks]);
                    let b = own.dot_row(Isa::Scalar, row, &q[..own.blocks]);
                    assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{isa:?} row {row}");
                }
            }
        }
    }

    #[test]
    fn q4_1_matches_candle() {
        check(GgmlDType::Q4_1);
    }

    #[test]
    fn q8_0_matches_candle() {
        check(GgmlDType::Q8_0);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_path_matches_scalar_when_available() {
        if !is_x86_feature_detected!("avx2") {
            return;
        }
        let w = Tensor::randn(0f32, 1f32, (8, 128), &Device::Cpu).unwrap();
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
            let m = QMatrix::from_qtensor(&QTensor::quantize(&w, dtype).unwrap())
                .unwrap()
                .unwrap();
            let x: Vec<f32> = (0..128)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 3.0)
                .collect();
            let mut q = vec![QBlock::default(); 4];
            quantize_row(&x, &mut q);
            for row in 0..8 {
                let a = m.dot_row(Isa::Avx2, row, &q);
                let b = m.dot_row(Isa::Scalar, row, &q);
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{dtype:?} row {row}"
                );
            }
        }
    }
}
