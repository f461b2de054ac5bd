//! Products of one weight panel (16 rows, see [`super::panel`]) with one to [`TOKENS`]
//! int8-quantized activation rows, for each instruction set: AVX-512 VNNI (`vpdpbusd`, one
//! row per 32-bit lane), AVX2 (`vpmaddubsw` + `vpmaddwd`, a panel as two halves), and portable
//! scalar code that is also the reference in tests.
//!
//! Per block, each row's integer dot product is exact on every path; it is then scaled and
//! accumulated in the same order with fused multiply-adds, so every path gives the scalar
//! reference's result to the bit:
//!   acc = fma(Σ q·qx, d·dx, acc);  Q4_1 then also  acc = fma(m, sx, acc)
//! where a Q4_1 weight is `d·q + m` and an activation block has scale `dx`, values `qx` and
//! `sx = dx·Σqx`.

use super::activation::{QRow, BLOCK};
use super::panel::{Panel, GROUP, PANEL};
use super::Format;

/// Activation rows per register tile: each panel block is loaded and unpacked once for up
/// to this many tokens.
pub const TOKENS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Avx512Vnni,
    Avx2,
    Scalar,
}

/// The best instruction set this CPU has, looked up once.
pub fn isa() -> Isa {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| {
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
        Isa::Scalar
    })
}

/// Whether `isa` can run on this CPU (tests try every path the machine has).
pub fn supported(isa: Isa) -> bool {
    match (isa, self::isa()) {
        (Isa::Scalar, _) => true,
        (Isa::Avx2, best) => best != Isa::Scalar,
        (Isa::Avx512Vnni, best) => best == Isa::Avx512Vnni,
    }
}

