//! One token per row of logits, each row with its own temperature, top-k, min-p and top-p,
//! from a uniform number in [0, 1) the host supplies: kernel `sample_f32` of
//! `kernels/sampling.cu`. The host draws that number from the request's seeded generator,
//! as the CPU sampler draws its own, so a seed gives the same tokens run after run.
//!
//! [`sample_row`] is the reference and the definition, and the CPU sampler
//! ([`crate::engine`]'s) draws with the same arithmetic: for the same draw both pick the same
//! token, whatever the cuts. Weights are summed as 64-bit fixed point (`w * 2^40`), exactly,
//! so the kernel's sums do not depend on thread order; a weight below 2^-40 of the top
//! token's counts as 0. Every cut ranks tokens most likely first, then lower index; the draw
//! walks a top-p set in that order and any other set in index order. On a GPU only the
//! exponentials' last bits can differ from the CPU's, which moves a pick only where the draw
//! falls within about 1e-7 of a boundary between two tokens.

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::operands::cpu_contiguous;

/// One row's settings and draw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowSampling {
    /// 0 (or less): greedy.
    pub temperature: f32,
    /// 0 or >= vocabulary: no cut; 1: greedy.
    pub top_k: u32,
    /// 1 (or more): no cut.
    pub top_p: f32,
    /// 0: no cut.
    pub min_p: f32,
    /// In [0, 1).
    pub uniform: f32,
}

/// One token per row of `logits` (`[rows, vocab]` f32, contiguous), on the logits' device.
pub fn sample_rows(logits: &Tensor, rows: &[RowSampling]) -> Result<Vec<u32>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let device = logits.device();
    let params: Vec<f32> = rows
        .iter()
        .flat_map(|r| [r.temperature, r.top_p, r.min_p, r.uniform])
        .collect();
    let params = Tensor::from_vec(params, (rows.len(), 4), device)?;
    let top_k: Vec<u32> = rows.iter().map(|r| r.top_k).collect();
    let top_k = Tensor::from_vec(top_k, rows.len(), device)?;
    logits
        .apply_op3_no_bwd(&params, &top_k, &Sample)?
        .to_vec1::<u32>()
}

/// The reference: the token of one row.
pub fn sample_row(logits: &[f32], row: &RowSampling) -> u32 {
    let best = argmax(logits);
    if row.temperature <= 0.0 || row.top_k == 1 {
        return best;
    }
    let candidates = candidates(logits, row);
    let total: u64 = candidates.iter().map(|c| c.1).sum();
    let target = weight_target(row.uniform, total);
    let mut running = 0;
    for &(token, weight) in &candidates {
        running += weight;
        if running >= target {
            return token;
        }
    }
    best
}

/// The tokens a non-greedy row can draw, in the order the draw walks them, with their
/// fixed-point weights (none zero).
pub fn candidates(logits: &[f32], row: &RowSampling) -> Vec<(u32, u64)> {
    let inv_t = 1.0 / row.temperature;
    let scaled: Vec<f32> = logits.iter().map(|&l| l * inv_t).collect();
    let max = logits[argmax(logits) as usize] * inv_t;
    // "Most likely first, then lower index": the order of every cut.
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| {
        let key = |i: u32| order_key(scaled[i as usize]);
        key(b).cmp(&key(a)).then(a.cmp(&b))
    });
    let mut weight = vec![0u64; logits.len()];
    let k = row.top_k as usize;
    let kept = if k > 0 && k < order.len() {
        k
    } else {
        order.len()
    };
    for &i in &order[..kept] {
        let w = (scaled[i as usize] - max).exp();
        if w >= row.min_p {
            weight[i as usize] = fixed_weight(w);
        }
    }
    if row.top_p < 1.0 {
        let total: u64 = weight.iter().sum();
        let target = weight_target(row.top_p, total);
        let mut running = 0;
        for &i in &order {
            if running >= target {
                weight[i as usize] = 0;
            }
            running += weight[i as usize];
        }
        order
            .iter()
            .filter(|&&i| weight[i as usize] > 0)
            .map(|&i| (i, weight[i as usize]))
            .collect()
    } else {
        (0..logits.len() as u32)
            .filter(|&i| weight[i as usize] > 0)
            .map(|i| (i, weight[i as usize]))
            .collect()
    }
}

/// The first index of the largest logit: greedy's pick, on every path.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// An unsigned key with the order of the floats (negatives reversed), as the kernel's.
fn order_key(f: f32) -> u32 {
    let u = f.to_bits();
    if u & 0x8000_0000 != 0 {
        !u
    } else {
        u | 0x8000_0000
    }
}

