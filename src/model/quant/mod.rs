//! Quantized linear layers. The weight formats of the catalog's models that candle runs
//! slowly on the CPU (Q4_1 has no SIMD path there at all) get wick's own kernels: weights
//! repacked once at load, activations quantized to int8 once per step and shared by every
//! output row, rows split across the compute threads. Other formats, and every non-CPU
//! device, keep candle's `QMatMul`.

pub mod activation;
pub mod kernels;
pub mod panel;
pub mod pool;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Result, Tensor};

use activation::{QRow, QRows, BLOCK};
use kernels::TOKENS;
use panel::{Panels, PANEL};

/// A weight matrix `[rows, k]` in wick's own panel layout.
pub struct QMatrix {
    panels: Panels,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Q4_1,
    Q8_0,
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
        let panels = Panels::repack(format, rows, k / BLOCK, &t.data()?)?;
        Ok(Some(Self { panels }))
    }

    /// `y[t][r] = Σ_k w[r][k] x[t][k]` for activations already quantized (`t` rows);
    /// `y` is `[t, rows]`.
    pub fn matmul_quantized(&self, x: &QRows, y: &mut [f32]) {
        let tokens = x.rows();
        let rows = self.rows();
        debug_assert_eq!(y.len(), tokens * rows);
        let isa = kernels::isa();
        let format = self.panels.format();
        let pool = pool::Pool::global();
        // Whole panels per task; a few tasks per thread so an unlucky thread does not hold
        // up the loop.
        let panels = self.panels.panels();
        let per_task = panels.div_ceil(pool.threads() * 4).max(1);
        let out = SharedOut(y.as_mut_ptr());
        pool.run(panels.div_ceil(per_task), &|task| {
            let out = &out;
            for p in task * per_task..((task + 1) * per_task).min(panels) {
                let panel = self.panels.panel(p);
                let first_row = p * PANEL;
                let live = PANEL.min(rows - first_row);
                // Tokens in register tiles: each panel block is read and unpacked once per
                // TOKENS tokens.
                for first in (0..tokens).step_by(TOKENS) {
                    let n = (tokens - first).min(TOKENS);
                    let xs: [QRow<'_>; TOKENS] =
                        std::array::from_fn(|j| x.row((first + j).min(tokens - 1)));
                    let mut v = [[0f32; PANEL]; TOKENS];
                    kernels::panel(isa, format, panel, &xs[..n], &mut v);
                    for (j, v) in v.iter().take(n).enumerate() {
                        // SAFETY: each (token, row) is written by exactly one task, inside `y`.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                v.as_ptr(),
                                out.0.add((first + j) * rows + first_row),
                                live,
                            )
                        };
                    }
                }
            }
        });
    }

    pub fn rows(&self) -> usize {
        self.panels.rows()
    }

    /// Stack matrices that share an input into one (rows of the first, then the next...),
    /// when the layout allows it.
    fn stack(parts: &[&QMatrix]) -> Option<QMatrix> {
        let panels: Vec<&Panels> = parts.iter().map(|p| &p.panels).collect();
        Panels::stack(&panels).map(|panels| QMatrix { panels })
    }
}

/// A raw output pointer shared by the tasks of one pool loop, each of which writes its own
/// disjoint part of the buffer.
pub(crate) struct SharedOut(pub(crate) *mut f32);
// SAFETY: the tasks write disjoint elements (see its users).
unsafe impl Sync for SharedOut {}
unsafe impl Send for SharedOut {}

/// A linear layer without bias: wick's kernels where it has them, candle's otherwise.
pub enum Linear {
    Own(QMatrix),
    Candle {
        matmul: QMatMul,
        /// Run one token at a time: candle's CPU product of several rows takes another
        /// path than that of one row for some formats (Q6_K), so a sequence's logits would
        /// depend on what it is batched with.
        row_by_row: bool,
    },
}

impl Linear {
    pub fn new(t: QTensor, device: &Device) -> Result<Self> {
        if device.is_cpu() {
            if let Some(matrix) = QMatrix::from_qtensor(&t)? {
                return Ok(Self::Own(matrix));
            }
        }
        let row_by_row = device.is_cpu() && t.dtype() == GgmlDType::Q6K;
        Ok(Self::Candle {
            matmul: QMatMul::from_qtensor(t)?,
            row_by_row,
        })
    }

