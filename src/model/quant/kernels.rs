//! Dot products of quantized weight rows with one int8-quantized activation row, for each
//! instruction set: AVX-512 VNNI (`vpdpbusd` on 512-bit registers, two blocks at a time),
//! AVX2 (`vpmaddubsw` + `vpmaddwd`), and portable scalar code that also serves as the
//! reference in tests.
//!
//! Rows are taken in tiles of up to [`TILE`]: each activation block is loaded once for the
//! whole tile, and the tile's independent accumulators keep the core busy instead of waiting
//! on one long chain of dependent additions.
//!
//! Q4_1 block: `d`, `m`, 16 bytes holding 32 four-bit values (low nibbles are values 0..16,
//! high nibbles 16..32); a weight is `d * q + m`. Q8_0 block: `d` and 32 signed bytes.
//! Against an activation block (`dx`, `sx = dx * Σqx`, `qx`):
//!   Q4_1: `d * dx * Σ q*qx + m * sx`;  Q8_0: `d * dx * Σ q*qx`.

use super::activation::{QRow, BLOCK};
use super::Format;

/// Rows per tile.
pub const TILE: usize = 4;

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
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512vnni")
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

/// A tile of consecutive weight rows: `rows` (1..=TILE) rows of `blocks` blocks each, their
/// per-block scales `d`, offsets `m` (Q4_1 only) and packed values `qs`, row after row.
#[derive(Clone, Copy)]
pub struct Tile<'a> {
    pub rows: usize,
    pub blocks: usize,
    pub d: &'a [f32],
    pub m: &'a [f32],
    pub qs: &'a [u8],
}

/// Run the tile through the wrapper of `isa` (`$wrapper_vnni` / `$wrapper_avx2`, instantiated
/// for a full tile or a single row, with `$extra` const arguments), or `$scalar` elsewhere.
macro_rules! by_isa {
    ($isa:expr, $tile:expr, $x:expr, $out:expr,
     $wrapper_vnni:ident, $wrapper_avx2:ident, [$($extra:tt)*], $scalar:expr) => {{
        debug_assert!($tile.rows == TILE || $tile.rows == 1);
        match ($isa, $tile.rows) {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `isa()` returned this variant only after detecting the features.
            (Isa::Avx512Vnni, TILE) => unsafe { x86::$wrapper_vnni::<TILE $($extra)*>($tile, $x, $out) },
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx512Vnni, _) => unsafe { x86::$wrapper_vnni::<1 $($extra)*>($tile, $x, $out) },
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx2, TILE) => unsafe { x86::$wrapper_avx2::<TILE $($extra)*>($tile, $x, $out) },
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx2, _) => unsafe { x86::$wrapper_avx2::<1 $($extra)*>($tile, $x, $out) },
            _ => $scalar,
        }
    }};
}

/// `out[r] = row r of the Q4_1 tile · x` for r < tile.rows (a tile holds TILE rows or one).
pub fn q4_1(isa: Isa, tile: Tile<'_>, x: QRow<'_>, out: &mut [f32; TILE]) {
    debug_assert_eq!(tile.qs.len(), tile.rows * tile.blocks * 16);
    by_isa!(isa, tile, x, out, q4_1_vnni, q4_1_avx2, [, true], q4_1_scalar(tile, x, out))
}

/// As [`q4_1`], for a tile whose values were unpacked to one byte each by [`unpack_q4_1`]
/// (done once per tile when several tokens share a step, on CPUs with SIMD kernels).
pub fn q4_1_unpacked(isa: Isa, tile: Tile<'_>, x: QRow<'_>, out: &mut [f32; TILE]) {
    debug_assert_eq!(tile.qs.len(), tile.rows * tile.blocks * BLOCK);
    by_isa!(isa, tile, x, out, q4_1_vnni, q4_1_avx2, [, false], {
        // The scalar reference reads packed nibbles: repack (tests only; the matmul does not
        // unpack for scalar CPUs).
        let mut packed = vec![0u8; tile.rows * tile.blocks * 16];
        for (p, v) in packed.chunks_exact_mut(16).zip(tile.qs.chunks_exact(BLOCK)) {
            for j in 0..16 {
                p[j] = v[j] | (v[j + 16] << 4);
            }
        }
        q4_1_scalar(Tile { qs: &packed, ..tile }, x, out)
    })
}

