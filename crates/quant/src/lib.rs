//! wick's CPU kernels for GGUF quantized weights. Every weight format that common GGUF
//! files hold (Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K: all of a Q4_K_M or Q5_K_M file) is
//! repacked once at load into panels ([`panel`]); activations are quantized to int8 once per
//! step ([`activation`]) and shared by every output row; products run per instruction set
//! ([`kernels`]) with rows split across the compute threads ([`pool`]).
//!
//! The crate has no dependency beyond `half`, so its tests run under emulation for other
//! architectures (scripts/kernels-aarch64.sh).

pub mod activation;
pub mod buffer;
pub mod kernels;
pub mod panel;
pub mod pool;

#[cfg(test)]
mod tests;

use activation::{QRow, QRows, BLOCK};
use kernels::TOKENS;
use panel::{Panels, RepackError, PANEL};

/// A weight matrix `[rows, k]` in wick's own panel layout.
pub struct QMatrix {
    panels: Panels,
}

/// The GGUF weight formats wick's kernels take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Q4_0,
    Q4_1,
    Q5_0,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
}

impl QMatrix {
    /// Repack a `[rows, k]` GGUF tensor's data (`raw`, row after row).
    pub fn repack(format: Format, rows: usize, k: usize, raw: &[u8]) -> Result<Self, RepackError> {
        if !k.is_multiple_of(format.gguf_block().0) {
            return Err(RepackError(format!(
                "{format:?} rows of {k} values are not whole blocks"
            )));
        }
        let panels = Panels::repack(format, rows, k / BLOCK, raw)?;
        Ok(Self { panels })
    }

    pub fn format(&self) -> Format {
        self.panels.format()
    }

    pub fn panels(&self) -> &Panels {
        &self.panels
    }

    /// `y[t][r] = Σ_k w[r][k] x[t][k]` for activations already quantized (`t` rows);
    /// `y` is `[t, rows]`.
    pub fn matmul_quantized(&self, x: &QRows, y: &mut [f32]) {
        matmul_many(&[self], x, &mut [y]);
    }

    pub fn rows(&self) -> usize {
        self.panels.rows()
    }

    /// Values per row.
    pub fn k(&self) -> usize {
        self.panels.blocks() * BLOCK
    }

    /// Bytes of weights held.
    pub fn bytes(&self) -> usize {
        self.panels.bytes()
    }

    /// Row `r` as f32, exactly as GGUF's dequantization gives it (an embedding lookup).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let format = self.panels.format();
        let panel = self.panels.panel(r / PANEL);
        for (j, o) in out.iter_mut().enumerate().take(self.k()) {
            *o = panel.weight(format, r % PANEL, j / BLOCK, j % BLOCK);
        }
    }
}

/// Products of several matrices with one input, in one parallel loop: the panels of all of
/// them are the loop's tasks, so the threads meet once instead of once per matrix. `ys[i]`
/// is `[tokens, rows of matrix i]`.
pub fn matmul_many(matrices: &[&QMatrix], x: &QRows, ys: &mut [&mut [f32]]) {
    let tokens = x.rows();
    let isa = kernels::isa();
    let pool = pool::Pool::global();
    // Whole panels per task; a few tasks per thread so an unlucky thread does not hold up
    // the loop. Tasks never span two matrices.
    let total: usize = matrices.iter().map(|m| m.panels.panels()).sum();
    let per_task = total.div_ceil(pool.threads() * 4).max(1);
    let mut tasks = Vec::new();
    for (i, m) in matrices.iter().enumerate() {
        debug_assert_eq!(ys[i].len(), tokens * m.rows());
        for first in (0..m.panels.panels()).step_by(per_task) {
            tasks.push((i, first, (first + per_task).min(m.panels.panels())));
        }
    }
    // The activation rows in register tiles, built once for every panel of every task
    // (the last tile's unused entries repeat a row; the kernels see only the first `n`).
    // Tiles as wide as the widest kernel among the matrices; a narrower kernel takes a tile
    // in several passes (`kernels::panel`).
    let tile = matrices
        .iter()
        .map(|m| kernels::tile_tokens(isa, m.format()))
        .max()
        .unwrap_or(TOKENS);
    let tiles: Vec<[QRow<'_>; TOKENS]> = (0..tokens)
        .step_by(tile)
        .map(|first| std::array::from_fn(|j| x.row((first + j).min(tokens - 1))))
        .collect();
    let outs: Vec<SharedOut> = ys.iter_mut().map(|y| SharedOut(y.as_mut_ptr())).collect();
    pool.run(tasks.len(), &|task| {
        let (i, from, to) = tasks[task];
        let (m, out) = (matrices[i], &outs[i]);
        let (rows, format) = (m.rows(), m.panels.format());
        for p in from..to {
            let panel = m.panels.panel(p);
            let first_row = p * PANEL;
            let live = PANEL.min(rows - first_row);
            // Tokens in register tiles: each panel block is read and unpacked once per
            // `tile` tokens (a prompt's tokens reuse the panel from cache).
            for (t, xs) in tiles.iter().enumerate() {
                let first = t * tile;
                let n = (tokens - first).min(tile);
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

/// A raw output pointer shared by the tasks of one pool loop, each of which writes its own
/// disjoint part of the buffer.
pub struct SharedOut(pub *mut f32);
// SAFETY: the tasks write disjoint elements (see its users).
unsafe impl Sync for SharedOut {}
unsafe impl Send for SharedOut {}