/// A weight in [0, 1] as 64-bit fixed point with 40 fractional bits, truncated.
pub fn fixed_weight(w: f32) -> u64 {
    (w * (1u64 << 40) as f32) as u64
}

/// The smallest whole weight that reaches `fraction` of `total`: at least 1 (so the walk
/// stops at a token that has weight), at most `total`.
pub fn weight_target(fraction: f32, total: u64) -> u64 {
    let t = (fraction as f64 * total as f64).ceil();
    let whole = if t < 1.0 { 1 } else { t as u64 };
    whole.min(total)
}

/// The op: `(logits [rows, vocab] f32, params [rows, 4] f32 of (temperature, top_p, min_p,
/// uniform), top_k [rows] u32)` → `[rows]` u32.
pub struct Sample;

impl Sample {
    fn plan(logits: &Layout, params: &Layout, top_k: &Layout) -> Result<(usize, usize)> {
        let (rows, vocab) = logits.shape().dims2()?;
        if params.dims() != [rows, 4] || top_k.shape().elem_count() != rows {
            bail!(
                "sampling: params {:?} and top_k {:?} for {rows} rows",
                params.dims(),
                top_k.dims()
            );
        }
        if vocab == 0 {
            bail!("sampling: empty rows");
        }
        Ok((rows, vocab))
    }
}

