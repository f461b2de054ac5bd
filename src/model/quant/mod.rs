//! Quantized linear layers. The weight formats of the catalog's models that candle runs
//! slowly on the CPU (Q4_1 has no SIMD path there at all) get wick's own kernels: weights
//! repacked once at load, activations quantized to int8 once per step and shared by every
//! output row, rows split across the compute threads. Other formats, and every non-CPU
//! device, keep candle's `QMatMul`.

pub mod activation;
pub mod kernels;
pub mod pool;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Result, Tensor};
use half::f16;

use activation::{QRow, QRows, BLOCK};
use kernels::{Isa, Tile, TILE, TOKENS};

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
pub enum Format {
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

    /// `y[t][r] = Σ_k w[r][k] x[t][k]` for activations already quantized (`t` rows);
    /// `y` is `[t, rows]`.
    pub fn matmul_quantized(&self, x: &QRows, y: &mut [f32]) {
        let tokens = x.rows();
        debug_assert_eq!(y.len(), tokens * self.rows);
        let isa = kernels::isa();
        let pool = pool::Pool::global();
        // Whole tiles per task; a few tasks per thread so an unlucky thread does not hold
        // up the loop.
        let tiles = self.rows.div_ceil(TILE);
        let tiles_per_task = tiles.div_ceil(pool.threads() * 4).max(1);
        let out = SharedOut(y.as_mut_ptr());
        pool.run(tiles.div_ceil(tiles_per_task), &|task| {
            let out = &out;
            let first = task * tiles_per_task * TILE;
            let last = (first + tiles_per_task * TILE).min(self.rows);
            let mut row = first;
            while row < last {
                // Full tiles, then single rows for what is left.
                let rows = if last - row >= TILE { TILE } else { 1 };
                let tile = self.tile(row, rows);
                let write = |t: usize, v: &[f32; TILE]| {
                    for (r, value) in v.iter().enumerate().take(rows) {
                        // SAFETY: each (t, row) is written by exactly one task, inside `y`.
                        unsafe { *out.0.add(t * self.rows + row + r) = *value };
                    }
                };
                if tokens > 1 && isa == Isa::Avx512Vnni {
                    // Register tiles of rows × tokens: each weight block is read (and
                    // unpacked) once per TOKENS tokens.
                    for first in (0..tokens).step_by(TOKENS) {
                        let n = (tokens - first).min(TOKENS);
                        let xs: [QRow<'_>; TOKENS] =
                            std::array::from_fn(|j| x.row((first + j).min(tokens - 1)));
                        let mut v = [[0f32; TILE]; TOKENS];
                        kernels::token_tile(isa, self.format, tile, &xs[..n], &mut v);
                        for (j, v) in v.iter().take(n).enumerate() {
                            write(first + j, v);
                        }
                    }
                } else if tokens > 1 && self.format == Format::Q4_1 && isa != Isa::Scalar {
                    // Several tokens share the step: unpack the tile's nibbles once for all.
                    UNPACKED.with(|buf| {
                        let mut buf = buf.borrow_mut();
                        kernels::unpack_q4_1(tile.qs, &mut buf);
                        let unpacked = Tile { qs: &buf, ..tile };
                        for t in 0..tokens {
                            let mut v = [0f32; TILE];
                            kernels::q4_1_unpacked(isa, unpacked, x.row(t), &mut v);
                            write(t, &v);
                        }
                    });
                } else {
                    for t in 0..tokens {
                        let mut v = [0f32; TILE];
                        self.dot_tile(isa, tile, x.row(t), &mut v);
                        write(t, &v);
                    }
                }
                row += rows;
            }
        });
    }

    fn tile(&self, row: usize, rows: usize) -> Tile<'_> {
        let nb = self.blocks;
        let bytes = self.format.bytes_per_block();
        Tile {
            rows,
            blocks: nb,
            d: &self.d[row * nb..(row + rows) * nb],
            m: if self.m.is_empty() {
                &[]
            } else {
                &self.m[row * nb..(row + rows) * nb]
            },
            qs: &self.qs[row * nb * bytes..(row + rows) * nb * bytes],
        }
    }

