//! The kernels on synthetic GGUF data (random bytes with sane scales), with no other crate,
//! so the same tests run on every architecture (scripts/kernels-aarch64.sh runs them under
//! qemu-user): every instruction set against the scalar reference to the bit, the reference
//! against the exact product within int8 rounding, and batch invariance.

use half::f16;

use crate::activation::{QRow, QRows, BLOCK};
use crate::kernels::{self, Isa, TOKENS};
use crate::panel::PANEL;
use crate::{matmul_many, Format, QMatrix};

const FORMATS: [Format; 7] = [
    Format::Q4_0,
    Format::Q4_1,
    Format::Q5_0,
    Format::Q8_0,
    Format::Q4K,
    Format::Q5K,
    Format::Q6K,
];

/// Every SIMD path there is; `supported` says which this CPU runs.
const SIMD: [Isa; 4] = [Isa::Avx512Vnni, Isa::Avx2, Isa::Neon, Isa::NeonDot];

/// xorshift64*: deterministic bytes without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn byte(&mut self) -> u8 {
        (self.next() >> 56) as u8
    }
    /// Uniform in [lo, hi).
    fn float(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
}

/// `rows` rows of `k` values of GGUF blocks: random value bytes (every byte 0xFF with
/// `saturate`, the largest stored values), f16 scales between 0.001 and 0.05.
fn gguf(format: Format, rows: usize, k: usize, rng: &mut Rng, saturate: bool) -> Vec<u8> {
    let (values, bytes) = format.gguf_block();
    let mut raw: Vec<u8> = (0..rows * k / values * bytes)
        .map(|_| if saturate { 0xFF } else { rng.byte() })
        .collect();
    // Where the f16 scales sit in a block.
    let scales: &[usize] = match format {
        Format::Q4_0 | Format::Q5_0 | Format::Q8_0 => &[0],
        Format::Q4_1 | Format::Q4K | Format::Q5K => &[0, 2],
        Format::Q6K => &[208],
    };
    for block in raw.chunks_exact_mut(bytes) {
        for &at in scales {
            let d = f16::from_f32(rng.float(0.001, 0.05))
                .to_bits()
                .to_le_bytes();
            block[at..at + 2].copy_from_slice(&d);
        }
    }
    raw
}

/// Activations with a spread of magnitudes between blocks (all 127 or all -127 per token
/// with `saturate`).
fn activations(tokens: usize, k: usize, rng: &mut Rng, saturate: bool) -> Vec<f32> {
    (0..tokens * k)
        .map(|i| {
            if saturate {
                // Every product at its largest, positive for even tokens, negative for odd.
                if (i / k).is_multiple_of(2) {
                    1.0
                } else {
                    -1.0
                }
            } else {
                rng.float(-1.0, 1.0) * (1 + (i / BLOCK) % 5) as f32
            }
        })
        .collect()
}

/// Shapes with a partial last panel and an odd number of (super-)blocks.
fn shapes(format: Format) -> [(usize, usize); 2] {
    let values = format.gguf_block().0;
    [(40, 3 * values), (16, values.max(128))]
}

