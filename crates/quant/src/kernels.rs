//! Products of one weight panel (16 rows, see [`super::panel`]) with one to [`TOKENS`]
//! int8-quantized activation rows, for each instruction set: AVX-512 VNNI (`vpdpbusd`, one
//! row per 32-bit lane, the whole panel in one register; every format), AVX2
//! (`vpmaddubsw` + `vpmaddwd`, a panel as two halves; every format), NEON, and portable
//! scalar code that is also the reference in tests.
//!
//! Per 32-value block, each row's integer dot product of its unsigned stored values `u`
//! with the activation's `q` is exact on every path (K-quant sub-block scales are applied
//! to it as integers); it is then scaled and accumulated in the same order with fused
//! multiply-adds, so every path gives the scalar reference's result to the bit. With `dx`
//! the activation block's scale, `Σq` its integer sum and `sx = dx·Σq`:
//! - Q4_0, Q5_0, Q8_0 (`w = d·(u - o)`, o = 8, 16, 128): `acc = fma(Σu·q - o·Σq, d·dx, acc)`
//! - Q4_1 (`w = d·u + m`): `acc = fma(Σu·q, d·dx, acc)`, then `acc = fma(m, sx, acc)`
//! - Q4_K, Q5_K (`w = d·sc·u - dmin·min`): `acc = fma(sc·Σu·q, d·dx, acc)`, then
//!   `acc = fma(-(dmin·min), sx, acc)`
//! - Q6_K (`w = d·sc_h·(u - 32)`, a scale per 16 values): with `A`/`B` the two halves,
//!   `acc = fma(scA·(ΣAu·q - 32·ΣAq) + scB·(ΣBu·q - 32·ΣBq), d·dx, acc)`

use super::activation::{QRow, BLOCK};
use super::panel::{Panel, PANEL};
use super::Format;

/// Activation rows per register tile at most: each panel block is loaded and unpacked once
/// for up to this many tokens. AVX-512's 32 registers hold eight tokens' sums beside a
/// block's unpacked values; AVX2 and NEON, with 16 and 32 narrower registers, four
/// ([`tile_tokens`]).
pub const TOKENS: usize = 8;

/// Tokens per register tile for `format` on `isa`: what [`panel`] takes in one pass over a
/// panel. Eight on AVX-512 VNNI for the formats whose unpacking costs most (64-token
/// products, `cargo bench --bench kernels`: Q6_K 157 → 232 GMAC/s, Q5_0 +10 %, Q4_K +5 %);
/// Q4_1 and Q8_0, which unpack in one step, measured no faster with eight and keep four.
/// Eight on AVX2 for Q8_0, whose block sums need no i16 partials, so eight tokens' integer
/// sums fit the registers: the output projection of an 8-stream decode step (151936×896 on the
/// 0.5B, Zen 3) went from 18.5 to 14.5 ms, and to 13.0 with the prefetch of [`x86`]'s
/// first pass (medians of five interleaved `cargo bench --bench kernels -- 0.5b` runs).
pub fn tile_tokens(isa: Isa, format: Format) -> usize {
    match (isa, format) {
        (Isa::Avx512Vnni, Format::Q4_1 | Format::Q8_0) => NARROW_TOKENS,
        (Isa::Avx512Vnni, _) => TOKENS,
        (Isa::Avx2, Format::Q8_0) => TOKENS,
        _ => NARROW_TOKENS,
    }
}

/// Tokens per pass of the AVX2 (but for Q8_0), NEON and scalar paths.
const NARROW_TOKENS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Avx512Vnni,
    Avx2,
    /// aarch64 with the dot-product extension (`sdot`: Apple M1 and later, Graviton 2+,
    /// Cortex-A76+).
    NeonDot,
    /// aarch64 without it (products widened with `smull` and added pairwise).
    Neon,
    Scalar,
}

/// The instruction set the kernels use, looked up once: the best this CPU has, or the one
/// `WICK_ISA` names (`avx512vnni`, `avx2`, `neondot`, `neon`, `scalar`) where the CPU has it,
/// so paths can be compared side by side on one machine.
pub fn isa() -> Isa {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| {
        let best = best_isa();
        let asked = std::env::var("WICK_ISA").ok().and_then(|name| {
            Some(match name.to_ascii_lowercase().as_str() {
                "avx512vnni" => Isa::Avx512Vnni,
                "avx2" => Isa::Avx2,
                "neondot" => Isa::NeonDot,
                "neon" => Isa::Neon,
                "scalar" => Isa::Scalar,
                _ => return None,
            })
        });
        match asked {
            Some(isa) if runs_on(isa, best) => isa,
            _ => best,
        }
    })
}