/// `out[t][r] = row r of the panel · xs[t]` for every token `t < xs.len()` (1..=TOKENS).
pub fn panel(
    isa: Isa,
    format: Format,
    p: Panel<'_>,
    xs: &[QRow<'_>],
    out: &mut [[f32; PANEL]; TOKENS],
) {
    debug_assert!((1..=TOKENS).contains(&xs.len()));
    debug_assert!(supported(isa));
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => {
            macro_rules! tokens {
                ($t:literal) => {{
                    let xs: &[QRow<'_>; $t] = xs.try_into().expect("token count");
                    // SAFETY: `supported(isa)`: the CPU has these features.
                    unsafe {
                        match format {
                            Format::Q4_1 => x86::q4_1_vnni::<$t>(p, xs, out),
                            Format::Q8_0 => x86::q8_0_vnni::<$t>(p, xs, out),
                        }
                    }
                }};
            }
            match xs.len() {
                1 => tokens!(1),
                2 => tokens!(2),
                3 => tokens!(3),
                _ => tokens!(4),
            }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            for (x, o) in xs.iter().zip(out.iter_mut()) {
                // SAFETY: `supported(isa)`: the CPU has these features.
                unsafe {
                    match format {
                        Format::Q4_1 => x86::q4_1_avx2(p, x, o),
                        Format::Q8_0 => x86::q8_0_avx2(p, x, o),
                    }
                }
            }
        }
        _ => {
            for (x, o) in xs.iter().zip(out.iter_mut()) {
                scalar(format, p, x, o);
            }
        }
    }
}

/// The reference: one row and one block at a time.
pub fn scalar(format: Format, p: Panel<'_>, x: &QRow<'_>, out: &mut [f32; PANEL]) {
    for (r, o) in out.iter_mut().enumerate() {
        let mut acc = 0f32;
        for b in 0..p.blocks {
            let dot: i32 = (0..BLOCK)
                .map(|j| p.weight(format, r, b, j) * x.qs[b][j] as i32)
                .sum();
            acc = (dot as f32).mul_add(p.d(r, b) * x.d[b], acc);
            if format == Format::Q4_1 {
                acc = p.m(r, b).mul_add(x.s[b], acc);
            }
        }
        *o = acc;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Panel, QRow, GROUP, PANEL, TOKENS};

    /// Bytes of one block of a panel's values: Q4_1 packs two values per byte.
    const Q4_1_BYTES: usize = PANEL * 16;
    const Q8_0_BYTES: usize = PANEL * 32;

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

    #[target_feature(enable = "avx512f,avx512vnni,avx512bw,avx2,fma,f16c")]
    pub unsafe fn q4_1_vnni<const T: usize>(
        p: Panel<'_>,
        xs: &[QRow<'_>; T],
        out: &mut [[f32; PANEL]; TOKENS],
    ) {
        let mask = _mm512_set1_epi8(0x0F);
        let mut acc = [_mm512_setzero_ps(); T];
        for b in 0..p.blocks {
            let q = p.qs.as_ptr().add(b * Q4_1_BYTES);
            // Chunk c holds group c in its low nibbles and group c + 4 in its high ones.
            let mut w = [_mm512_setzero_si512(); 8];
            for c in 0..4 {
                let v = _mm512_loadu_si512(q.add(c * GROUP) as *const __m512i);
                w[c] = _mm512_and_si512(v, mask);
                w[c + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), mask);
            }
            let d = scales(p.d.as_ptr().add(b * PANEL));
            let m = scales(p.m.as_ptr().add(b * PANEL));
            for (acc, x) in acc.iter_mut().zip(xs) {
                let dot = block_dot(&w, x, b);
                let scale = _mm512_mul_ps(d, _mm512_set1_ps(*x.d.get_unchecked(b)));
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, *acc);
                *acc = _mm512_fmadd_ps(m, _mm512_set1_ps(*x.s.get_unchecked(b)), *acc);
            }
        }
        for (o, acc) in out.iter_mut().zip(acc) {
            _mm512_storeu_ps(o.as_mut_ptr(), acc);
        }
    }

    #[target_feature(enable = "avx512f,avx512vnni,avx512bw,avx2,fma,f16c")]
    pub unsafe fn q8_0_vnni<const T: usize>(
        p: Panel<'_>,
        xs: &[QRow<'_>; T],
        out: &mut [[f32; PANEL]; TOKENS],
    ) {
        let mut acc = [_mm512_setzero_ps(); T];
        for b in 0..p.blocks {
            let q = p.qs.as_ptr().add(b * Q8_0_BYTES);
            // Values are stored offset by 128 (unsigned, as `vpdpbusd` wants them), so each
            // dot product is 128·Σqx too large.
            let w: [__m512i; 8] =
                std::array::from_fn(|g| _mm512_loadu_si512(q.add(g * GROUP) as *const __m512i));
            let d = scales(p.d.as_ptr().add(b * PANEL));
            for (acc, x) in acc.iter_mut().zip(xs) {
                let offset = _mm512_set1_epi32(*x.sum.get_unchecked(b) << 7);
                let dot = _mm512_sub_epi32(block_dot(&w, x, b), offset);
                let scale = _mm512_mul_ps(d, _mm512_set1_ps(*x.d.get_unchecked(b)));
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, *acc);
            }
        }
        for (o, acc) in out.iter_mut().zip(acc) {
            _mm512_storeu_ps(o.as_mut_ptr(), acc);
        }
    }

    /// Per 32-bit lane, Σ of its four unsigned × signed byte products (pairs summed to i16
    /// first: at most 2·255·127, so nothing saturates).
    #[inline(always)]
    unsafe fn dot_u8_i8(w: __m256i, a: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), _mm256_set1_epi16(1))
    }

    /// AVX2 takes a panel as two halves of eight rows (the low and high 32 bytes of every
    /// 64-byte group).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q4_1_avx2(p: Panel<'_>, x: &QRow<'_>, out: &mut [f32; PANEL]) {
        let mask = _mm256_set1_epi8(0x0F);
        for half in 0..2 {
            let mut acc = _mm256_setzero_ps();
            for b in 0..p.blocks {
                let q = p.qs.as_ptr().add(b * Q4_1_BYTES + half * 32);
                let mut dot = _mm256_setzero_si256();
                for c in 0..4 {
                    let v = _mm256_loadu_si256(q.add(c * GROUP) as *const __m256i);
                    let lo = _mm256_and_si256(v, mask);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
                    let a_lo = _mm256_set1_epi32(group(x, b, c));
                    let a_hi = _mm256_set1_epi32(group(x, b, c + 4));
                    dot = _mm256_add_epi32(dot, dot_u8_i8(lo, a_lo));
                    dot = _mm256_add_epi32(dot, dot_u8_i8(hi, a_hi));
                }
                let at = b * PANEL + half * 8;
                let d = _mm256_cvtph_ps(_mm_loadu_si128(p.d.as_ptr().add(at) as *const __m128i));
                let m = _mm256_cvtph_ps(_mm_loadu_si128(p.m.as_ptr().add(at) as *const __m128i));
                let scale = _mm256_mul_ps(d, _mm256_set1_ps(*x.d.get_unchecked(b)));
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc);
                acc = _mm256_fmadd_ps(m, _mm256_set1_ps(*x.s.get_unchecked(b)), acc);
            }
            _mm256_storeu_ps(out.as_mut_ptr().add(half * 8), acc);
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q8_0_avx2(p: Panel<'_>, x: &QRow<'_>, out: &mut [f32; PANEL]) {
        let flip = _mm256_set1_epi8(-128);
        for half in 0..2 {
            let mut acc = _mm256_setzero_ps();
            for b in 0..p.blocks {
                let q = p.qs.as_ptr().add(b * Q8_0_BYTES + half * 32);
                let mut dot = _mm256_setzero_si256();
                for g in 0..8 {
                    // Back to signed values, then the weight's sign moves onto the activation
                    // so the byte products take unsigned × signed (activations never hold
                    // -128, so negating is exact).
                    let w = _mm256_xor_si256(
                        _mm256_loadu_si256(q.add(g * GROUP) as *const __m256i),
                        flip,
                    );
                    let a = _mm256_set1_epi32(group(x, b, g));
                    let prod = dot_u8_i8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
                    dot = _mm256_add_epi32(dot, prod);
                }
                let at = b * PANEL + half * 8;
                let d = _mm256_cvtph_ps(_mm_loadu_si128(p.d.as_ptr().add(at) as *const __m128i));
                let scale = _mm256_mul_ps(d, _mm256_set1_ps(*x.d.get_unchecked(b)));
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc);
            }
            _mm256_storeu_ps(out.as_mut_ptr().add(half * 8), acc);
        }
    }
}
