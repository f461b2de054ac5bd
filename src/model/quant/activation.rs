//! Activations quantized to int8 in blocks of 32, the form the integer dot products of
//! [`super::kernels`] consume: per block a scale `d`, `s = d * Σq` (for weight formats with an
//! offset), and the 32 values.

/// Values per block, shared by every weight format wick's own kernels handle.
pub const BLOCK: usize = 32;

#[derive(Debug, Clone, Copy)]
#[repr(C, align(8))]
pub struct QBlock {
    pub d: f32,
    pub s: f32,
    pub qs: [i8; BLOCK],
}

impl Default for QBlock {
    fn default() -> Self {
        Self {
            d: 0.0,
            s: 0.0,
            qs: [0; BLOCK],
        }
    }
}

/// Quantize `x` (a multiple of 32 long) into `out` (`x.len() / 32` blocks).
pub fn quantize_row(x: &[f32], out: &mut [QBlock]) {
    debug_assert_eq!(x.len(), out.len() * BLOCK);
    for (chunk, block) in x.chunks_exact(BLOCK).zip(out.iter_mut()) {
        let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in block.qs.iter_mut().zip(chunk) {
            let r = (v * inv).round() as i32;
            *q = r as i8;
            sum += r;
        }
        // Scales rounded to f16 as in GGUF's own activation blocks (Q8_0/Q8_1): the values
        // then match llama.cpp's to the bit, and the model's outputs stay closest to it.
        block.d = half::f16::from_f32(d).to_f32();
        block.s = half::f16::from_f32(d * sum as f32).to_f32();
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
        let mut q = vec![QBlock::default(); 2];
        quantize_row(&x, &mut q);
        for (b, block) in q.iter().enumerate() {
            let mut sum = 0.0;
            for i in 0..BLOCK {
                let back = block.qs[i] as f32 * block.d;
                // Half a step, plus the f16 rounding of the scale.
                assert!((back - x[b * BLOCK + i]).abs() <= block.d * 0.51 + 1e-6);
                sum += back;
            }
            assert!((block.s - sum).abs() < 1e-2 * (1.0 + sum.abs()));
        }
    }
}