#[test]
fn every_instruction_set_matches_the_reference_to_the_bit() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut checked = Vec::new();
    for format in FORMATS {
        for (rows, k) in shapes(format) {
            for saturate in [false, true] {
                let m =
                    QMatrix::repack(format, rows, k, &gguf(format, rows, k, &mut rng, saturate))
                        .unwrap();
                let x = QRows::quantize(&activations(TOKENS, k, &mut rng, saturate), k);
                let xs: Vec<QRow<'_>> = (0..TOKENS).map(|t| x.row(t)).collect();
                for p in 0..m.panels().panels() {
                    let panel = m.panels().panel(p);
                    let mut want = [[0f32; PANEL]; TOKENS];
                    for (x, o) in xs.iter().zip(want.iter_mut()) {
                        kernels::scalar(format, panel, x, o);
                    }
                    for isa in SIMD.into_iter().filter(|&i| kernels::supported(i)) {
                        for tokens in 1..=TOKENS {
                            let mut got = [[0f32; PANEL]; TOKENS];
                            kernels::panel(isa, format, panel, &xs[..tokens], &mut got);
                            assert_eq!(
                                got[..tokens],
                                want[..tokens],
                                "{format:?} {isa:?} {tokens} tokens, panel {p}, saturate {saturate}"
                            );
                        }
                        if !checked.contains(&isa) {
                            checked.push(isa);
                        }
                    }
                }
            }
        }
    }
    eprintln!("instruction sets checked against the scalar reference: {checked:?}");
    // scripts/kernels-aarch64.sh says which paths each emulated CPU must have run.
    if let Ok(expected) = std::env::var("WICK_QUANT_EXPECT_ISAS") {
        assert_eq!(format!("{checked:?}"), expected, "paths checked");
    }
    // Every x86-64 and aarch64 machine wick runs on has a SIMD path: the test must have
    // checked one.
    if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        assert!(!checked.is_empty(), "no SIMD path was checked");
    }
}

#[test]
fn the_reference_is_the_exact_product_within_int8_rounding() {
    let mut rng = Rng(42);
    for format in FORMATS {
        for (rows, k) in shapes(format) {
            let m =
                QMatrix::repack(format, rows, k, &gguf(format, rows, k, &mut rng, false)).unwrap();
            let tokens = 3;
            let x = activations(tokens, k, &mut rng, false);
            let q = QRows::quantize(&x, k);
            let mut y = vec![0f32; tokens * rows];
            m.matmul_quantized(&q, &mut y);
            let mut w = vec![0f32; k];
            for r in 0..rows {
                m.dequantize_row(r, &mut w);
                for t in 0..tokens {
                    let xt = &x[t * k..(t + 1) * k];
                    let exact: f64 = w.iter().zip(xt).map(|(&a, &b)| a as f64 * b as f64).sum();
                    let size: f64 = w.iter().zip(xt).map(|(&a, &b)| (a * b).abs() as f64).sum();
                    // Each activation is off by at most half its block's step (plus the f16
                    // rounding of the step): Σ|w|·0.6·step bounds the whole sum.
                    let bound: f64 = w
                        .iter()
                        .enumerate()
                        .map(|(j, &a)| a.abs() as f64 * 0.6 * q.d[t * q.blocks + j / BLOCK] as f64)
                        .sum::<f64>()
                        + 1e-5 * size;
                    let got = y[t * rows + r] as f64;
                    assert!(
                        (got - exact).abs() <= bound,
                        "{format:?} row {r} token {t}: {got} vs {exact} (bound {bound})"
                    );
                }
            }
        }
    }
}

#[test]
fn a_token_s_output_does_not_depend_on_its_batch() {
    let mut rng = Rng(7);
    let tokens = TOKENS + 3;
    for format in FORMATS {
        let (rows, k) = shapes(format)[0];
        let matrices: Vec<QMatrix> = (0..2)
            .map(|_| {
                QMatrix::repack(format, rows, k, &gguf(format, rows, k, &mut rng, false)).unwrap()
            })
            .collect();
        let refs: Vec<&QMatrix> = matrices.iter().collect();
        let x = activations(tokens, k, &mut rng, false);
        let mut batched = vec![vec![0f32; tokens * rows]; 2];
        {
            let mut views: Vec<&mut [f32]> = batched.iter_mut().map(|v| &mut v[..]).collect();
            matmul_many(&refs, &QRows::quantize(&x, k), &mut views);
        }
        for t in 0..tokens {
            let alone = QRows::quantize(&x[t * k..(t + 1) * k], k);
            for (m, all) in matrices.iter().zip(&batched) {
                let mut y = vec![0f32; rows];
                m.matmul_quantized(&alone, &mut y);
                assert_eq!(y[..], all[t * rows..(t + 1) * rows], "{format:?} token {t}");
            }
        }
    }
}