fn best_isa() -> Isa {
    {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c");
            if avx2
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512vnni")
                && is_x86_feature_detected!("avx512bw")
            {
                return Isa::Avx512Vnni;
            }
            if avx2 {
                return Isa::Avx2;
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("dotprod") {
                return Isa::NeonDot;
            }
            return Isa::Neon;
        }
        #[allow(unreachable_code)]
        Isa::Scalar
    }
}

/// Whether `isa` can run on this CPU (tests try every path the machine has).
pub fn supported(isa: Isa) -> bool {
    runs_on(isa, best_isa())
}

/// Whether `isa` runs on a CPU whose best instruction set is `best`.
fn runs_on(isa: Isa, best: Isa) -> bool {
    match (isa, best) {
        (Isa::Scalar, _) => true,
        (Isa::Avx2, best) => matches!(best, Isa::Avx2 | Isa::Avx512Vnni),
        (Isa::Avx512Vnni, best) => best == Isa::Avx512Vnni,
        (Isa::Neon, best) => matches!(best, Isa::Neon | Isa::NeonDot),
        (Isa::NeonDot, best) => best == Isa::NeonDot,
    }
}

/// `out[t][r] = row r of the panel · xs[t]` for every token `t < xs.len()` (1..=TOKENS).
/// More tokens than [`tile_tokens`] gives run as several passes; each token's result is
/// the same however its tokens are grouped.
pub fn panel(
    isa: Isa,
    format: Format,
    p: Panel<'_>,
    xs: &[QRow<'_>],
    out: &mut [[f32; PANEL]; TOKENS],
) {
    debug_assert!((1..=TOKENS).contains(&xs.len()));
    debug_assert!(supported(isa));
    let tile = tile_tokens(isa, format);
    if xs.len() > tile {
        for (c, xs) in xs.chunks(tile).enumerate() {
            let mut part = [[0f32; PANEL]; TOKENS];
            panel(isa, format, p, xs, &mut part);
            out[c * tile..c * tile + xs.len()].copy_from_slice(&part[..xs.len()]);
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! tokens {
            ($f:ident) => {
                match xs.len() {
                    1 => x86::$f::<1>(format, p, xs.try_into().expect("1"), out),
                    2 => x86::$f::<2>(format, p, xs.try_into().expect("2"), out),
                    3 => x86::$f::<3>(format, p, xs.try_into().expect("3"), out),
                    _ => x86::$f::<4>(format, p, xs.try_into().expect("4"), out),
                }
            };
        }
        if isa == Isa::Avx512Vnni {
            // SAFETY: `supported(isa)`: the CPU has these features.
            unsafe {
                match xs.len() {
                    1 => x86::vnni::<1>(format, p, xs.try_into().expect("1"), out),
                    2 => x86::vnni::<2>(format, p, xs.try_into().expect("2"), out),
                    3 => x86::vnni::<3>(format, p, xs.try_into().expect("3"), out),
                    4 => x86::vnni::<4>(format, p, xs.try_into().expect("4"), out),
                    5 => x86::vnni::<5>(format, p, xs.try_into().expect("5"), out),
                    6 => x86::vnni::<6>(format, p, xs.try_into().expect("6"), out),
                    7 => x86::vnni::<7>(format, p, xs.try_into().expect("7"), out),
                    _ => x86::vnni::<8>(format, p, xs.try_into().expect("8"), out),
                }
            };
            return;
        }
        if isa != Isa::Scalar {
            // SAFETY: AVX-512 VNNI machines have AVX2 too; `supported(isa)` checked it.
            unsafe {
                match (format, xs.len()) {
                    (Format::Q8_0, 5) => x86::avx2_q8_0::<5>(p, xs.try_into().expect("5"), out),
                    (Format::Q8_0, 6) => x86::avx2_q8_0::<6>(p, xs.try_into().expect("6"), out),
                    (Format::Q8_0, 7) => x86::avx2_q8_0::<7>(p, xs.try_into().expect("7"), out),
                    (Format::Q8_0, 8) => x86::avx2_q8_0::<8>(p, xs.try_into().expect("8"), out),
                    _ => tokens!(avx2),
                }
            };
            return;
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! tokens {
            ($f:ident) => {
                match xs.len() {
                    1 => arm::$f::<1>(format, p, xs.try_into().expect("1"), out),
                    2 => arm::$f::<2>(format, p, xs.try_into().expect("2"), out),
                    3 => arm::$f::<3>(format, p, xs.try_into().expect("3"), out),
                    _ => arm::$f::<4>(format, p, xs.try_into().expect("4"), out),
                }
            };
        }
        match isa {
            // SAFETY: `supported(isa)`: the CPU has the dot-product extension.
            Isa::NeonDot => return unsafe { tokens!(panel_dot) },
            // SAFETY: NEON is part of every aarch64 CPU.
            Isa::Neon => return unsafe { tokens!(panel_neon) },
            _ => {}
        }
    }
    for (x, o) in xs.iter().zip(out.iter_mut()) {
        scalar(format, p, x, o);
    }
}

/// The reference: one row and one block at a time.
pub fn scalar(format: Format, p: Panel<'_>, x: &QRow<'_>, out: &mut [f32; PANEL]) {
    for (r, o) in out.iter_mut().enumerate() {
        let mut acc = 0f32;
        for b in 0..p.blocks {
            let mut halves = [0i32; 2];
            for (j, &q) in x.qs[b].iter().enumerate() {
                halves[j / 16] += p.value(format, r, b, j) * q as i32;
            }
            let [lo, hi] = halves;
            let scale = p.d(format, r, b) * x.d[b];
            let sum = x.sum[b];
            acc = match format {
                Format::Q4_0 => ((lo + hi - 8 * sum) as f32).mul_add(scale, acc),
                Format::Q5_0 => ((lo + hi - 16 * sum) as f32).mul_add(scale, acc),
                Format::Q8_0 => ((lo + hi - 128 * sum) as f32).mul_add(scale, acc),
                Format::Q4_1 => {
                    let acc = ((lo + hi) as f32).mul_add(scale, acc);
                    p.m(format, r, b).mul_add(x.s[b], acc)
                }
                Format::Q4K | Format::Q5K => {
                    let dot = (lo + hi) * p.sc(format, r, b, 0);
                    let acc = (dot as f32).mul_add(scale, acc);
                    let min = p.m(format, r, b) * p.min(r, b) as f32;
                    (-min).mul_add(x.s[b], acc)
                }
                Format::Q6K => {
                    let [sa, sb] = x.half_sums(b);
                    let (ca, cb) = (p.sc(format, r, b, 0), p.sc(format, r, b, 1));
                    let dot = ca * (lo - 32 * sa) + cb * (hi - 32 * sb);
                    (dot as f32).mul_add(scale, acc)
                }
            };
        }
        *o = acc;
    }
    debug_assert_eq!(BLOCK, 32);
}

#[cfg(target_arch = "aarch64")]
mod arm;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Format, Panel, QRow, PANEL, TOKENS};
    use crate::panel::{GROUP, SUPER};

    /// Four activation bytes (values `4g..4g+4` of a block) in every 32-bit lane.
    #[inline(always)]
    unsafe fn group(x: &QRow<'_>, b: usize, g: usize) -> i32 {
        (x.qs.get_unchecked(b).as_ptr() as *const i32)
            .add(g)
            .read_unaligned()
    }

    /// Σ over a block's eight groups of `vpdpbusd(w[g], x group g)`, in two chains so the
    /// core overlaps them.
    #[inline(always)]
    unsafe fn block_dot(w: &[__m512i; 8], x: &QRow<'_>, b: usize) -> __m512i {
        let zero = _mm512_setzero_si512();
        let mut even = _mm512_dpbusd_epi32(zero, w[0], _mm512_set1_epi32(group(x, b, 0)));
        let mut odd = _mm512_dpbusd_epi32(zero, w[1], _mm512_set1_epi32(group(x, b, 1)));
        for g in (2..8).step_by(2) {
            even = _mm512_dpbusd_epi32(even, w[g], _mm512_set1_epi32(group(x, b, g)));
            odd = _mm512_dpbusd_epi32(odd, w[g + 1], _mm512_set1_epi32(group(x, b, g + 1)));
        }
        _mm512_add_epi32(even, odd)
    }

    #[inline(always)]
    unsafe fn scales(ptr: *const u16) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(ptr as *const __m256i))
    }

    /// Σ of `vpdpbusd` over the four groups `first..first + 4` of a block (Q6_K's halves).
    #[inline(always)]
    unsafe fn half_dot(w: &[__m512i; 8], x: &QRow<'_>, b: usize, first: usize) -> __m512i {
        let zero = _mm512_setzero_si512();
        let mut even = _mm512_dpbusd_epi32(zero, w[first], _mm512_set1_epi32(group(x, b, first)));
        let g = first + 1;
        let mut odd = _mm512_dpbusd_epi32(zero, w[g], _mm512_set1_epi32(group(x, b, g)));
        let g = first + 2;
        even = _mm512_dpbusd_epi32(even, w[g], _mm512_set1_epi32(group(x, b, g)));
        let g = first + 3;
        odd = _mm512_dpbusd_epi32(odd, w[g], _mm512_set1_epi32(group(x, b, g)));
        _mm512_add_epi32(even, odd)
    }

    /// Shift each 32-bit lane left by `n` (right by `-n`), as [`shift`] on AVX2.
    #[inline(always)]
    unsafe fn shift512(v: __m512i, n: i32) -> __m512i {
        if n >= 0 {
            _mm512_sll_epi32(v, _mm_cvtsi32_si128(n))
        } else {
            _mm512_srl_epi32(v, _mm_cvtsi32_si128(-n))
        }
    }

    /// Every format on AVX-512 VNNI: the sixteen rows of a panel are the sixteen 32-bit
    /// lanes, and `vpdpbusd` sums four unsigned × signed byte products into each lane
    /// exactly, so no format needs AVX2's i16 partial sums.
    #[target_feature(enable = "avx512f,avx512vnni,avx512bw,avx2,fma,f16c")]
    pub unsafe fn vnni<const T: usize>(
        format: Format,
        p: Panel<'_>,
        xs: &[QRow<'_>; T],
        out: &mut [[f32; PANEL]; TOKENS],
    ) {
        match format {
            Format::Q4_1 | Format::Q8_0 => vnni_q4_1_q8_0::<T>(format, p, xs, out),
            Format::Q4_0 => vnni_nibbles::<T, Q4_0>(p, xs, out),
            Format::Q5_0 => vnni_nibbles::<T, Q5_0>(p, xs, out),
            Format::Q4K => vnni_nibbles::<T, Q4K>(p, xs, out),
            Format::Q5K => vnni_nibbles::<T, Q5K>(p, xs, out),
            Format::Q6K => vnni_nibbles::<T, Q6K>(p, xs, out),
        }
    }

    /// Q4_0, Q5_0, Q4_K, Q5_K and Q6_K on AVX-512 VNNI (`F` one of the format constants):
    /// the same unpacking as AVX2's [`nibbles`] on the whole panel, the integer dot of each
    /// block per lane, and the scalar reference's float steps in its order.
    #[inline(always)]
    unsafe fn vnni_nibbles<const T: usize, const F: u8>(
        p: Panel<'_>,
        xs: &[QRow<'_>; T],
        out: &mut [[f32; PANEL]; TOKENS],
    ) {
        let format = match F {
            Q4_0 => Format::Q4_0,
            Q5_0 => Format::Q5_0,
            Q4K => Format::Q4K,
            Q5K => Format::Q5K,
            _ => Format::Q6K,
        };
        let bytes = format.panel_block_bytes();
        let kquant = F == Q4K || F == Q5K;
        let five = F == Q5_0 || F == Q5K;
        let mask = _mm512_set1_epi8(0x0F);
        let mut acc = [_mm512_setzero_ps(); T];
        for b in 0..p.blocks {
            let q = p.qs.as_ptr().add(b * bytes);
            let unit = if F >= Q4K { b / SUPER } else { b };
            let d = scales(p.d.as_ptr().add(unit * PANEL));
            let high = q.add(4 * GROUP);
            let h0 = if five || F == Q6K {
                _mm512_loadu_si512(high as *const __m512i)
            } else {
                _mm512_setzero_si512()
            };
            let h1 = if F == Q6K {
                _mm512_loadu_si512(high.add(GROUP) as *const __m512i)
            } else {
                _mm512_setzero_si512()
            };
            // Chunk c holds group c in its low nibbles and group c + 4 in its high ones;
            // high bits are or-ed in from their planes as on AVX2.
            let mut w = [_mm512_setzero_si512(); 8];
            for c in 0..4 {
                let v = _mm512_loadu_si512(q.add(c * GROUP) as *const __m512i);
                let mut lo = _mm512_and_si512(v, mask);
                let mut hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), mask);
                if five {
                    let bit = _mm512_set1_epi8(0x10);
                    lo = _mm512_or_si512(lo, _mm512_and_si512(shift512(h0, 4 - c as i32), bit));
                    hi = _mm512_or_si512(hi, _mm512_and_si512(shift512(h0, -(c as i32)), bit));
                } else if F == Q6K {
                    let bits = _mm512_set1_epi8(0x30);
                    let n = 4 - 2 * c as i32;
                    lo = _mm512_or_si512(lo, _mm512_and_si512(shift512(h0, n), bits));
                    hi = _mm512_or_si512(hi, _mm512_and_si512(shift512(h1, n), bits));
                }
                w[c] = lo;
                w[c + 4] = hi;
            }
            if F == Q6K {
                // `[scA, scB]` as i8 per row → two sign-extended i32 lanes.
                let pairs = _mm512_cvtepi8_epi16(_mm256_loadu_si256(
                    p.sc.as_ptr().add(b * PANEL * 2) as *const __m256i,
                ));
                let sc_a = _mm512_srai_epi32(_mm512_slli_epi32(pairs, 16), 16);
                let sc_b = _mm512_srai_epi32(pairs, 16);
                for (acc, x) in acc.iter_mut().zip(xs) {
                    let [sa, sb] = x.half_sums(b);
                    let a = _mm512_sub_epi32(half_dot(&w, x, b, 0), _mm512_set1_epi32(sa << 5));
                    let bb = _mm512_sub_epi32(half_dot(&w, x, b, 4), _mm512_set1_epi32(sb << 5));
                    let dot =
                        _mm512_add_epi32(_mm512_mullo_epi32(a, sc_a), _mm512_mullo_epi32(bb, sc_b));
                    let scale = _mm512_mul_ps(d, _mm512_set1_ps(*x.d.get_unchecked(b)));
                    *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, *acc);
                }
                continue;
            }
            let (sc, mins) = if kquant {
                let sc = _mm_loadu_si128(p.sc.as_ptr().add(b * PANEL) as *const __m128i);
                let m = _mm_loadu_si128(p.mins.as_ptr().add(b * PANEL) as *const __m128i);
                let m = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(m));
                (
                    _mm512_cvtepu8_epi32(sc),
                    _mm512_mul_ps(scales(p.m.as_ptr().add(unit * PANEL)), m),
                )
            } else {
                (_mm512_setzero_si512(), _mm512_setzero_ps())
            };
            for (acc, x) in acc.iter_mut().zip(xs) {
                let sum = *x.sum.get_unchecked(b);
                let dot = block_dot(&w, x, b);
                let dot = match F {
                    Q4_0 => _mm512_sub_epi32(dot, _mm512_set1_epi32(sum << 3)),
                    Q5_0 => _mm512_sub_epi32(dot, _mm512_set1_epi32(sum << 4)),
                    _ => _mm512_mullo_epi32(dot, sc),
                };
                let scale = _mm512_mul_ps(d, _mm512_set1_ps(*x.d.get_unchecked(b)));
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, *acc);
                if kquant {
                    *acc = _mm512_fnmadd_ps(mins, _mm512_set1_ps(*x.s.get_unchecked(b)), *acc);
                }
            }
        }
        for (o, acc) in out.iter_mut().zip(acc) {
            _mm512_storeu_ps(o.as_mut_ptr(), acc);
        }
    }

    /// Q4_1 and Q8_0 on AVX-512 VNNI.
    #[inline(always)]
    unsafe fn vnni_q4_1_q8_0<const T: usize>(
        format: Format,
        p: Panel<'_>,
        xs: &[QRow<'_>; T],
        out: &mut [[f32; PANEL]; TOKENS],
    ) {
        let bytes = format.panel_block_bytes();
        let mask = _mm512_set1_epi8(0x0F);
        let mut acc = [_mm512_setzero_ps(); T];
        for b in 0..p.blocks {
            let q = p.qs.as_ptr().add(b * bytes);
            let d = scales(p.d.as_ptr().add(b * PANEL));
            if format == Format::Q4_1 {
                // Chunk c holds group c in its low nibbles and group c + 4 in its high ones.
                let mut w = [_mm512_setzero_si512(); 8];
                for c in 0..4 {
                    let v = _mm512_loadu_si512(q.add(c * GROUP) as *const __m512i);
                    w[c] = _mm512_and_si512(v, mask);
                    w[c + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), mask);
                }
                let m = scales(p.m.as_ptr().add(b * PANEL));
                for (acc, x) in acc.iter_mut().zip(xs) {
                    let dot = block_dot(&w, x, b);
                    let scale = _mm512_mul_ps(d, _mm512_set1_ps(*x.d.get_unchecked(b)));
                    *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, *acc);
                    *acc = _mm512_fmadd_ps(m, _mm512_set1_ps(*x.s.get_unchecked(b)), *acc);
                }
            } else {
                // Values are stored offset by 128 (unsigned, as `vpdpbusd` wants them), so
                // each dot product is 128·Σqx too large.
                let w: [__m512i; 8] =
                    std::array::from_fn(|g| _mm512_loadu_si512(q.add(g * GROUP) as *const __m512i));
                for (acc, x) in acc.iter_mut().zip(xs) {
                    let offset = _mm512_set1_epi32(*x.sum.get_unchecked(b) << 7);
                    let dot = _mm512_sub_epi32(block_dot(&w, x, b), offset);
                    let scale = _mm512_mul_ps(d, _mm512_set1_ps(*x.d.get_unchecked(b)));
                    *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, *acc);
                }
            }
        }
        for (o, acc) in out.iter_mut().zip(acc) {
            _mm512_storeu_ps(o.as_mut_ptr(), acc);
        }
    }

    /// Per 32-bit lane, Σ of its four unsigned × signed byte products (pairs summed to i16
    /// first: at most 2·255·127, so nothing saturates), each pair's i16 sum multiplied by
    /// the lane's i16 in `mul` (one, or a K-quant scale).
    #[inline(always)]
    unsafe fn dot_u8_i8(w: __m256i, a: __m256i, mul: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), mul)
    }

    /// Shift each 32-bit lane left by `n` (right by `-n`); `n` is a constant once the
    /// chunk loops are unrolled.
    #[inline(always)]
    unsafe fn shift(v: __m256i, n: i32) -> __m256i {
        if n >= 0 {
            _mm256_sll_epi32(v, _mm_cvtsi32_si128(n))
        } else {
            _mm256_srl_epi32(v, _mm_cvtsi32_si128(-n))
        }
    }

    /// Eight f16 scales of one half panel.
    #[inline(always)]
    unsafe fn half_scales(ptr: *const u16) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(ptr as *const __m128i))
    }

    /// Every format on AVX2, one half panel (eight rows, the low or high 32 bytes of every
    /// 64-byte group) at a time.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn avx2<const T: usize>(
        format: Format,
        p: Panel<'_>,
        xs: &[QRow<'_>; T],
        out: &mut [[f32; PANEL]; TOKENS],
    ) {
        match format {
            Format::Q8_0 => q8_0::<T>(p, xs, out),
            Format::Q4_0 => nibbles::<T, Q4_0>(p, xs, out),
            Format::Q4_1 => nibbles::<T, Q4_1>(p, xs, out),
            Format::Q5_0 => nibbles::<T, Q5_0>(p, xs, out),
            Format::Q4K => nibbles::<T, Q4K>(p, xs, out),
            Format::Q5K => nibbles::<T, Q5K>(p, xs, out),
            Format::Q6K => nibbles::<T, Q6K>(p, xs, out),
        }
    }

    /// Q8_0 on AVX2 with up to eight tokens (see [`tile_tokens`]).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn avx2_q8_0<const T: usize>(
        p: Panel<'_>,
        xs: &[QRow<'_>; T],
        out: &mut [[f32; PANEL]; TOKENS],
    ) {
        q8_0::<T>(p, xs, out)
    }

    const Q4_0: u8 = 0;
    const Q4_1: u8 = 1;
    const Q5_0: u8 = 2;
    const Q4K: u8 = 3;
    const Q5K: u8 = 4;
    const Q6K: u8 = 5;

    /// The formats built on 4-bit chunks (plus high bits), `F` one of the constants above.
    /// One token reads each panel block once for both half panels, so the weights stream
    /// through once, in order (one-token products are what decode runs: at one pass per
    /// half each block's cache lines were visited twice); more tokens take a half panel at a
    /// time, their sums needing the registers; the first of those passes asks for the
    /// weights ahead too (the second finds them in cache). That prefetch measured neutral
    /// within the noise for these formats and helped Q8_0 (see [`tile_tokens`]).
    #[inline(always)]
    unsafe fn nibbles<const T: usize, const F: u8>(
        p: Panel<'_>,
        xs: &[QRow<'_>; T],
        out: &mut [[f32; PANEL]; TOKENS],
    ) {
        if T == 1 {
            let mut acc = [[_mm256_setzero_ps(); T]; 2];
            let bytes = format_of::<F>().panel_block_bytes();
            for b in 0..p.blocks {
                prefetch_ahead(p, b, bytes);
                nibble_block::<T, F>(p, xs, b, 0, &mut acc[0]);
                nibble_block::<T, F>(p, xs, b, 1, &mut acc[1]);
            }
            for (half, acc) in acc.iter().enumerate() {
                for (o, acc) in out.iter_mut().zip(acc) {
                    _mm256_storeu_ps(o.as_mut_ptr().add(half * 8), *acc);
                }
            }
            return;
        }
        let bytes = format_of::<F>().panel_block_bytes();
        for half in 0..2 {
            let mut acc = [_mm256_setzero_ps(); T];
            for b in 0..p.blocks {
                if half == 0 {
                    prefetch_ahead(p, b, bytes);
                }
                nibble_block::<T, F>(p, xs, b, half, &mut acc);
            }
            for (o, acc) in out.iter_mut().zip(acc) {
                _mm256_storeu_ps(o.as_mut_ptr().add(half * 8), acc);
            }
        }
    }

    /// Blocks ahead of the one being read that a one-token product asks the cache for. The
    /// hardware prefetcher alone left one-token Q4_K products at 22-24 GB/s where the
    /// machine reads 33 (Zen 3, `cargo bench --bench kernels -- 1.5b`); asking four blocks
    /// (about 1 KiB) ahead gives 26-30. Two and eight measured alike within the noise.
    const AHEAD: usize = 4;

    /// Ask for panel block `b + AHEAD`'s weights (past the panel's end: the next panel's,
    /// which are next in memory; a prefetch never faults).
    #[inline(always)]
    unsafe fn prefetch_ahead(p: Panel<'_>, b: usize, bytes: usize) {
        let ahead = p.qs.as_ptr().wrapping_add((b + AHEAD) * bytes) as *const i8;
        for line in (0..bytes).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line));
        }
    }

    fn format_of<const F: u8>() -> Format {
        match F {
            Q4_0 => Format::Q4_0,
            Q4_1 => Format::Q4_1,
            Q5_0 => Format::Q5_0,
            Q4K => Format::Q4K,
            Q5K => Format::Q5K,
            _ => Format::Q6K,
        }
    }

    /// Block `b` of one half panel (eight rows) with every token, added to `acc`.
    #[inline(always)]
    unsafe fn nibble_block<const T: usize, const F: u8>(
        p: Panel<'_>,
        xs: &[QRow<'_>; T],
        b: usize,
        half: usize,
        acc: &mut [__m256; T],
    ) {
        let bytes = format_of::<F>().panel_block_bytes();
        let kquant = F == Q4K || F == Q5K;
        let mask = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        // Q6_K's scale pairs `[scA, scB]` as i16 per lane → each one in both i16 halves.
        #[rustfmt::skip]
        let pick_a = _mm256_setr_epi8(
            0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12, 13, 12, 13,
            0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12, 13, 12, 13,
        );
        let pick_b = _mm256_add_epi8(pick_a, _mm256_set1_epi8(2));
        let q = p.qs.as_ptr().add(b * bytes + half * 32);
        let unit = if F >= Q4K { b / SUPER } else { b };
        let at = unit * PANEL + half * 8;
        let d = half_scales(p.d.as_ptr().add(at));
        // Q6_K: `[scA, scB]` as two i16 in each row's lane.
        let pairs = if F == Q6K {
            let at = (b * PANEL + half * 8) * 2;
            _mm256_cvtepi8_epi16(_mm_loadu_si128(p.sc.as_ptr().add(at) as _))
        } else {
            _mm256_setzero_si256()
        };
        let (mul_lo, mul_hi) = if kquant {
            let sc = _mm_loadl_epi64(p.sc.as_ptr().add(b * PANEL + half * 8) as _);
            let sc = _mm256_cvtepu8_epi32(sc);
            let sc = _mm256_or_si256(sc, _mm256_slli_epi32(sc, 16));
            (sc, sc)
        } else if F == Q6K {
            (
                _mm256_shuffle_epi8(pairs, pick_a),
                _mm256_shuffle_epi8(pairs, pick_b),
            )
        } else {
            (ones, ones)
        };
        let high = q.add(4 * GROUP);
        let h0 = if F == Q5_0 || F == Q5K || F == Q6K {
            _mm256_loadu_si256(high as *const __m256i)
        } else {
            _mm256_setzero_si256()
        };
        let h1 = if F == Q6K {
            _mm256_loadu_si256(high.add(GROUP) as *const __m256i)
        } else {
            _mm256_setzero_si256()
        };
        let mut dot = [_mm256_setzero_si256(); T];
        // Byte-pair products are summed as i16 for as many chunks as cannot wrap
        // (activations lie in -127..=127, so a pair is at most 2·127·u_max), and
        // only then widened by `vpmaddwd` with the lane's multiplier: 4-bit values,
        // all eight products of a block (8·3810); 5-bit, four (4·7874); 6-bit, two
        // per half (2·16002). The integer sum is the same, with fewer instructions.
        let mut sum_lo = [_mm256_setzero_si256(); T];
        let mut sum_hi = [_mm256_setzero_si256(); T];
        for c in 0..4 {
            let v = _mm256_loadu_si256(q.add(c * GROUP) as *const __m256i);
            let mut lo = _mm256_and_si256(v, mask);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
            if F == Q5_0 || F == Q5K {
                let bit = _mm256_set1_epi8(0x10);
                lo = _mm256_or_si256(lo, _mm256_and_si256(shift(h0, 4 - c as i32), bit));
                hi = _mm256_or_si256(hi, _mm256_and_si256(shift(h0, -(c as i32)), bit));
            } else if F == Q6K {
                let bits = _mm256_set1_epi8(0x30);
                let n = 4 - 2 * c as i32;
                lo = _mm256_or_si256(lo, _mm256_and_si256(shift(h0, n), bits));
                hi = _mm256_or_si256(hi, _mm256_and_si256(shift(h1, n), bits));
            }
            for t in 0..T {
                let x = &xs[t];
                let a_lo = _mm256_set1_epi32(group(x, b, c));
                let a_hi = _mm256_set1_epi32(group(x, b, c + 4));
                let p_lo = _mm256_maddubs_epi16(lo, a_lo);
                let p_hi = _mm256_maddubs_epi16(hi, a_hi);
                if F == Q6K {
                    sum_lo[t] = _mm256_add_epi16(sum_lo[t], p_lo);
                    sum_hi[t] = _mm256_add_epi16(sum_hi[t], p_hi);
                } else {
                    sum_lo[t] = _mm256_add_epi16(sum_lo[t], _mm256_add_epi16(p_lo, p_hi));
                }
            }
            let flush = match F {
                Q4_0 | Q4_1 | Q4K => c == 3,
                _ => c % 2 == 1,
            };
            if flush {
                for t in 0..T {
                    dot[t] = _mm256_add_epi32(dot[t], _mm256_madd_epi16(sum_lo[t], mul_lo));
                    if F == Q6K {
                        let hi = _mm256_madd_epi16(sum_hi[t], mul_hi);
                        dot[t] = _mm256_add_epi32(dot[t], hi);
                    }
                    sum_lo[t] = _mm256_setzero_si256();
                    sum_hi[t] = _mm256_setzero_si256();
                }
            }
        }
        let mins = if kquant {
            let m = _mm_loadl_epi64(p.mins.as_ptr().add(b * PANEL + half * 8) as _);
            let m = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(m));
            _mm256_mul_ps(half_scales(p.m.as_ptr().add(at)), m)
        } else if F == Q4_1 {
            half_scales(p.m.as_ptr().add(at))
        } else {
            _mm256_setzero_ps()
        };
        for ((acc, dot), x) in acc.iter_mut().zip(dot).zip(xs) {
            let sum = *x.sum.get_unchecked(b);
            let dot = match F {
                Q4_0 => _mm256_sub_epi32(dot, _mm256_set1_epi32(sum << 3)),
                Q5_0 => _mm256_sub_epi32(dot, _mm256_set1_epi32(sum << 4)),
                Q6K => {
                    // scA·ΣAq + scB·ΣBq per lane, from the packed half sums.
                    let sums = _mm256_set1_epi32(*x.halves.get_unchecked(b));
                    let offset = _mm256_madd_epi16(pairs, sums);
                    _mm256_sub_epi32(dot, _mm256_slli_epi32(offset, 5))
                }
                _ => dot,
            };
            let scale = _mm256_mul_ps(d, _mm256_set1_ps(*x.d.get_unchecked(b)));
            *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, *acc);
            let sx = _mm256_set1_ps(*x.s.get_unchecked(b));
            if kquant {
                *acc = _mm256_fnmadd_ps(mins, sx, *acc);
            } else if F == Q4_1 {
                *acc = _mm256_fmadd_ps(mins, sx, *acc);
            }
        }
    }

    /// Q8_0, laid out and ordered as [`nibbles`] (one pass for one token).
    #[inline(always)]
    unsafe fn q8_0<const T: usize>(
        p: Panel<'_>,
        xs: &[QRow<'_>; T],
        out: &mut [[f32; PANEL]; TOKENS],
    ) {
        if T == 1 {
            let bytes = Format::Q8_0.panel_block_bytes();
            let mut acc = [[_mm256_setzero_ps(); T]; 2];
            for b in 0..p.blocks {
                prefetch_ahead(p, b, bytes);
                q8_0_block::<T>(p, xs, b, 0, &mut acc[0]);
                q8_0_block::<T>(p, xs, b, 1, &mut acc[1]);
            }
            for (half, acc) in acc.iter().enumerate() {
                for (o, acc) in out.iter_mut().zip(acc) {
                    _mm256_storeu_ps(o.as_mut_ptr().add(half * 8), *acc);
                }
            }
            return;
        }
        let bytes = Format::Q8_0.panel_block_bytes();
        for half in 0..2 {
            let mut acc = [_mm256_setzero_ps(); T];
            for b in 0..p.blocks {
                if half == 0 {
                    prefetch_ahead(p, b, bytes);
                }
                q8_0_block::<T>(p, xs, b, half, &mut acc);
            }
            for (o, acc) in out.iter_mut().zip(acc) {
                _mm256_storeu_ps(o.as_mut_ptr().add(half * 8), acc);
            }
        }
    }

    /// Q8_0 block `b` of one half panel with every token, added to `acc`.
    #[inline(always)]
    unsafe fn q8_0_block<const T: usize>(
        p: Panel<'_>,
        xs: &[QRow<'_>; T],
        b: usize,
        half: usize,
        acc: &mut [__m256; T],
    ) {
        let bytes = Format::Q8_0.panel_block_bytes();
        let flip = _mm256_set1_epi8(-128);
        let ones = _mm256_set1_epi16(1);
        let q = p.qs.as_ptr().add(b * bytes + half * 32);
        let mut dot = [_mm256_setzero_si256(); T];
        for g in 0..8 {
            // Back to signed values, then the weight's sign moves onto the activation so the
            // byte products take unsigned × signed (activations never hold -128, so negating
            // is exact).
            let w = _mm256_xor_si256(_mm256_loadu_si256(q.add(g * GROUP) as *const __m256i), flip);
            let w_abs = _mm256_sign_epi8(w, w);
            for (dot, x) in dot.iter_mut().zip(xs) {
                let a = _mm256_set1_epi32(group(x, b, g));
                let prod = dot_u8_i8(w_abs, _mm256_sign_epi8(a, w), ones);
                *dot = _mm256_add_epi32(*dot, prod);
            }
        }
        let d = half_scales(p.d.as_ptr().add(b * PANEL + half * 8));
        for ((acc, dot), x) in acc.iter_mut().zip(dot).zip(xs) {
            let scale = _mm256_mul_ps(d, _mm256_set1_ps(*x.d.get_unchecked(b)));
            *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, *acc);
        }
    }
}