    fn dot_tile(&self, isa: Isa, tile: Tile<'_>, x: QRow<'_>, out: &mut [f32; TILE]) {
        match self.format {
            Format::Q4_1 => kernels::q4_1(isa, tile, x, out),
            Format::Q8_0 => kernels::q8_0(isa, tile, x, out),
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Stack matrices that share an input into one (rows of the first, then the next...),
    /// when their formats and widths agree.
    fn stack(parts: &[&QMatrix]) -> Option<QMatrix> {
        let first = parts.first()?;
        if parts
            .iter()
            .any(|p| p.format != first.format || p.blocks != first.blocks)
        {
            return None;
        }
        Some(QMatrix {
            format: first.format,
            rows: parts.iter().map(|p| p.rows).sum(),
            blocks: first.blocks,
            d: parts.iter().flat_map(|p| p.d.iter().copied()).collect(),
            m: parts.iter().flat_map(|p| p.m.iter().copied()).collect(),
            qs: parts.iter().flat_map(|p| p.qs.iter().copied()).collect(),
        })
    }
}

thread_local! {
    /// Per-thread scratch for unpacked Q4_1 tiles.
    static UNPACKED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
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
                let q = QRows::quantize(&xs, k);
                let mut y = vec![0f32; tokens * m.rows];
                m.matmul_quantized(&q, &mut y);
                Tensor::from_vec(y, (tokens, m.rows), x.device())
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
                Linear::Candle(_) => None,
            })
            .collect();
        if own.len() == parts.len() {
            if let Some(stacked) = QMatrix::stack(&own) {
                return Self::Stacked {
                    widths: own.iter().map(|m| m.rows).collect(),
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
    use super::*;

    /// wick's kernels against candle's quantized matmul on the same weights: both quantize
    /// the activations to int8 blocks, so they agree to float rounding.
    fn check(dtype: GgmlDType) {
        // Not a multiple of the tile: the last rows go one at a time.
        check_shape(dtype, 98, 256);
        // An odd number of blocks: the 512-bit kernels pair blocks and finish the last alone.
        check_shape(dtype, 8, 96);
    }

    fn check_shape(dtype: GgmlDType, rows: usize, k: usize) {
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
            // Every instruction set gives the scalar reference's answer, in full tiles and
            // single rows.
            let q = QRows::quantize(&x.flatten_all().unwrap().to_vec1::<f32>().unwrap(), k);
            for isa in [kernels::isa(), Isa::Avx2, Isa::Scalar] {
                if isa == Isa::Avx2 && !avx2() {
                    continue;
                }
                for row in (0..rows).step_by(TILE) {
                    for n in [TILE, 1].into_iter().filter(|n| row + n <= rows) {
                        let (mut a, mut b) = ([0f32; TILE], [0f32; TILE]);
                        let tile = own.tile(row, n);
                        own.dot_tile(isa, tile, q.row(0), &mut a);
                        own.dot_tile(Isa::Scalar, tile, q.row(0), &mut b);
                        for r in 0..n {
                            assert!((a[r] - b[r]).abs() <= 1e-4 * (1.0 + b[r].abs()), "{isa:?}");
                        }
                        if own.format == Format::Q4_1 {
                            let mut buf = Vec::new();
                            kernels::unpack_q4_1(tile.qs, &mut buf);
                            let mut c = [0f32; TILE];
                            kernels::q4_1_unpacked(
                                isa,
                                Tile { qs: &buf, ..tile },
                                q.row(0),
                                &mut c,
                            );
                            for r in 0..n {
                                assert!(
                                    (c[r] - b[r]).abs() <= 1e-4 * (1.0 + b[r].abs()),
                                    "unpacked {isa:?}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// Token tiles (1..=TOKENS tokens against a tile of rows) give each token exactly what
    /// the single-token kernel gives it, on every instruction set.
    fn check_token_tiles(dtype: GgmlDType, rows: usize, k: usize) {
        let w = Tensor::randn(0f32, 1f32, (rows, k), &Device::Cpu).unwrap();
        let own = QMatrix::from_qtensor(&QTensor::quantize(&w, dtype).unwrap())
            .unwrap()
            .expect("supported format");
        let x: Vec<f32> = Tensor::randn(0f32, 1f32, (TOKENS, k), &Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let q = QRows::quantize(&x, k);
        let xs: Vec<QRow<'_>> = (0..TOKENS).map(|t| q.row(t)).collect();
        for isa in [kernels::isa(), Isa::Avx2, Isa::Scalar] {
            if isa == Isa::Avx2 && !avx2() {
                continue;
            }
            for row in (0..rows).step_by(TILE) {
                for n in [TILE, 1].into_iter().filter(|n| row + n <= rows) {
                    let tile = own.tile(row, n);
                    for tokens in 1..=TOKENS {
                        let mut got = [[0f32; TILE]; TOKENS];
                        kernels::token_tile(isa, own.format, tile, &xs[..tokens], &mut got);
                        for (t, got) in got.iter().take(tokens).enumerate() {
                            let mut want = [0f32; TILE];
                            own.dot_tile(isa, tile, xs[t], &mut want);
                            assert_eq!(got[..n], want[..n], "{dtype:?} {isa:?} {tokens} tokens");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn token_tiles_match_single_tokens() {
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
            check_token_tiles(dtype, 10, 256);
            check_token_tiles(dtype, 5, 96);
        }
    }

    fn avx2() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
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
        let (a, b) = (layer(8), layer(12));
        let want = [a.forward(&x).unwrap(), b.forward(&x).unwrap()];
        let group = LinearGroup::new(vec![a, b]);
        assert!(matches!(group, LinearGroup::Stacked { .. }));
        for (got, want) in group.forward(&x).unwrap().iter().zip(&want) {
            let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
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