impl CustomOp3 for Sample {
    fn name(&self) -> &'static str {
        "wick-sample"
    }

    fn cpu_fwd(
        &self,
        logits: &CpuStorage,
        logits_layout: &Layout,
        params: &CpuStorage,
        params_layout: &Layout,
        top_k: &CpuStorage,
        top_k_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, vocab) = Self::plan(logits_layout, params_layout, top_k_layout)?;
        let logits = cpu_contiguous::<f32>(logits, logits_layout, "logits")?;
        let params = cpu_contiguous::<f32>(params, params_layout, "sampling params")?;
        let top_k = cpu_contiguous::<u32>(top_k, top_k_layout, "top_k")?;
        let tokens = (0..rows)
            .map(|r| {
                let p = &params[r * 4..][..4];
                let row = RowSampling {
                    temperature: p[0],
                    top_p: p[1],
                    min_p: p[2],
                    uniform: p[3],
                    top_k: top_k[r],
                };
                sample_row(&logits[r * vocab..][..vocab], &row)
            })
            .collect();
        Ok((CpuStorage::U32(tokens), Shape::from(rows)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        logits: &candle_core::CudaStorage,
        logits_layout: &Layout,
        params: &candle_core::CudaStorage,
        params_layout: &Layout,
        top_k: &candle_core::CudaStorage,
        top_k_layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::WrapErr;
        use candle_core::CudaStorage;

        use super::launch::{function, SAMPLING};
        use super::operands::cuda;

        /// `SAMPLE_THREADS` in the kernel.
        const THREADS: u32 = 512;

        let (rows, vocab) = Self::plan(logits_layout, params_layout, top_k_layout)?;
        let device = logits.device.clone();
        let logits = cuda::contiguous::<f32>(logits, logits_layout, "logits")?;
        let params = cuda::contiguous::<f32>(params, params_layout, "sampling params")?;
        let top_k = cuda::contiguous::<u32>(top_k, top_k_layout, "top_k")?;
        // SAFETY: the kernel writes every element before anything reads it.
        let mut out = unsafe { device.alloc::<u32>(rows) }?;
        if rows > 0 {
            let func = function(&device, SAMPLING, "sample_f32")?;
            let stream = device.cuda_stream();
            let vocab = vocab as u32;
            let mut launch = stream.launch_builder(&func);
            launch
                .arg(&logits)
                .arg(&vocab)
                .arg(&params)
                .arg(&top_k)
                .arg(&mut out);
            let config = LaunchConfig {
                grid_dim: (rows as u32, 1, 1),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: the arguments match the kernel's signature.
            unsafe { launch.launch(config) }.w()?;
        }
        Ok((CudaStorage::wrap_cuda_slice(out, device), Shape::from(rows)))
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::engine::sampler::Sampler;
    use crate::engine::SamplingParams;
    use crate::model::cuda::test_util::uniform;

    fn logits(vocab: usize, seed: u64) -> Vec<f32> {
        // Spread like a model's: a few clear leaders over a long tail.
        uniform(vocab, seed).into_iter().map(|x| 3.0 * x).collect()
    }

    fn row(temperature: f32, top_k: u32, top_p: f32, min_p: f32, uniform: f32) -> RowSampling {
        RowSampling {
            temperature,
            top_k,
            top_p,
            min_p,
            uniform,
        }
    }

    /// The CPU sampler's first token with `seed`, and the draw it made for it.
    fn cpu_sampler(logits: &[f32], r: &RowSampling, seed: u64) -> (u32, f32) {
        let params = SamplingParams {
            temperature: r.temperature,
            top_k: r.top_k as usize,
            top_p: r.top_p,
            min_p: r.min_p,
            seed: Some(seed),
            ..SamplingParams::default()
        };
        let token = Sampler::new(params, &[]).sample(logits).token;
        // The sampler's generator is StdRng from the seed; its first f32 is the draw.
        (token, StdRng::seed_from_u64(seed).random::<f32>())
    }

    #[test]
    fn greedy_rows_take_the_first_largest_logit() {
        let l = [0.5, 2.0, -1.0, 2.0];
        assert_eq!(sample_row(&l, &row(0.0, 0, 1.0, 0.0, 0.9)), 1);
        assert_eq!(sample_row(&l, &row(1.0, 1, 1.0, 0.0, 0.9)), 1);
    }

    #[test]
    fn reference_draws_what_the_cpu_sampler_draws_for_the_same_number() {
        // Every kind of cut, alone and together, and greedy; a model-sized vocabulary too,
        // where an f32 running sum would drift.
        let settings = [
            row(1.0, 0, 1.0, 0.0, 0.0),
            row(0.7, 0, 1.0, 0.0, 0.0),
            row(1.0, 0, 1.0, 0.05, 0.0),
            row(1.0, 0, 0.9, 0.0, 0.0),
            row(1.3, 20, 1.0, 0.0, 0.0),
            row(0.8, 40, 0.8, 0.0, 0.0),
            row(0.9, 50, 1.0, 0.1, 0.0),
            row(1.2, 0, 0.95, 0.02, 0.0),
            row(0.0, 0, 1.0, 0.0, 0.0),
        ];
        for (i, setting) in settings.iter().enumerate() {
            for seed in 0..200u64 {
                let vocab = if seed % 20 == 0 { 152_000 } else { 500 };
                let l = logits(vocab, seed * 31 + i as u64);
                let (want, u) = cpu_sampler(&l, setting, seed);
                let got = sample_row(
                    &l,
                    &RowSampling {
                        uniform: u,
                        ..*setting
                    },
                );
                assert_eq!(got, want, "setting {setting:?}, seed {seed}");
            }
        }
    }
    #[test]
    fn top_k_alone_keeps_the_sampler_candidates_and_their_odds() {
        let l = logits(300, 5);
        let setting = row(1.3, 20, 1.0, 0.0, 0.0);
        let kept = candidates(&l, &setting);
        assert_eq!(kept.len(), 20);
        // The same 20 tokens as the sampler can return...
        let mut top: Vec<u32> = (0..300).collect();
        top.sort_by(|&a, &b| l[b as usize].total_cmp(&l[a as usize]));
        let mut kept_ids: Vec<u32> = kept.iter().map(|c| c.0).collect();
        kept_ids.sort();
        let mut want: Vec<u32> = top[..20].to_vec();
        want.sort();
        assert_eq!(kept_ids, want);
        for seed in 0..300 {
            let (token, _) = cpu_sampler(&l, &setting, seed);
            assert!(kept_ids.binary_search(&token).is_ok());
        }
        // ...with weights in the softmax's proportions.
        let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max) / 1.3;
        for &(token, weight) in &kept {
            let p = ((l[token as usize] / 1.3 - max) as f64).exp();
            assert!((weight as f64 / (1u64 << 40) as f64 - p).abs() < 1e-6);
        }
    }

    #[test]
    fn draws_cover_the_candidates_in_proportion() {
        // Over an even grid of draws each candidate comes up as often as its weight says.
        let l = logits(50, 9);
        let setting = row(0.9, 0, 0.9, 0.0, 0.0);
        let kept = candidates(&l, &setting);
        let total: u64 = kept.iter().map(|c| c.1).sum();
        let n = 20_000;
        let mut counts = std::collections::HashMap::new();
        for i in 0..n {
            let u = (i as f32 + 0.5) / n as f32;
            *counts
                .entry(sample_row(
                    &l,
                    &RowSampling {
                        uniform: u,
                        ..setting
                    },
                ))
                .or_insert(0) += 1;
        }
        for &(token, weight) in &kept {
            let expected = weight as f64 / total as f64;
            let seen = counts.get(&token).copied().unwrap_or(0) as f64 / n as f64;
            assert!(
                (seen - expected).abs() < 2.0 / n as f64 + 1e-6,
                "token {token}"
            );
        }
        assert_eq!(counts.len(), kept.len());
    }

    #[test]
    fn the_op_runs_each_row_with_its_own_settings() {
        let vocab = 64;
        let (a, b) = (logits(vocab, 1), logits(vocab, 2));
        let rows = [row(0.0, 0, 1.0, 0.0, 0.5), row(1.0, 5, 0.9, 0.0, 0.25)];
        let t = Tensor::from_vec(
            [a.clone(), b.clone()].concat(),
            (2, vocab),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let got = sample_rows(&t, &rows).unwrap();
        assert_eq!(
            got,
            vec![sample_row(&a, &rows[0]), sample_row(&b, &rows[1])]
        );
    }
}

#[cfg(all(test, feature = "cuda"))]
mod gpu_tests {
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::model::cuda::test_util::uniform;

    /// Whether `u` falls within `tolerance` (a fraction of the total) of the boundary between
    /// `a` and `b`, adjacent in the draw order.
    fn on_a_boundary(candidates: &[(u32, u64)], a: u32, b: u32, u: f32, tolerance: f64) -> bool {
        let total: u64 = candidates.iter().map(|c| c.1).sum();
        let mut running = 0u64;
        let position = |t: u32| candidates.iter().position(|c| c.0 == t);
        let (Some(pa), Some(pb)) = (position(a), position(b)) else {
            return false;
        };
        if pa.abs_diff(pb) != 1 {
            return false;
        }
        for c in &candidates[..pa.min(pb) + 1] {
            running += c.1;
        }
        (u as f64 - running as f64 / total as f64).abs() < tolerance
    }

    #[test]
    #[ignore = "needs a CUDA GPU: cargo test --features cuda -- --ignored"]
    fn kernel_matches_the_reference() {
        let gpu = Device::new_cuda(0).unwrap();
        // Qwen2.5's vocabulary, and a small one; every kind of row in one launch.
        for vocab in [151_936, 1000] {
            let settings = [
                (0.0, 0, 1.0, 0.0),
                (1.0, 1, 1.0, 0.0),
                (1.0, 0, 1.0, 0.0),
                (0.7, 0, 1.0, 0.0),
                (1.0, 0, 1.0, 0.05),
                (1.0, 0, 0.9, 0.0),
                (0.8, 40, 0.8, 0.0),
                (1.3, 20, 1.0, 0.0),
                (0.2, 0, 0.5, 0.1),
                (1.0, 50, 0.95, 0.01),
            ];
            let draws = uniform(settings.len() * 8, 77);
            let rows: Vec<RowSampling> = (0..settings.len() * 8)
                .map(|i| {
                    let (temperature, top_k, top_p, min_p) = settings[i % settings.len()];
                    RowSampling {
                        temperature,
                        top_k,
                        top_p,
                        min_p,
                        // uniform() is in [-2, 2): fold into [0, 1).
                        uniform: draws[i].abs() / 2.0,
                    }
                })
                .collect();
            // A few exact ties at the top too: rows 0..4 share their largest logit twice.
            let mut logits: Vec<f32> = uniform(rows.len() * vocab, vocab as u64)
                .into_iter()
                .map(|x| 4.0 * x)
                .collect();
            for r in 0..4 {
                logits[r * vocab + 7] = 20.0;
                logits[r * vocab + 3] = 20.0;
            }
            let t = Tensor::from_vec(logits.clone(), (rows.len(), vocab), &gpu).unwrap();
            let got = sample_rows(&t, &rows).unwrap();
            for (r, (row, &token)) in rows.iter().zip(&got).enumerate() {
                let l = &logits[r * vocab..][..vocab];
                let want = sample_row(l, row);
                if token != want {
                    // expf and the host's exp may differ in the last bit: a draw that close
                    // to a boundary may land on either side.
                    let c = candidates(l, row);
                    assert!(
                        on_a_boundary(&c, token, want, row.uniform, 1e-6),
                        "vocab {vocab} row {r} {row:?}: kernel {token}, reference {want}"
                    );
                }
            }
        }
    }
}
