//! Activations quantized to int8 in blocks of 32, the form the integer dot products of
//! [`super::kernels`] consume. Struct-of-arrays, so kernels can combine per-block scales
//! with whole-row vector operations: per block a scale `d`, `s = d * Σq` (for weight formats
//! with an offset), the integer sum `Σq` (for weights stored with an offset), the sums of
//! its two halves (for Q6_K, whose scales cover 16 values), and the 32 values.

/// Values per block, shared by every weight format wick's own kernels handle.
pub const BLOCK: usize = 32;

/// `rows` activation rows of `blocks` blocks each.
#[derive(Debug, Clone, Default)]
pub struct QRows {
    pub blocks: usize,
    pub d: Vec<f32>,
    pub s: Vec<f32>,
    pub sum: Vec<i32>,
    /// Σq of values 0..16 in the low 16 bits, of values 16..32 in the high 16 bits.
    pub halves: Vec<i32>,
    pub qs: Vec<[i8; BLOCK]>,
}

/// One row's view.
#[derive(Debug, Clone, Copy)]
pub struct QRow<'a> {
    pub d: &'a [f32],
    pub s: &'a [f32],
    pub sum: &'a [i32],
    pub halves: &'a [i32],
    pub qs: &'a [[i8; BLOCK]],
}

/// Round to the nearest integer, halves away from zero (as `f32::round`, which llama.cpp's
/// reference quantizer uses too), for a value already scaled into -127..=127 (anything
/// outside, NaN included, is held to that range first). Plain float steps (truncation, a
/// compare, the sign copied back) vectorise on any x86-64 or aarch64, where `f32::round`
/// is a library call per value.
#[inline(always)]
fn round_half_away(x: f32) -> i32 {
    // `max` returns the number when the other operand is NaN.
    // Not `clamp`: it would pass a NaN through (and the int conversion needs a number).
    #[allow(clippy::manual_clamp)]
    let x = x.max(-127.0).min(127.0);
    let a = x.abs();
    let t = a.trunc();
    let r = t + if a - t >= 0.5 { 1.0 } else { 0.0 };
    // SAFETY: |r| <= 127, finite: it fits an i32.
    unsafe { r.copysign(x).to_int_unchecked::<i32>() }
}

impl QRow<'_> {
    /// Σq of block `b`'s values 0..16 and 16..32.
    pub fn half_sums(&self, b: usize) -> [i32; 2] {
        let h = self.halves[b];
        [h as i16 as i32, (h >> 16) as i16 as i32]
    }
}

impl QRows {
    /// Quantize `x` (`rows * k` values, `k` a multiple of 32). A prompt's rows are split
    /// across the kernel pool; each block is quantized on its own, so the split does not
    /// change a value.
    pub fn quantize(x: &[f32], k: usize) -> Self {
        let blocks = k / BLOCK;
        let n = x.len() / BLOCK;
        let mut out = Self {
            blocks,
            d: vec![0.0; n],
            s: vec![0.0; n],
            sum: vec![0; n],
            halves: vec![0; n],
            qs: vec![[0; BLOCK]; n],
        };
        let pool = crate::pool::Pool::global();
        // Below a few thousand blocks (a decode step) the handoff costs more than it saves.
        let per_task = n.div_ceil(pool.threads() * 2).max(PARALLEL_BLOCKS);
        let parts: Vec<std::sync::Mutex<Part<'_>>> = x
            .chunks(per_task * BLOCK)
            .zip(out.d.chunks_mut(per_task))
            .zip(out.s.chunks_mut(per_task))
            .zip(out.sum.chunks_mut(per_task))
            .zip(out.halves.chunks_mut(per_task))
            .zip(out.qs.chunks_mut(per_task))
            .map(|(((((x, d), s), sum), halves), qs)| {
                std::sync::Mutex::new(Part {
                    x,
                    d,
                    s,
                    sum,
                    halves,
                    qs,
                })
            })
            .collect();
        pool.run(parts.len(), &|i| {
            // Each part is taken by exactly one task: the lock is never contended.
            parts[i]
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .quantize();
        });
        out
    }

