//! Dot products of one quantized weight row with one int8-quantized activation row, for each
//! instruction set: AVX-512 VNNI (`vpdpbusd` on 256-bit lanes), AVX2 (`vpmaddubsw` +
//! `vpmaddwd`), and portable scalar code that also serves as the reference in tests.
//!
//! Q4_1 block: `d`, `m`, 16 bytes holding 32 four-bit values (low nibbles are values 0..16,
//! high nibbles 16..32); a weight is `d * q + m`. Q8_0 block: `d` and 32 signed bytes.
//! Against an activation block (`dx`, `sx = dx * Σqx`, `qx`):
//!   Q4_1: `d * dx * Σ q*qx + m * sx`;  Q8_0: `d * dx * Σ q*qx`.

use super::activation::{QBlock, BLOCK};

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
            if is_x86_feature_detected!("avx512vnni")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("fma")
            {
                return Isa::Avx512Vnni;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    })
}

/// One Q4_1 weight row (`d`, `m` per block, 16 bytes of nibbles per block) · activations.
pub fn dot_q4_1(isa: Isa, d: &[f32], m: &[f32], qs: &[u8], x: &[QBlock]) -> f32 {
    debug_assert!(d.len() == x.len() && m.len() == x.len() && qs.len() == x.len() * 16);
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa()` returned this variant only after detecting the features.
        Isa::Avx512Vnni => unsafe { x86::dot_q4_1_vnni(d, m, qs, x) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::dot_q4_1_avx2(d, m, qs, x) },
        _ => dot_q4_1_scalar(d, m, qs, x),
    }
}

/// One Q8_0 weight row (`d` per block, 32 signed bytes per block) · activations.
pub fn dot_q8_0(isa: Isa, d: &[f32], qs: &[u8], x: &[QBlock]) -> f32 {
    debug_assert!(d.len() == x.len() && qs.len() == x.len() * BLOCK);
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa()` returned this variant only after detecting the features.
        Isa::Avx512Vnni => unsafe { x86::dot_q8_0_vnni(d, qs, x) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::dot_q8_0_avx2(d, qs, x) },
        _ => dot_q8_0_scalar(d, qs, x),
    }
}

pub fn dot_q4_1_scalar(d: &[f32], m: &[f32], qs: &[u8], x: &[QBlock]) -> f32 {
    let mut sum = 0f32;
    for (b, xb) in x.iter().enumerate() {
        let bytes = &qs[b * 16..b * 16 + 16];
        let mut acc = 0i32;
        for (j, &byte) in bytes.iter().enumerate() {
            acc += (byte & 0x0F) as i32 * xb.qs[j] as i32;
            acc += (byte >> 4) as i32 * xb.qs[j + 16] as i32;
        }
        sum += d[b] * xb.d * acc as f32 + m[b] * xb.s;
    }
    sum
}

pub fn dot_q8_0_scalar(d: &[f32], qs: &[u8], x: &[QBlock]) -> f32 {
    let mut sum = 0f32;
    for (b, xb) in x.iter().enumerate() {
        let acc: i32 = (0..BLOCK)
            .map(|j| qs[b * BLOCK + j] as i8 as i32 * xb.qs[j] as i32)
            .sum();
        sum += d[b] * xb.d * acc as f32;
    }
    sum
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{QBlock, BLOCK};

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// The 32 nibbles of a Q4_1 block as 32 bytes, in activation order.
    #[inline(always)]
    unsafe fn unpack_nibbles(ptr: *const u8) -> __m256i {
        let raw = _mm_loadu_si128(ptr as *const __m128i);
        let mask = _mm_set1_epi8(0x0F);
        let lo = _mm_and_si128(raw, mask);
        let hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
        _mm256_set_m128i(hi, lo)
    }

    #[target_feature(enable = "avx512vnni,avx512vl,avx512bw,avx2,fma")]
    pub unsafe fn dot_q4_1_vnni(d: &[f32], m: &[f32], qs: &[u8], x: &[QBlock]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let mut offset = 0f32;
        for (b, xb) in x.iter().enumerate() {
            let w = unpack_nibbles(qs.as_ptr().add(b * 16));
            let a = _mm256_loadu_si256(xb.qs.as_ptr() as *const __m256i);
            let p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, a);
            let scale = _mm256_set1_ps(*d.get_unchecked(b) * xb.d);
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), scale, acc);
            offset += *m.get_unchecked(b) * xb.s;
        }
        hsum(acc) + offset
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q4_1_avx2(d: &[f32], m: &[f32], qs: &[u8], x: &[QBlock]) -> f32 {
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_ps();
        let mut offset = 0f32;
        for (b, xb) in x.iter().enumerate() {
            let w = unpack_nibbles(qs.as_ptr().add(b * 16));
            let a = _mm256_loadu_si256(xb.qs.as_ptr() as *const __m256i);
            // u8 × i8 pairs summed to i16 (at most 2·15·127, no saturation), then to i32.
            let p = _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), ones);
            let scale = _mm256_set1_ps(*d.get_unchecked(b) * xb.d);
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), scale, acc);
            offset += *m.get_unchecked(b) * xb.s;
        }
        hsum(acc) + offset
    }

    #[target_feature(enable = "avx512vnni,avx512vl,avx512bw,avx2,fma")]
    pub unsafe fn dot_q8_0_vnni(d: &[f32], qs: &[u8], x: &[QBlock]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for (b, xb) in x.iter().enumerate() {
            let w = _mm256_loadu_si256(qs.as_ptr().add(b * BLOCK) as *const __m256i);
            let a = _mm256_loadu_si256(xb.qs.as_ptr() as *const __m256i);
            // vpdpbusd multiplies unsigned by signed: move the weight's sign onto the
            // activation (activations never hold -128, so negating is exact).
            let p = _mm256_dpbusd_epi32(
                _mm256_setzero_si256(),
                _mm256_sign_epi8(w, w),
                _mm256_sign_epi8(a, w),
            );
            let scale = _mm256_set1_ps(*d.get_unchecked(b) * xb.d);
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), scale, acc);
        }
        hsum(acc)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q8_0_avx2(d: &[f32], qs: &[u8], x: &[QBlock]) -> f32 {
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_ps();
        for (b, xb) in x.iter().enumerate() {
            let w = _mm256_loadu_si256(qs.as_ptr().add(b * BLOCK) as *const __m256i);
            let a = _mm256_loadu_si256(xb.qs.as_ptr() as *const __m256i);
            let p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
            let p = _mm256_madd_epi16(p16, ones);
            let scale = _mm256_set1_ps(*d.get_unchecked(b) * xb.d);
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), scale, acc);
        }
        hsum(acc)
    }
}
