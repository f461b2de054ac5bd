//! Every format on aarch64 NEON, with or without the dot-product extension (`DOT`).
//!
//! A panel is taken four rows (a quad) at a time: the quad's four bytes of a 64-byte group
//! are one 16-byte register, so one `sdot` (or `smull` + pairwise adds without it) gives each
//! row's sum of four products in its own 32-bit lane, as the x86 paths do for sixteen rows.
//! The integer sums are exact and the float steps are those of the scalar reference
//! ([`super::scalar`]) in its order (`vfmaq_f32` is a fused multiply-add as `mul_add` is), so
//! the results equal the reference's to the bit.

use std::arch::aarch64::*;

use super::{Format, Panel, QRow, PANEL, TOKENS};
use crate::panel::{GROUP, SUPER};

/// Rows per register.
const QUAD: usize = 4;

/// `acc + Σ of four byte products` per 32-bit lane.
#[inline(always)]
unsafe fn dot4<const DOT: bool>(acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t {
    if DOT {
        sdot(acc, w, a)
    } else {
        // Products as i16 (each at most 128·127), pairs added (at most 32512, no overflow),
        // then pairs of pairs added into the lanes.
        let lo = vmull_s8(vget_low_s8(w), vget_low_s8(a));
        let hi = vmull_high_s8(w, a);
        vpadalq_s16(acc, vpaddq_s16(lo, hi))
    }
}

/// `sdot`, which the standard library offers only on nightly: one instruction.
#[target_feature(enable = "dotprod")]
#[inline]
unsafe fn sdot(mut acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t {
    std::arch::asm!(
        "sdot {0:v}.4s, {1:v}.16b, {2:v}.16b",
        inout(vreg) acc,
        in(vreg) w,
        in(vreg) a,
        options(pure, nomem, nostack)
    );
    acc
}

/// Four activation bytes (values `4g..4g+4` of block `b`) in every 32-bit lane.
#[inline(always)]
unsafe fn group(x: &QRow<'_>, b: usize, g: usize) -> int8x16_t {
    let word = (x.qs.get_unchecked(b).as_ptr() as *const i32)
        .add(g)
        .read_unaligned();
    vreinterpretq_s8_s32(vdupq_n_s32(word))
}

/// Four f16 scales as f32.
#[inline(always)]
unsafe fn scales4(v: &[u16], at: usize) -> float32x4_t {
    let f: [f32; QUAD] =
        std::array::from_fn(|i| half::f16::from_bits(*v.get_unchecked(at + i)).to_f32());
    vld1q_f32(f.as_ptr())
}

/// Each byte shifted left by `n` (right by `-n`).
#[inline(always)]
unsafe fn shift(v: uint8x16_t, n: i32) -> uint8x16_t {
    vshlq_u8(v, vdupq_n_s8(n as i8))
}

/// `out[t][r] = row r · xs[t]` for one panel, with `sdot`.
#[target_feature(enable = "neon,dotprod")]
pub unsafe fn panel_dot<const T: usize>(
    format: Format,
    p: Panel<'_>,
    xs: &[QRow<'_>; T],
    out: &mut [[f32; PANEL]; TOKENS],
) {
    panel::<T, true>(format, p, xs, out)
}

/// The same without the dot-product extension.
#[target_feature(enable = "neon")]
pub unsafe fn panel_neon<const T: usize>(
    format: Format,
    p: Panel<'_>,
    xs: &[QRow<'_>; T],
    out: &mut [[f32; PANEL]; TOKENS],
) {
    panel::<T, false>(format, p, xs, out)
}

/// Inlined into the two above, so `sdot` is inlined where the extension is enabled.
#[inline(always)]
unsafe fn panel<const T: usize, const DOT: bool>(
    format: Format,
    p: Panel<'_>,
    xs: &[QRow<'_>; T],
    out: &mut [[f32; PANEL]; TOKENS],
) {
    let bytes = format.panel_block_bytes();
    let kquant = matches!(format, Format::Q4K | Format::Q5K);
    let mask = vdupq_n_u8(0x0F);
    for quad in 0..PANEL / QUAD {
        let rows = quad * QUAD;
        let mut acc = [vdupq_n_f32(0.0); T];
        for b in 0..p.blocks {
            let q = p.qs.as_ptr().add(b * bytes + rows * 4);
            // Per row: Σu·q over values 0..16 (`lo`) and 16..32 (`hi`) of the block.
            let mut lo = [vdupq_n_s32(0); T];
            let mut hi = [vdupq_n_s32(0); T];
            if format == Format::Q8_0 {
                for g in 0..8 {
                    // Back to the signed value: the sum is then Σw·q itself.
                    let w =
                        vreinterpretq_s8_u8(veorq_u8(vld1q_u8(q.add(g * GROUP)), vdupq_n_u8(0x80)));
                    for t in 0..T {
                        let sums = if g < 4 { &mut lo[t] } else { &mut hi[t] };
                        *sums = dot4::<DOT>(*sums, w, group(&xs[t], b, g));
                    }
                }
            } else {
                let high = q.add(4 * GROUP);
                let h0 = if format.high_bits() > 0 {
                    vld1q_u8(high)
                } else {
                    vdupq_n_u8(0)
                };
                let h1 = if format == Format::Q6K {
                    vld1q_u8(high.add(GROUP))
                } else {
                    vdupq_n_u8(0)
                };
                for c in 0..4 {
                    let v = vld1q_u8(q.add(c * GROUP));
                    let mut l = vandq_u8(v, mask);
                    let mut h = vshrq_n_u8::<4>(v);
                    let c = c as i32;
                    match format.high_bits() {
                        1 => {
                            // Bit 4 of value 4c+i is bit c of byte i, of value 16+4c+i bit 4+c.
                            let bit = vdupq_n_u8(0x10);
                            l = vorrq_u8(l, vandq_u8(shift(h0, 4 - c), bit));
                            h = vorrq_u8(h, vandq_u8(shift(h0, -c), bit));
                        }
                        2 => {
                            let bits = vdupq_n_u8(0x30);
                            l = vorrq_u8(l, vandq_u8(shift(h0, 4 - 2 * c), bits));
                            h = vorrq_u8(h, vandq_u8(shift(h1, 4 - 2 * c), bits));
                        }
                        _ => {}
                    }
                    // Stored values are at most 63: they are the same bytes as i8.
                    let (l, h) = (vreinterpretq_s8_u8(l), vreinterpretq_s8_u8(h));
                    for t in 0..T {
                        let x = &xs[t];
                        lo[t] = dot4::<DOT>(lo[t], l, group(x, b, c as usize));
                        hi[t] = dot4::<DOT>(hi[t], h, group(x, b, c as usize + 4));
                    }
                }
            }
            let unit = if format.super_blocks() { b / SUPER } else { b };
            let at = unit * PANEL + rows;
            let d = scales4(p.d, at);
            // The scalar reference's per-block integer, per row.
            let (mul, pairs) = match format {
                Format::Q4K | Format::Q5K => {
                    let sc: [i32; QUAD] =
                        std::array::from_fn(|i| *p.sc.get_unchecked(b * PANEL + rows + i) as i32);
                    (vld1q_s32(sc.as_ptr()), None)
                }
                Format::Q6K => {
                    let pair = |h: usize| -> int32x4_t {
                        let sc: [i32; QUAD] = std::array::from_fn(|i| {
                            *p.sc.get_unchecked((b * PANEL + rows + i) * 2 + h) as i8 as i32
                        });
                        vld1q_s32(sc.as_ptr())
                    };
                    (vdupq_n_s32(1), Some((pair(0), pair(1))))
                }
                _ => (vdupq_n_s32(1), None),
            };
            let mins = if kquant {
                let m: [f32; QUAD] =
                    std::array::from_fn(|i| *p.mins.get_unchecked(b * PANEL + rows + i) as f32);
                Some(vmulq_f32(scales4(p.m, at), vld1q_f32(m.as_ptr())))
            } else if format == Format::Q4_1 {
                Some(scales4(p.m, at))
            } else {
                None
            };
            for t in 0..T {
                let x = &xs[t];
                let sum = *x.sum.get_unchecked(b);
                let dot = match (format, pairs) {
                    (Format::Q6K, Some((ca, cb))) => {
                        let [sa, sb] = x.half_sums(b);
                        let da = vsubq_s32(lo[t], vdupq_n_s32(32 * sa));
                        let db = vsubq_s32(hi[t], vdupq_n_s32(32 * sb));
                        vaddq_s32(vmulq_s32(ca, da), vmulq_s32(cb, db))
                    }
                    (Format::Q4_0, _) => vsubq_s32(vaddq_s32(lo[t], hi[t]), vdupq_n_s32(8 * sum)),
                    (Format::Q5_0, _) => vsubq_s32(vaddq_s32(lo[t], hi[t]), vdupq_n_s32(16 * sum)),
                    _ => vmulq_s32(vaddq_s32(lo[t], hi[t]), mul),
                };
                let scale = vmulq_f32(d, vdupq_n_f32(*x.d.get_unchecked(b)));
                acc[t] = vfmaq_f32(acc[t], vcvtq_f32_s32(dot), scale);
                let sx = vdupq_n_f32(*x.s.get_unchecked(b));
                match mins {
                    Some(m) if kquant => acc[t] = vfmsq_f32(acc[t], m, sx),
                    Some(m) => acc[t] = vfmaq_f32(acc[t], m, sx),
                    None => {}
                }
            }
        }
        for (o, acc) in out.iter_mut().zip(acc) {
            vst1q_f32(o.as_mut_ptr().add(rows), acc);
        }
    }
}