    pub fn rows(&self) -> usize {
        self.d.len() / self.blocks.max(1)
    }

    pub fn row(&self, r: usize) -> QRow<'_> {
        let range = r * self.blocks..(r + 1) * self.blocks;
        QRow {
            d: &self.d[range.clone()],
            s: &self.s[range.clone()],
            sum: &self.sum[range.clone()],
            halves: &self.halves[range.clone()],
            qs: &self.qs[range],
        }
    }
}

/// Blocks a task quantizes at least.
const PARALLEL_BLOCKS: usize = 2048;

/// One task's share of [`QRows::quantize`]: its input blocks and their outputs.
struct Part<'a> {
    x: &'a [f32],
    d: &'a mut [f32],
    s: &'a mut [f32],
    sum: &'a mut [i32],
    halves: &'a mut [i32],
    qs: &'a mut [[i8; BLOCK]],
}

impl Part<'_> {
    fn quantize(&mut self) {
        for (i, chunk) in self.x.chunks_exact(BLOCK).enumerate() {
            let chunk: &[f32; BLOCK] = chunk.try_into().expect("block");
            // Lane-wise maxima (the maximum is exact in any order), so the loop vectorises.
            let mut lanes = [0f32; 8];
            for part in chunk.chunks_exact(8) {
                for (m, v) in lanes.iter_mut().zip(part) {
                    *m = m.max(v.abs());
                }
            }
            let amax = lanes.iter().fold(0f32, |m, &v| m.max(v));
            let d = amax / 127.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            let q = &mut self.qs[i];
            let mut halves = [0i32; 2];
            for (h, half) in halves.iter_mut().enumerate() {
                let range = 16 * h..16 * (h + 1);
                for (q, &v) in q[range.clone()].iter_mut().zip(&chunk[range]) {
                    let r = round_half_away(v * inv);
                    *q = r as i8;
                    *half += r;
                }
            }
            let sum = halves[0] + halves[1];
            // Each half sum is at most 16·127 in size: it fits an i16.
            self.halves[i] = (halves[0] as i16 as u16 as u32 | (halves[1] as u32) << 16) as i32;
            // Scales rounded to f16 as in GGUF's own activation blocks (Q8_0/Q8_1): the
            // values then match llama.cpp's to the bit, and outputs stay closest to it.
            self.d[i] = half::f16::from_f32(d).to_f32();
            self.s[i] = half::f16::from_f32(d * sum as f32).to_f32();
            self.sum[i] = sum;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_within_half_a_step() {
        let x: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.173)
            .collect();
        let q = QRows::quantize(&x, 64);
        assert_eq!((q.rows(), q.blocks), (1, 2));
        let row = q.row(0);
        for b in 0..2 {
            let mut sum = 0.0;
            for i in 0..BLOCK {
                let back = row.qs[b][i] as f32 * row.d[b];
                // Half a step, plus the f16 rounding of the scale.
                assert!((back - x[b * BLOCK + i]).abs() <= row.d[b] * 0.51 + 1e-6);
                sum += back;
            }
            assert!((row.s[b] - sum).abs() < 1e-2 * (1.0 + sum.abs()));
        }
    }

    #[test]
    fn rounding_matches_f32_round() {
        for x in [
            0.0, 0.4, 0.5, 1.5, 2.5, -2.5, -0.5, -0.6, 126.7, -127.0, 0.49999997, 3.5000002,
            -126.5, 126.49999,
        ] {
            assert_eq!(round_half_away(x), f32::round(x) as i32, "{x}");
        }
        assert_eq!(round_half_away(f32::NAN), -127);
        assert_eq!(round_half_away(1e9), 127);
    }
}