    /// `x`: `[tokens, k]` → `[tokens, rows]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Candle { matmul, row_by_row } => {
                let tokens = x.dim(0)?;
                if *row_by_row && tokens > 1 {
                    let rows = (0..tokens)
                        .map(|t| matmul.forward(&x.narrow(0, t, 1)?))
                        .collect::<Result<Vec<_>>>()?;
                    Tensor::cat(&rows, 0)
                } else {
                    matmul.forward(x)
                }
            }
            Self::Own(m) => {
                let (tokens, k) = x.dims2()?;
                let xs = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                let q = QRows::quantize(&xs, k);
                let mut y = vec![0f32; tokens * m.rows()];
                m.matmul_quantized(&q, &mut y);
                Tensor::from_vec(y, (tokens, m.rows()), x.device())
            }
        }
    }
}

/// Linear layers that read the same input (q, k and v; gate and up), run as one stacked
/// matrix when wick's kernels hold them all: the input is quantized once and the threads
/// meet once instead of once per layer.
pub enum LinearGroup {
    Stacked { matrix: Linear, widths: Vec<usize> },
    Separate(Vec<Linear>),
}

impl LinearGroup {
    pub fn new(parts: Vec<Linear>) -> Self {
        let own: Vec<&QMatrix> = parts
            .iter()
            .filter_map(|p| match p {
                Linear::Own(m) => Some(m),
                Linear::Candle { .. } => None,
            })
            .collect();
        if own.len() == parts.len() {
            if let Some(stacked) = QMatrix::stack(&own) {
                return Self::Stacked {
                    widths: own.iter().map(|m| m.rows()).collect(),
                    matrix: Linear::Own(stacked),
                };
            }
        }
        Self::Separate(parts)
    }