/// Unpack a Q4_1 tile's nibbles to one byte per value, in activation order.
pub fn unpack_q4_1(qs: &[u8], out: &mut Vec<u8>) {
    out.resize(qs.len() * 2, 0);
    // Fixed-size chunks, so the compiler turns each block into a few vector instructions.
    for (block, values) in qs.chunks_exact(16).zip(out.chunks_exact_mut(BLOCK)) {
        let (lo, hi) = values.split_at_mut(16);
        for j in 0..16 {
            lo[j] = block[j] & 0x0F;
            hi[j] = block[j] >> 4;
        }
    }
}

/// A dot product of two f32 slices in eight independent lanes (vectorised by the compiler,
/// where a plain ordered sum would be one long dependency chain), summed in a fixed order.
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `out[r] = row r of the Q8_0 tile · x` for r < tile.rows (a tile holds TILE rows or one).
pub fn q8_0(isa: Isa, tile: Tile<'_>, x: QRow<'_>, out: &mut [f32; TILE]) {
    debug_assert_eq!(tile.qs.len(), tile.rows * tile.blocks * BLOCK);
    by_isa!(
        isa,
        tile,
        x,
        out,
        q8_0_vnni,
        q8_0_avx2,
        [],
        q8_0_scalar(tile, x, out)
    )
}

/// Tokens per token tile of [`token_tile`].
pub const TOKENS: usize = 4;