    /// One output per layer, in the order given to `new`.
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        match self {
            Self::Separate(parts) => parts.iter().map(|p| p.forward(x)).collect(),
            Self::Stacked { matrix, widths } => {
                let y = matrix.forward(x)?;
                let mut offset = 0;
                widths
                    .iter()
                    .map(|&w| {
                        let part = y.narrow(1, offset, w);
                        offset += w;
                        part
                    })
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::kernels::Isa;
    use super::*;

    fn to_vec(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    /// wick's kernels against candle's quantized matmul and the exact product of the same
    /// weights: both quantize the activations to int8 blocks, so they agree to rounding.
    fn check(dtype: GgmlDType) {
        // Not a whole number of panels: the last panel is padded.
        check_shape(dtype, 98, 256);
        // An odd number of blocks.
        check_shape(dtype, 32, 96);
    }

    fn check_shape(dtype: GgmlDType, rows: usize, k: usize) {
        let w = Tensor::randn(0f32, 1f32, (rows, k), &Device::Cpu).unwrap();
        let qt = QTensor::quantize(&w, dtype).unwrap();
        let candle = QMatMul::from_qtensor(QTensor::quantize(&w, dtype).unwrap()).unwrap();
        let own = Linear::Own(
            QMatrix::from_qtensor(&qt)
                .unwrap()
                .expect("supported format"),
        );
        let dense = qt.dequantize(&Device::Cpu).unwrap();
        // More tokens than one register tile, and a partial tile.
        for tokens in [1, 3, TOKENS + 2] {
            let x = Tensor::randn(0f32, 1f32, (tokens, k), &Device::Cpu).unwrap();
            let want = to_vec(&candle.forward(&x).unwrap());
            let got = to_vec(&own.forward(&x).unwrap());
            // An output is a sum of terms that cancel, so errors are measured against the
            // size of the terms, Σ|w·x|: int8 activations cost both implementations ~0.2 %.
            let exact = to_vec(&x.matmul(&dense.t().unwrap()).unwrap());
            let size = to_vec(
                &x.abs()
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
        }
    }

    /// Every instruction set, for every number of tokens in a register tile, gives the
    /// scalar reference's result to the bit.
    fn check_paths(dtype: GgmlDType, rows: usize, k: usize) {
        let w = Tensor::randn(0f32, 1f32, (rows, k), &Device::Cpu).unwrap();
        let own = QMatrix::from_qtensor(&QTensor::quantize(&w, dtype).unwrap())
            .unwrap()
            .expect("supported format");
        let x = to_vec(&Tensor::randn(0f32, 1f32, (TOKENS, k), &Device::Cpu).unwrap());
        let q = QRows::quantize(&x, k);
        let xs: Vec<QRow<'_>> = (0..TOKENS).map(|t| q.row(t)).collect();
        let format = own.panels.format();
        for p in 0..own.panels.panels() {
            let panel = own.panels.panel(p);
            let mut want = [[0f32; PANEL]; TOKENS];
            for (x, o) in xs.iter().zip(want.iter_mut()) {
                kernels::scalar(format, panel, x, o);
            }
            for isa in [Isa::Avx512Vnni, Isa::Avx2] {
                if !kernels::supported(isa) {
                    continue;
                }
                for tokens in 1..=TOKENS {
                    let mut got = [[0f32; PANEL]; TOKENS];
                    kernels::panel(isa, format, panel, &xs[..tokens], &mut got);
                    assert_eq!(
                        got[..tokens],
                        want[..tokens],
                        "{dtype:?} {isa:?} {tokens} tokens"
                    );
                }
            }
        }
    }

    #[test]
    fn every_instruction_set_matches_the_reference() {
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
            check_paths(dtype, 40, 256);
            check_paths(dtype, 16, 96);
        }
    }

    #[test]
    fn the_panel_layout_holds_the_gguf_values() {
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
            let (rows, k) = (20, 64);
            let w = Tensor::randn(0f32, 1f32, (rows, k), &Device::Cpu).unwrap();
            let qt = QTensor::quantize(&w, dtype).unwrap();
            let dense = to_vec(&qt.dequantize(&Device::Cpu).unwrap());
            let own = QMatrix::from_qtensor(&qt).unwrap().unwrap();
            let format = own.panels.format();
            for r in 0..rows {
                let panel = own.panels.panel(r / PANEL);
                for j in 0..k {
                    let (b, lane) = (j / BLOCK, r % PANEL);
                    let q = panel.weight(format, lane, b, j % BLOCK) as f32;
                    let value = match format {
                        Format::Q4_1 => panel.d(lane, b) * q + panel.m(lane, b),
                        Format::Q8_0 => panel.d(lane, b) * q,
                    };
                    assert_eq!(value, dense[r * k + j], "{dtype:?} row {r} col {j}");
                }
            }
        }
    }

    #[test]
    fn a_stacked_group_gives_each_layer_its_own_output() {
        let x = Tensor::randn(0f32, 1f32, (3, 64), &Device::Cpu).unwrap();
        let layer = |rows| {
            let w = Tensor::randn(0f32, 1f32, (rows, 64), &Device::Cpu).unwrap();
            Linear::new(
                QTensor::quantize(&w, GgmlDType::Q4_1).unwrap(),
                &Device::Cpu,
            )
            .unwrap()
        };
        let (a, b) = (layer(16), layer(32));
        let want = [a.forward(&x).unwrap(), b.forward(&x).unwrap()];
        let group = LinearGroup::new(vec![a, b]);
        assert!(matches!(group, LinearGroup::Stacked { .. }));
        for (got, want) in group.forward(&x).unwrap().iter().zip(&want) {
            let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
        }
    }

    /// Every layer gives a token the same output whatever else shares its step, candle's
    /// formats included.
    #[test]
    fn a_token_s_output_does_not_depend_on_its_batch() {
        for dtype in [
            GgmlDType::Q4_1,
            GgmlDType::Q8_0,
            GgmlDType::Q6K,
            GgmlDType::Q5_0,
        ] {
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

    #[test]
    fn q4_1_matches_candle() {
        check(GgmlDType::Q4_1);
    }

    #[test]
    fn q8_0_matches_candle() {
        check(GgmlDType::Q8_0);
    }
}