/// `out[t][r] = row r of the tile · xs[t]` for every token `t < xs.len()` (1..=[`TOKENS`])
/// and row `r < tile.rows`: a tile of rows against a tile of tokens, so each weight block is
/// loaded (and, for Q4_1, unpacked) once for several tokens and each activation block once
/// for several rows. On AVX-512 VNNI it is one register-tiled kernel; elsewhere token by
/// token. Every path gives the single-token kernels' results exactly.
pub fn token_tile(
    isa: Isa,
    format: Format,
    tile: Tile<'_>,
    xs: &[QRow<'_>],
    out: &mut [[f32; TILE]; TOKENS],
) {
    debug_assert!((1..=TOKENS).contains(&xs.len()));
    debug_assert!(tile.rows == TILE || tile.rows == 1);
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512Vnni {
        macro_rules! tokens {
            ($r:literal) => {
                match xs.len() {
                    // SAFETY: `isa()` returned this variant only after detecting the features.
                    1 => unsafe { x86::tokens_vnni::<$r, 1>(format, tile, xs, out) },
                    2 => unsafe { x86::tokens_vnni::<$r, 2>(format, tile, xs, out) },
                    3 => unsafe { x86::tokens_vnni::<$r, 3>(format, tile, xs, out) },
                    _ => unsafe { x86::tokens_vnni::<$r, TOKENS>(format, tile, xs, out) },
                }
            };
        }
        if tile.rows == TILE {
            tokens!(4)
        } else {
            tokens!(1)
        }
        return;
    }
    for (x, o) in xs.iter().zip(out.iter_mut()) {
        match format {
            Format::Q4_1 => q4_1(isa, tile, *x, o),
            Format::Q8_0 => q8_0(isa, tile, *x, o),
        }
    }
}

/// Q4_1 row by row, the reference for the SIMD paths.
pub fn q4_1_scalar(tile: Tile<'_>, x: QRow<'_>, out: &mut [f32; TILE]) {
    for (r, o) in out.iter_mut().enumerate().take(tile.rows) {
        let mut sum = 0f32;
        for b in 0..tile.blocks {
            let i = r * tile.blocks + b;
            let bytes = &tile.qs[i * 16..i * 16 + 16];
            let mut acc = 0i32;
            for (j, &byte) in bytes.iter().enumerate() {
                acc += (byte & 0x0F) as i32 * x.qs[b][j] as i32;
                acc += (byte >> 4) as i32 * x.qs[b][j + 16] as i32;
            }
            sum += tile.d[i] * x.d[b] * acc as f32 + tile.m[i] * x.s[b];
        }
        *o = sum;
    }
}

pub fn q8_0_scalar(tile: Tile<'_>, x: QRow<'_>, out: &mut [f32; TILE]) {
    for (r, o) in out.iter_mut().enumerate().take(tile.rows) {
        let mut sum = 0f32;
        for b in 0..tile.blocks {
            let i = r * tile.blocks + b;
            let acc: i32 = (0..BLOCK)
                .map(|j| tile.qs[i * BLOCK + j] as i8 as i32 * x.qs[b][j] as i32)
                .sum();
            sum += tile.d[i] * x.d[b] * acc as f32;
        }
        *o = sum;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Format, QRow, Tile, BLOCK, TILE, TOKENS};

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

    /// Σ over 32 unsigned × signed byte products, in eight 32-bit lanes (AVX2: pairs summed
    /// to i16, at most 2·255·127 for Q8_0's sign trick, then to i32).
    #[inline(always)]
    unsafe fn dot_u8_i8(w: __m256i, a: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), _mm256_set1_epi16(1))
    }

    // Each instruction set has its own wrapper around inlined bodies: the AVX-512 ones work
    // on two blocks per 512-bit register, the AVX2 ones on one block per 256-bit register and
    // hold no AVX-512 instruction, so they are safe on CPUs without it.
    #[target_feature(enable = "avx512f,avx512vnni,avx512vl,avx512bw,avx2,fma")]
    pub unsafe fn q4_1_vnni<const R: usize, const PACKED: bool>(
        t: Tile<'_>,
        x: QRow<'_>,
        o: &mut [f32; TILE],
    ) {
        q4_1_zmm::<R, PACKED>(t, x, o)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn q4_1_avx2<const R: usize, const PACKED: bool>(
        t: Tile<'_>,
        x: QRow<'_>,
        o: &mut [f32; TILE],
    ) {
        q4_1::<R, PACKED>(t, x, o)
    }

    #[target_feature(enable = "avx512f,avx512vnni,avx512vl,avx512bw,avx2,fma")]
    pub unsafe fn q8_0_vnni<const R: usize>(t: Tile<'_>, x: QRow<'_>, o: &mut [f32; TILE]) {
        q8_0_zmm::<R>(t, x, o)
    }

    /// Per-block scales `d[b] * xd[b]` of two neighbouring blocks, each spread over its
    /// block's eight lanes of a 512-bit register.
    #[inline(always)]
    unsafe fn pair_scale(d: *const f32, xd: *const f32) -> __m512 {
        let pair = _mm_mul_ps(
            _mm_castpd_ps(_mm_load_sd(d as *const f64)),
            _mm_castpd_ps(_mm_load_sd(xd as *const f64)),
        );
        let lanes = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
        _mm512_permutexvar_ps(lanes, _mm512_castps128_ps512(pair))
    }

    /// The 64 values of two neighbouring Q4_1 blocks (16 packed bytes each), in activation
    /// order: block b's low then high nibbles, then block b+1's.
    #[inline(always)]
    unsafe fn unpack_nibble_pair(ptr: *const u8) -> __m512i {
        let raw = _mm256_loadu_si256(ptr as *const __m256i);
        let mask = _mm256_set1_epi8(0x0F);
        let lo = _mm256_and_si256(raw, mask);
        let hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask);
        _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_permute2x128_si256(lo, hi, 0x20)),
            _mm256_permute2x128_si256(lo, hi, 0x31),
            1,
        )
    }

    /// Q4_1 on 512-bit registers: two blocks per multiply-add, one scale vector per pair.
    #[inline(always)]
    unsafe fn q4_1_zmm<const R: usize, const PACKED: bool>(
        tile: Tile<'_>,
        x: QRow<'_>,
        out: &mut [f32; TILE],
    ) {
        let nb = tile.blocks;
        let pairs = nb / 2;
        let mut acc = [_mm512_setzero_ps(); R];
        for p in 0..pairs {
            let b = 2 * p;
            let a = _mm512_loadu_si512(x.qs.get_unchecked(b).as_ptr() as *const __m512i);
            for (r, acc) in acc.iter_mut().enumerate() {
                let i = r * nb + b;
                let w = if PACKED {
                    unpack_nibble_pair(tile.qs.as_ptr().add(i * 16))
                } else {
                    _mm512_loadu_si512(tile.qs.as_ptr().add(i * BLOCK) as *const __m512i)
                };
                let prod = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, a);
                let scale = pair_scale(tile.d.as_ptr().add(i), x.d.as_ptr().add(b));
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(prod), scale, *acc);
            }
        }
        for (r, (o, acc)) in out.iter_mut().zip(acc).enumerate() {
            let mut sum = _mm512_reduce_add_ps(acc);
            // An odd last block, then the offset term Σ m·s.
            for b in 2 * pairs..nb {
                let i = r * nb + b;
                let w = if PACKED {
                    unpack_nibbles(tile.qs.as_ptr().add(i * 16))
                } else {
                    _mm256_loadu_si256(tile.qs.as_ptr().add(i * BLOCK) as *const __m256i)
                };
                let a = _mm256_loadu_si256(x.qs.get_unchecked(b).as_ptr() as *const __m256i);
                let prod = _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, a);
                sum += hsum(_mm256_cvtepi32_ps(prod)) * tile.d[i] * x.d[b];
            }
            let m = &tile.m[r * nb..(r + 1) * nb];
            *o = sum + super::dot_f32(m, x.s);
        }
    }

    /// Q8_0 on 512-bit registers, as [`q4_1_zmm`].
    #[inline(always)]
    unsafe fn q8_0_zmm<const R: usize>(tile: Tile<'_>, x: QRow<'_>, out: &mut [f32; TILE]) {
        let nb = tile.blocks;
        let pairs = nb / 2;
        let mut acc = [_mm512_setzero_ps(); R];
        for p in 0..pairs {
            let b = 2 * p;
            let a = _mm512_loadu_si512(x.qs.get_unchecked(b).as_ptr() as *const __m512i);
            for (r, acc) in acc.iter_mut().enumerate() {
                let i = r * nb + b;
                let w = _mm512_loadu_si512(tile.qs.as_ptr().add(i * BLOCK) as *const __m512i);
                // Unsigned × signed products: the weight's sign moves onto the activation.
                let neg = _mm512_movepi8_mask(w);
                let abs_w = _mm512_abs_epi8(w);
                let signed_a = _mm512_mask_sub_epi8(a, neg, _mm512_setzero_si512(), a);
                let prod = _mm512_dpbusd_epi32(_mm512_setzero_si512(), abs_w, signed_a);
                let scale = pair_scale(tile.d.as_ptr().add(i), x.d.as_ptr().add(b));
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(prod), scale, *acc);
            }
        }
        for (r, (o, acc)) in out.iter_mut().zip(acc).enumerate() {
            let mut sum = _mm512_reduce_add_ps(acc);
            for b in 2 * pairs..nb {
                let i = r * nb + b;
                let w = _mm256_loadu_si256(tile.qs.as_ptr().add(i * BLOCK) as *const __m256i);
                let a = _mm256_loadu_si256(x.qs.get_unchecked(b).as_ptr() as *const __m256i);
                let prod = _mm256_dpbusd_epi32(
                    _mm256_setzero_si256(),
                    _mm256_sign_epi8(w, w),
                    _mm256_sign_epi8(a, w),
                );
                sum += hsum(_mm256_cvtepi32_ps(prod)) * tile.d[i] * x.d[b];
            }
            *o = sum;
        }
    }

    #[target_feature(enable = "avx512f,avx512vnni,avx512vl,avx512bw,avx2,fma")]
    pub unsafe fn tokens_vnni<const R: usize, const T: usize>(
        format: Format,
        t: Tile<'_>,
        xs: &[QRow<'_>],
        o: &mut [[f32; TILE]; TOKENS],
    ) {
        let xs: &[QRow<'_>; T] = xs.try_into().expect("T tokens");
        match format {
            Format::Q4_1 => tokens_zmm::<R, T, true>(t, xs, o),
            Format::Q8_0 => tokens_zmm::<R, T, false>(t, xs, o),
        }
    }

    /// The eight lanes of each of two neighbouring blocks: lane `l` reads element `l / 8`.
    #[inline(always)]
    unsafe fn spread_pair(ptr: *const f32) -> __m512 {
        let lanes = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
        let pair = _mm_castpd_ps(_mm_load_sd(ptr as *const f64));
        _mm512_permutexvar_ps(lanes, _mm512_castps128_ps512(pair))
    }

    /// R rows × T tokens on 512-bit registers (two blocks per register), for Q4_1
    /// (`Q4 = true`: nibbles unpacked in registers, once per row for all T tokens) or Q8_0.
    /// The per-block scale products and the order of every addition are those of
    /// [`q4_1_zmm`] and [`q8_0_zmm`], so the results are the same to the bit.
    #[inline(always)]
    unsafe fn tokens_zmm<const R: usize, const T: usize, const Q4: bool>(
        tile: Tile<'_>,
        xs: &[QRow<'_>; T],
        out: &mut [[f32; TILE]; TOKENS],
    ) {
        let nb = tile.blocks;
        let pairs = nb / 2;
        let zero = _mm512_setzero_si512();
        let mut acc = [[_mm512_setzero_ps(); T]; R];
        for p in 0..pairs {
            let b = 2 * p;
            let mut a = [zero; T];
            let mut xd = [_mm512_setzero_ps(); T];
            for t in 0..T {
                a[t] = _mm512_loadu_si512(xs[t].qs.get_unchecked(b).as_ptr() as *const __m512i);
                xd[t] = spread_pair(xs[t].d.as_ptr().add(b));
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let i = r * nb + b;
                let wd = spread_pair(tile.d.as_ptr().add(i));
                if Q4 {
                    let w = unpack_nibble_pair(tile.qs.as_ptr().add(i * 16));
                    for t in 0..T {
                        let prod = _mm512_dpbusd_epi32(zero, w, a[t]);
                        let scale = _mm512_mul_ps(wd, xd[t]);
                        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(prod), scale, acc[t]);
                    }
                } else {
                    let w = _mm512_loadu_si512(tile.qs.as_ptr().add(i * BLOCK) as *const __m512i);
                    // Unsigned × signed products: the weight's sign moves onto the activation.
                    let neg = _mm512_movepi8_mask(w);
                    let abs_w = _mm512_abs_epi8(w);
                    for t in 0..T {
                        let signed_a = _mm512_mask_sub_epi8(a[t], neg, zero, a[t]);
                        let prod = _mm512_dpbusd_epi32(zero, abs_w, signed_a);
                        let scale = _mm512_mul_ps(wd, xd[t]);
                        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(prod), scale, acc[t]);
                    }
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (t, x) in xs.iter().enumerate() {
                let mut sum = _mm512_reduce_add_ps(acc[t]);
                // An odd last block, then (Q4_1) the offset term Σ m·s.
                for b in 2 * pairs..nb {
                    let i = r * nb + b;
                    let a = _mm256_loadu_si256(x.qs.get_unchecked(b).as_ptr() as *const __m256i);
                    let prod = if Q4 {
                        let w = unpack_nibbles(tile.qs.as_ptr().add(i * 16));
                        _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, a)
                    } else {
                        let w =
                            _mm256_loadu_si256(tile.qs.as_ptr().add(i * BLOCK) as *const __m256i);
                        _mm256_dpbusd_epi32(
                            _mm256_setzero_si256(),
                            _mm256_sign_epi8(w, w),
                            _mm256_sign_epi8(a, w),
                        )
                    };
                    sum += hsum(_mm256_cvtepi32_ps(prod)) * tile.d[i] * x.d[b];
                }
                if Q4 {
                    sum += super::dot_f32(&tile.m[r * nb..(r + 1) * nb], x.s);
                }
                out[t][r] = sum;
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn q8_0_avx2<const R: usize>(t: Tile<'_>, x: QRow<'_>, o: &mut [f32; TILE]) {
        q8_0::<R>(t, x, o)
    }

    #[inline(always)]
    unsafe fn q4_1<const R: usize, const PACKED: bool>(
        tile: Tile<'_>,
        x: QRow<'_>,
        out: &mut [f32; TILE],
    ) {
        let nb = tile.blocks;
        let mut acc = [_mm256_setzero_ps(); R];
        for b in 0..nb {
            let a = _mm256_loadu_si256(x.qs.get_unchecked(b).as_ptr() as *const __m256i);
            let xd = *x.d.get_unchecked(b);
            for (r, acc) in acc.iter_mut().enumerate() {
                let i = r * nb + b;
                let w = if PACKED {
                    unpack_nibbles(tile.qs.as_ptr().add(i * 16))
                } else {
                    _mm256_loadu_si256(tile.qs.as_ptr().add(i * BLOCK) as *const __m256i)
                };
                let p = dot_u8_i8(w, a);
                let scale = _mm256_set1_ps(*tile.d.get_unchecked(i) * xd);
                *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), scale, *acc);
            }
        }
        // The offset term Σ m·s, eight blocks at a time into the same accumulators.
        let whole = nb / 8 * 8;
        for (r, (o, mut acc)) in out.iter_mut().zip(acc).enumerate() {
            let m = tile.m.as_ptr().add(r * nb);
            for b in (0..whole).step_by(8) {
                let mv = _mm256_loadu_ps(m.add(b));
                acc = _mm256_fmadd_ps(mv, _mm256_loadu_ps(x.s.as_ptr().add(b)), acc);
            }
            let mut tail = 0f32;
            for b in whole..nb {
                tail += *m.add(b) * *x.s.get_unchecked(b);
            }
            *o = hsum(acc) + tail;
        }
    }

    #[inline(always)]
    unsafe fn q8_0<const R: usize>(tile: Tile<'_>, x: QRow<'_>, out: &mut [f32; TILE]) {
        let nb = tile.blocks;
        let mut acc = [_mm256_setzero_ps(); R];
        for b in 0..nb {
            let a = _mm256_loadu_si256(x.qs.get_unchecked(b).as_ptr() as *const __m256i);
            let xd = *x.d.get_unchecked(b);
            for (r, acc) in acc.iter_mut().enumerate() {
                let i = r * nb + b;
                let w = _mm256_loadu_si256(tile.qs.as_ptr().add(i * BLOCK) as *const __m256i);
                // The byte products take unsigned × signed: move the weight's sign onto the
                // activation (activations never hold -128, so negating is exact).
                let p = dot_u8_i8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
                let scale = _mm256_set1_ps(*tile.d.get_unchecked(i) * xd);
                *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), scale, *acc);
            }
        }
        for (o, acc) in out.iter_mut().zip(acc) {
            *o = hsum(acc);
        }
    }
}
