//! The hot operations of a transformer step, each behind one function so a faster kernel can
//! replace it without touching the model files. Each has a test against a plain reference.

use candle_core::{DType, Device, Result, Tensor, D};

use super::quant::pool::Pool;
use super::quant::SharedOut;

/// RMS normalisation over the last dimension, scaled by `weight`: wick's own kernel for the
/// model's f32 row matrices on a CUDA GPU, candle's everywhere else (the CPU included).
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    if x.device().is_cuda() && x.rank() == 2 && x.dtype() == DType::F32 {
        return super::cuda::rms_norm::rms_norm(x, weight, eps);
    }
    candle_nn::ops::rms_norm(x, weight, eps)
}

/// How a family pairs the dimensions it rotates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (2i, 2i+1): llama.cpp's "normal" rope, used by its llama GGUFs.
    Interleaved,
    /// Halves (i, i + d/2): GPT-NeoX style, used by qwen2 and gemma.
    Halves,
}

/// Precomputed cos/sin tables for every position up to the context length.
pub struct RopeTables {
    cos: Tensor,
    sin: Tensor,
    /// The same tables in host memory, `[positions, head_dim / 2]`, for the CPU path.
    host_cos: Vec<f32>,
    host_sin: Vec<f32>,
    half: usize,
    style: RopeStyle,
}

impl RopeTables {
    pub fn new(
        head_dim: usize,
        max_positions: usize,
        base: f32,
        style: RopeStyle,
        device: &Device,
    ) -> Result<Self> {
        Self::scaled(head_dim, max_positions, base, 1.0, style, device)
    }

    /// Tables with linear position scaling: every angle divided by `factor` (GGUF's
    /// `rope.scaling.type = linear`, as Gemma 3's larger models use on their global layers).
    pub fn scaled(
        head_dim: usize,
        max_positions: usize,
        base: f32,
        factor: f32,
        style: RopeStyle,
        device: &Device,
    ) -> Result<Self> {
        let divisors = vec![factor; head_dim / 2];
        Self::with_divisors(head_dim, max_positions, base, &divisors, style, device)
    }

    /// Tables whose pair `i` turns `divisors[i]` times slower: GGUF's `rope_freqs.weight`
    /// (Llama 3.1's rope scaling, as llama.cpp's converter writes it, one factor a pair).
    pub fn with_divisors(
        head_dim: usize,
        max_positions: usize,
        base: f32,
        divisors: &[f32],
        style: RopeStyle,
        device: &Device,
    ) -> Result<Self> {
        let half = head_dim / 2;
        if divisors.len() != half {
            candle_core::bail!(
                "{} rotary factors for {half} dimension pairs",
                divisors.len()
            );
        }
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| 1.0 / base.powf(2.0 * i as f32 / head_dim as f32) / divisors[i])
            .collect();
        let inv_freq_t = Tensor::from_vec(inv_freq, (1, half), device)?;
        let positions = Tensor::arange(0u32, max_positions as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((max_positions, 1))?;
        let angles = positions.broadcast_mul(&inv_freq_t)?;
        let (cos, sin) = (angles.cos()?, angles.sin()?);
        let host = |t: &Tensor| t.flatten_all()?.to_device(&Device::Cpu)?.to_vec1::<f32>();
        Ok(Self {
            host_cos: host(&cos)?,
            host_sin: host(&sin)?,
            cos,
            sin,
            half,
            style,
        })
    }

    /// The same rotation with every cos and sin times `magnitude`, so rotated vectors grow
    /// by it: llama.cpp's rope `attn_factor` (Phi-3's LongRoPE `rope.scaling.attn_factor`).
    pub fn with_magnitude(self, magnitude: f32) -> Result<Self> {
        if magnitude == 1.0 {
            return Ok(self);
        }
        let scale = |v: Vec<f32>| v.into_iter().map(|x| x * magnitude).collect();
        Ok(Self {
            cos: (self.cos * magnitude as f64)?,
            sin: (self.sin * magnitude as f64)?,
            host_cos: scale(self.host_cos),
            host_sin: scale(self.host_sin),
            ..self
        })
    }

    /// The cos and sin tables on the model's device, `[positions, head_dim / 2]` each (for
    /// wick's own rotary kernel, `cuda::rope`).
    pub fn tables(&self) -> (&Tensor, &Tensor) {
        (&self.cos, &self.sin)
    }

    pub fn style(&self) -> RopeStyle {
        self.style
    }

    /// Rotate `x` (`[1, heads, len, head_dim]`, contiguous) for positions `start..start+len`.
    pub fn apply(&self, x: &Tensor, start: usize) -> Result<Tensor> {
        let len = x.dim(2)?;
        let cos = self.cos.narrow(0, start, len)?;
        let sin = self.sin.narrow(0, start, len)?;
        match self.style {
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(x, &cos, &sin),
            RopeStyle::Halves => candle_nn::rotary_emb::rope(x, &cos, &sin),
        }
    }

    /// Rotate, in place, every head of one token at position `pos` (`x`: heads × head_dim).
    pub fn rotate_in_place(&self, x: &mut [f32], pos: usize) {
        let half = self.half;
        let cos = &self.host_cos[pos * half..(pos + 1) * half];
        let sin = &self.host_sin[pos * half..(pos + 1) * half];
        for head in x.chunks_exact_mut(2 * half) {
            for i in 0..half {
                let (a, b) = match self.style {
                    RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                    RopeStyle::Halves => (i, i + half),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * cos[i] - x1 * sin[i];
                head[b] = x0 * sin[i] + x1 * cos[i];
            }
        }
    }
}

/// One sequence's part of a batched attention call: its cache (layout
/// `[n_kv_heads, capacity, head_dim]`), the position of its first new token, and the rows
/// its new tokens take in the batch's query and output matrices.
pub struct HostSeq<'a, C: CacheRows + ?Sized> {
    pub keys: &'a C,
    pub values: &'a C,
    pub start: usize,
    pub rows: std::ops::Range<usize>,
}

/// Grouped-query head shapes of a batched attention call.
#[derive(Clone, Copy)]
pub struct Heads {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Positions each cache holds per kv head.
    pub capacity: usize,
    /// A sliding window: a query at position `p` sees keys `p + 1 - window ..= p` only.
    pub window: Option<usize>,
    /// Scores soft-capped to `(-cap, cap)` by `cap * tanh(score / cap)` (Gemma 2).
    pub softcap: Option<f32>,
}

/// Causal attention of one sequence's new queries over its host KV cache, heads spread
/// over the kernel pool: [`attention_batch`] for a single sequence.
///
/// `q`: `[len, n_heads * head_dim]` for positions `start..start+len`; `out`: the same shape.
#[allow(clippy::too_many_arguments)]
pub fn attention_host<C: CacheRows + ?Sized>(
    q: &[f32],
    keys: &C,
    values: &C,
    capacity: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    start: usize,
    out: &mut [f32],
) {
    let heads = Heads {
        n_heads,
        n_kv_heads,
        head_dim,
        capacity,
        window: None,
        softcap: None,
    };
    let rows = 0..q.len() / (n_heads * head_dim);
    let seq = HostSeq {
        keys,
        values,
        start,
        rows,
    };
    attention_batch(q, &[seq], heads, out);
}

/// Causal attention of every sequence of a step over its own host cache, in one parallel
/// loop over (sequence, head) pairs: a decode step of eight sequences is one handoff with
/// enough tasks to keep every thread busy, not eight loops of a few heads each.
///
/// Each query row is computed on its own, in a fixed order, so a token's result does not
/// depend on how many other tokens share its step (prefill chunk, batch, or a prefix taken
/// from the cache): greedy output is the same however a request is scheduled.
///
/// `q` and `out`: `[rows, n_heads * head_dim]`, each sequence's rows as its `rows` say.
pub fn attention_batch<C: CacheRows + ?Sized>(
    q: &[f32],
    seqs: &[HostSeq<'_, C>],
    heads: Heads,
    out: &mut [f32],
) {
    let Heads {
        n_heads,
        n_kv_heads,
        head_dim,
        capacity,
        window,
        softcap,
    } = heads;
    let width = n_heads * head_dim;
    let group = n_heads / n_kv_heads;
    debug_assert!(seqs.iter().all(|s| s.rows.end * width <= out.len()));
    // Tasks: a few rows of one sequence, for the query heads of one kv head, or for part of
    // them when that leaves too few tasks to keep the threads busy (a decode step of one
    // sequence). A task widens each cache row once for all its queries, so the fewer tasks
    // share a kv head, the less of that work is repeated.
    let pool = Pool::global();
    let blocks = |s: &HostSeq<'_, C>| s.rows.len().div_ceil(ROWS_PER_TASK);
    let units: usize = seqs.iter().map(blocks).sum::<usize>() * n_kv_heads;
    let splits = pool.threads().div_ceil(units).clamp(1, group);
    let heads_per_task = group.div_ceil(splits);
    let mut tasks = Vec::new();
    for (s, seq) in seqs.iter().enumerate() {
        for b in 0..blocks(seq) {
            for kv in 0..n_kv_heads {
                let kv_heads = kv * group..(kv + 1) * group;
                for h in kv_heads.clone().step_by(heads_per_task) {
                    let n = heads_per_task.min(kv_heads.end - h);
                    tasks.push((s, b * ROWS_PER_TASK, h, n));
                }
            }
        }
    }
    let out_ptr = SharedOut(out.as_mut_ptr());
    pool.run(tasks.len(), &|task| {
        // The whole wrapper (Sync), not its raw pointer field alone.
        let out_ptr = &out_ptr;
        let (s, first_row, h0, heads_here) = tasks[task];
        let seq = &seqs[s];
        let rows = first_row..(first_row + ROWS_PER_TASK).min(seq.rows.len());
        let mut queries = Vec::with_capacity(rows.len() * heads_here);
        let mut visible = Vec::with_capacity(queries.capacity());
        let mut outs = Vec::with_capacity(queries.capacity());
        for i in rows {
            let row = seq.rows.start + i;
            for h in h0..h0 + heads_here {
                let at = row * width + h * head_dim;
                queries.push(&q[at..at + head_dim]);
                visible.push(visible_keys(seq.start + i, window));
                // SAFETY: head h of row `row` belongs to this task alone, and rows lie in
                // `out`.
                outs.push(unsafe { std::slice::from_raw_parts_mut(out_ptr.0.add(at), head_dim) });
            }
        }
        let first = (h0 / group) * capacity;
        attend_many(
            &queries,
            &visible,
            (seq.keys, seq.values, first),
            softcap,
            &mut outs,
        );
    });
}

/// Query rows per attention task.
const ROWS_PER_TASK: usize = 4;

/// The cache rows a query at `position` attends over: every earlier position and its own,
/// or within a sliding window only the last `window` of them.
pub fn visible_keys(position: usize, window: Option<usize>) -> std::ops::Range<usize> {
    let end = position + 1;
    window.map_or(0, |w| end.saturating_sub(w))..end
}

/// Softmax attention of several queries over the same cache rows, query `a` seeing rows
/// `first + visible[a]`, into `outs[a]`. The rows are widened to f32 once for all queries
/// and both products run as small matrix products, four queries at a time, so each cache
/// value loaded is used four times from registers. A query's result does not depend on
/// which other queries share the call (or on the cache's layout: the paged cache's CPU
/// reference attends with it too): each score is its own sum over the head's dimensions in
/// order, each output value its own sum over the rows in order, and rows a query does not
/// see enter its output with weight exactly 0, which leaves every sum as it was.
pub fn attend_many<C: CacheRows + ?Sized>(
    queries: &[&[f32]],
    visible: &[std::ops::Range<usize>],
    (keys, values, first): (&C, &C, usize),
    softcap: Option<f32>,
    outs: &mut [&mut [f32]],
) {
    let (Some(least), Some(most)) = (
        visible.iter().map(|r| r.start).min(),
        visible.iter().map(|r| r.end).max(),
    ) else {
        return;
    };
    let head_dim = queries[0].len();
    let scale = 1.0 / (head_dim as f32).sqrt();
    // Rows `least..most`: the union of what the queries see.
    let span = most - least;
    SCRATCH.with(|scratch| {
        let scratch = &mut *scratch.borrow_mut();
        let Scratch {
            rows,
            keys_t,
            scores,
            probs,
        } = scratch;
        // Scores, a tile of keys at a time: the tile widened and transposed
        // (`[head_dim, KEYS]`, so each dimension's keys are contiguous), then every tile of
        // queries against it.
        keys_t.resize(head_dim * KEYS, 0.0);
        rows.resize(head_dim, 0.0);
        scores.clear();
        scores.resize(queries.len() * span, 0.0);
        let tiles: Vec<[&[f32]; QUERIES]> = queries
            .chunks(QUERIES)
            .map(|tile| std::array::from_fn(|i| tile.get(i).copied().unwrap_or(tile[0])))
            .collect();
        for j0 in (0..span).step_by(KEYS) {
            let n = KEYS.min(span - j0);
            for jj in 0..KEYS {
                if jj < n {
                    keys.widen_row(first + least + j0 + jj, &mut rows[..head_dim]);
                } else {
                    rows[..head_dim].fill(0.0);
                }
                for (d, &x) in rows[..head_dim].iter().enumerate() {
                    keys_t[d * KEYS + jj] = x;
                }
            }
            for (t, qs) in tiles.iter().enumerate() {
                let tile = score_tile(qs, keys_t);
                for (i, tile) in tile.iter().enumerate() {
                    let a = t * QUERIES + i;
                    if a < queries.len() {
                        scores[a * span + j0..][..n].copy_from_slice(&tile[..n]);
                    }
                }
            }
        }
        // Softmax over what each query sees; rows it does not see keep weight 0.
        probs.clear();
        probs.resize(queries.len() * span, 0.0);
        let mut sums = vec![0f32; queries.len()];
        for (a, sum) in sums.iter_mut().enumerate() {
            let seen = visible[a].start - least..visible[a].end - least;
            let probs = &mut probs[a * span..(a + 1) * span][seen.clone()];
            for (p, &score) in probs.iter_mut().zip(&scores[a * span..][seen]) {
                let scaled = score * scale;
                *p = match softcap {
                    Some(cap) => cap * (scaled / cap).tanh(),
                    None => scaled,
                };
            }
            *sum = exp_shifted(probs);
        }
        rows.resize(span * head_dim, 0.0);
        for (j, row) in rows[..span * head_dim]
            .chunks_exact_mut(head_dim)
            .enumerate()
        {
            values.widen_row(first + least + j, row);
        }
        let mut acc = vec![0f32; QUERIES * head_dim];
        for (a0, tile) in outs.chunks_mut(QUERIES).enumerate() {
            let n = tile.len();
            let ps: [&[f32]; QUERIES] = std::array::from_fn(|i| {
                let a = a0 * QUERIES + i.min(n - 1);
                &probs[a * span..(a + 1) * span]
            });
            weigh_tile(&ps, &rows[..span * head_dim], head_dim, &mut acc);
            let sums = &sums[a0 * QUERIES..];
            for ((out, acc), sum) in tile.iter_mut().zip(acc.chunks_exact(head_dim)).zip(sums) {
                // Normalised after the product, as the sum of the weights is known only then.
                let inv = 1.0 / sum;
                for (o, &x) in out.iter_mut().zip(acc) {
                    *o = x * inv;
                }
            }
        }
    });
}

/// Lanes of the vectorised loops below: partial results kept per lane and combined in a
/// fixed order, so a result depends on its own row alone, never on the instruction set.
const LANES: usize = 16;

/// `x[i] = exp(x[i] - max x)` over one query's scores; returns their sum. The maximum and
/// the sum run in [`LANES`] partial lanes (the maximum is exact in any order; the sum's
/// order is fixed by the row's length), and [`exp_lane`] is plain float arithmetic, so the
/// loops vectorise and give the same bits on every CPU.
fn exp_shifted(x: &mut [f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let whole = x.len() / LANES * LANES;
    for chunk in x[..whole].chunks_exact(LANES) {
        for (m, &v) in lanes.iter_mut().zip(chunk) {
            *m = m.max(v);
        }
    }
    let max = x[whole..]
        .iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sums = [0f32; LANES];
    for chunk in x[..whole].chunks_exact_mut(LANES) {
        for (s, v) in sums.iter_mut().zip(chunk) {
            *v = exp_lane(*v - max);
            *s += *v;
        }
    }
    let mut total = sums.iter().sum::<f32>();
    for v in &mut x[whole..] {
        *v = exp_lane(*v - max);
        total += *v;
    }
    total
}

/// `e^x` within 2 ulp of the exact value for `x` in -87..=88; below that a tiny positive
/// number, above it about 2.4e38: a range reduction to `2^n · e^r`, |r| <= ln2/2, and
/// Cephes' degree-6 polynomial for `e^r` (the `expf` coefficients, the same as most vector
/// math libraries), branch-free so it vectorises.
#[inline(always)]
fn exp_lane(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so `n · LN2_HI` is exact for the n that occur.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 · 2^23 rounds to the nearest integer (ties to even).
    const ROUND: f32 = 12_582_912.0;
    // Not `clamp`: a NaN becomes a number in range here, never reaching the bit tricks.
    #[allow(clippy::manual_clamp)]
    let x = x.max(-87.0).min(88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    for c in [1.398_2e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = p * r + c;
    }
    let e_r = p * (r * r) + r + 1.0;
    // 2^n as float bits: -126 <= n <= 127 here, so the exponent stays normal.
    e_r * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Per-thread buffers of [`attend_many`], kept between calls: a long context's rows would
/// otherwise be fresh pages (and page faults) for every task.
#[derive(Default)]
struct Scratch {
    rows: Vec<f32>,
    keys_t: Vec<f32>,
    scores: Vec<f32>,
    probs: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Queries per tile of [`attend_many`]'s products.
const QUERIES: usize = 4;
/// Keys per tile of the score product (one 512-bit register, two 256-bit ones).
const KEYS: usize = 16;
/// Output values per tile of the value product.
const DIMS: usize = 32;

/// `scores[a][j] = Σ_d qs[a][d] · keys_t[d][j]` for the [`KEYS`] keys of a tile
/// (`keys_t`: `[head_dim, KEYS]`), each summed over `d` in order (products rounded, then
/// added), the four queries' sums held in registers.
fn score_tile(qs: &[&[f32]; QUERIES], keys_t: &[f32]) -> [[f32; KEYS]; QUERIES] {
    let mut acc = [[0f32; KEYS]; QUERIES];
    for (d, k) in keys_t.chunks_exact(KEYS).enumerate() {
        let k: &[f32; KEYS] = k.try_into().expect("tile");
        for (acc, q) in acc.iter_mut().zip(qs) {
            let q = q[d];
            for l in 0..KEYS {
                acc[l] += q * k[l];
            }
        }
    }
    acc
}

/// `acc[a][d] = Σ_j ps[a][j] · rows[j][d]` over every row, each summed over `j` in order
/// from zero (products rounded, then added), [`DIMS`] values of the four queries at a time
/// held in registers.
fn weigh_tile(ps: &[&[f32]; QUERIES], rows: &[f32], head_dim: usize, acc: &mut [f32]) {
    let whole = head_dim / DIMS * DIMS;
    for c in (0..whole).step_by(DIMS) {
        let mut tile = [[0f32; DIMS]; QUERIES];
        for (j, row) in rows.chunks_exact(head_dim).enumerate() {
            let v: &[f32; DIMS] = row[c..c + DIMS].try_into().expect("tile");
            for (tile, p) in tile.iter_mut().zip(ps) {
                let p = p[j];
                for l in 0..DIMS {
                    tile[l] += p * v[l];
                }
            }
        }
        for (a, tile) in tile.iter().enumerate() {
            acc[a * head_dim + c..][..DIMS].copy_from_slice(tile);
        }
    }
    for d in whole..head_dim {
        for (a, p) in ps.iter().enumerate() {
            let mut sum = 0f32;
            for (row, &p) in rows.chunks_exact(head_dim).zip(p.iter()) {
                sum += p * row[d];
            }
            acc[a * head_dim + d] = sum;
        }
    }
}

/// Rows of a host KV cache (keys or values of one layer, `head_dim` values a row), as the
/// attention reads them: f16 (the CPU cache's default, half the bytes of f32, as llama.cpp's
/// cache holds them), Q8_0 blocks (`--kv-type q8_0`, see kv_cache.rs), or f32 (references
/// in tests). f16 widens to f32 exactly, so f16 and f32 caches holding the same
/// (f16-rounded) values give the same attention.
pub trait CacheRows: Sync {
    /// Row `r`, `out.len()` values, as f32.
    fn widen_row(&self, r: usize, out: &mut [f32]);
}

impl<T: Sync> CacheRows for Vec<T>
where
    [T]: CacheRows,
{
    #[inline]
    fn widen_row(&self, r: usize, out: &mut [f32]) {
        self.as_slice().widen_row(r, out)
    }
}

impl CacheRows for [f32] {
    #[inline]
    fn widen_row(&self, r: usize, out: &mut [f32]) {
        let n = out.len();
        out.copy_from_slice(&self[r * n..(r + 1) * n]);
    }
}

impl CacheRows for [half::f16] {
    #[inline]
    fn widen_row(&self, r: usize, out: &mut [f32]) {
        let n = out.len();
        // half converts with F16C where the CPU has it (detected at run time).
        half::slice::HalfFloatSliceExt::convert_to_f32_slice(&self[r * n..(r + 1) * n], out);
    }
}

/// Causal attention of one sequence's new queries over its cached keys and values with
/// tensor operations (the device path; the CPU uses [`attention_host`]), grouped-query heads
/// read straight from the cache.
///
/// `q`: `[n_heads, len, head_dim]` for positions `start..start+len`;
/// `k`, `v`: `[n_kv_heads, start+len, head_dim]` (views of the cache: rows may be strided).
/// Returns `[len, n_heads * head_dim]`.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    start: usize,
    window: Option<usize>,
    softcap: Option<f32>,
) -> Result<Tensor> {
    let (n_heads, len, head_dim) = q.dims3()?;
    let (n_kv_heads, total, _) = k.dims3()?;
    let group = n_heads / n_kv_heads;
    // Query head h reads kv head h / group: regroup the queries so each kv head's group is
    // one matrix of `group * len` rows.
    let q = q.reshape((n_kv_heads, group * len, head_dim))?;
    let scale = 1.0 / (head_dim as f64).sqrt();
    let mut scores = (q.matmul(&k.t()?)? * scale)?;
    if let Some(cap) = softcap {
        scores = ((scores / cap as f64)?.tanh()? * cap as f64)?;
    }
    // One new token sees every cached one, unless a window hides the oldest.
    let masked = len > 1 || window.is_some_and(|w| total > w);
    let scores = if masked {
        let mask = causal_mask(len, start, total, window, q.device())?;
        scores
            .reshape((n_kv_heads, group, len, total))?
            .broadcast_add(&mask)?
            .reshape((n_kv_heads, group * len, total))?
    } else {
        scores
    };
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    let out = probs.matmul(&v.contiguous()?)?; // [n_kv, group*len, head_dim]
    out.reshape((n_heads, len, head_dim))?
        .transpose(0, 1)?
        .reshape((len, n_heads * head_dim))
}

/// `[len, total]`: 0 where query `i` (at position `start + i`) may see key `j`, else -inf.
fn causal_mask(
    len: usize,
    start: usize,
    total: usize,
    window: Option<usize>,
    device: &Device,
) -> Result<Tensor> {
    let mask: Vec<f32> = (0..len)
        .flat_map(|i| {
            let seen = visible_keys(start + i, window);
            (0..total).map(move |j| {
                if seen.contains(&j) {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (len, total), device)
}

/// SiLU(gate) * up, the SwiGLU activation of llama-style feed-forward layers: on the CPU
/// one vectorised pass over both inputs (split across the kernel pool for a prompt's rows),
/// candle's ops on other devices.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if !gate.device().is_cpu() || gate.dtype() != DType::F32 || gate.shape() != up.shape() {
        return candle_nn::ops::silu(gate)? * up;
    }
    let g = gate.flatten_all()?.to_vec1::<f32>()?;
    let u = up.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0f32; g.len()];
    let parts: Vec<std::sync::Mutex<&mut [f32]>> = out
        .chunks_mut(SWIGLU_CHUNK)
        .map(std::sync::Mutex::new)
        .collect();
    Pool::global().run(parts.len(), &|i| {
        // Each part is taken by exactly one task: the lock is never contended.
        let mut part = parts[i].lock().unwrap_or_else(|e| e.into_inner());
        let at = i * SWIGLU_CHUNK;
        for ((o, &g), &u) in part.iter_mut().zip(&g[at..]).zip(&u[at..]) {
            *o = g * u / (1.0 + exp_lane(-g));
        }
    });
    drop(parts);
    Tensor::from_vec(out, gate.shape(), gate.device())
}

/// Values per task of [`swiglu`]: a decode step's few thousand run on the calling thread.
const SWIGLU_CHUNK: usize = 1 << 16;

/// Softmax over the last dimension (used by the references in tests and by samplers).
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::softmax(x, D::Minus1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_lane_is_within_two_ulp_of_exp() {
        let mut worst = 0f64;
        for i in -880_000..=870_000 {
            let x = -(i as f32) * 1e-4;
            let got = exp_lane(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max((got - want).abs() / want);
        }
        assert_eq!(exp_lane(0.0), 1.0);
        assert!(worst < 2.5e-7, "relative error {worst}");
        // Far below the range: tiny and positive, never NaN or negative.
        let tiny = exp_lane(-1e4);
        assert!((0.0..1e-37).contains(&tiny));
    }

    #[test]
    fn swiglu_matches_silu_times_up() {
        let (gate, up) = (rand(&[3, 70_001]), rand(&[3, 70_001]));
        let got = swiglu(&(&gate * 8.0).unwrap(), &up).unwrap();
        let want = (candle_nn::ops::silu(&(&gate * 8.0).unwrap()).unwrap() * &up).unwrap();
        let scale = up.abs().unwrap().max_keepdim(1).unwrap().max(0).unwrap();
        let scale = scale.to_vec1::<f32>().unwrap()[0] * 8.0;
        assert!(max_abs_diff(&got, &want) <= 4e-7 * scale);
    }

    #[test]
    fn exp_shifted_matches_a_plain_softmax_numerator() {
        let mut x: Vec<f32> = (0..37)
            .map(|i| ((i * 17 % 11) as f32 - 5.0) * 0.7)
            .collect();
        let want: Vec<f64> = x.iter().map(|&v| ((v - 3.5) as f64).exp()).collect();
        let total = exp_shifted(&mut x);
        for (g, w) in x.iter().zip(&want) {
            assert!((*g as f64 - w).abs() <= 3e-7 * w, "{g} vs {w}");
        }
        let sum: f64 = want.iter().sum();
        assert!((total as f64 - sum).abs() < 1e-5 * sum);
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    fn rand(shape: &[usize]) -> Tensor {
        Tensor::randn(0f32, 1f32, shape, &Device::Cpu).unwrap()
    }

    /// Plain attention: every query head gets its kv head copied, explicit causal loop.
    /// Each query on its own: softmax over the keys it sees (all earlier ones, or the last
    /// `window`), times the values.
    fn attention_reference(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        start: usize,
        window: Option<usize>,
    ) -> Tensor {
        let (n_heads, len, hd) = q.dims3().unwrap();
        let n_kv = k.dim(0).unwrap();
        let group = n_heads / n_kv;
        let mut rows = Vec::new();
        for i in 0..len {
            let mut heads = Vec::new();
            for h in 0..n_heads {
                let qi = q.get(h).unwrap().get(i).unwrap(); // [hd]
                let seen = visible_keys(start + i, window);
                let kh = k
                    .get(h / group)
                    .unwrap()
                    .narrow(0, seen.start, seen.len())
                    .unwrap();
                let vh = v
                    .get(h / group)
                    .unwrap()
                    .narrow(0, seen.start, seen.len())
                    .unwrap();
                let s = (kh
                    .matmul(&qi.unsqueeze(1).unwrap())
                    .unwrap()
                    .squeeze(1)
                    .unwrap()
                    / (hd as f64).sqrt())
                .unwrap();
                let p = softmax(&s).unwrap();
                let o = p
                    .unsqueeze(0)
                    .unwrap()
                    .matmul(&vh)
                    .unwrap()
                    .squeeze(0)
                    .unwrap();
                heads.push(o);
            }
            rows.push(Tensor::cat(&heads, 0).unwrap());
        }
        Tensor::stack(&rows, 0).unwrap()
    }

    /// Token-major rows (`[len, heads * head_dim]`) of a `[heads, len, head_dim]` tensor.
    fn token_major(t: &Tensor) -> Vec<f32> {
        t.transpose(0, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    }

    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    /// Head layouts: a small one, Qwen2.5-Coder-0.5B's (14 heads of 64 over 2 kv heads) and
    /// 1.5B's (12 heads of 128 over 2).
    const HEAD_SHAPES: [(usize, usize, usize); 3] = [(6, 2, 8), (14, 2, 64), (12, 2, 128)];

    #[test]
    fn attention_matches_reference_for_prefill_and_decode() {
        for (n_heads, n_kv, hd) in HEAD_SHAPES {
            attention_matches_reference(n_heads, n_kv, hd);
        }
    }

    fn attention_matches_reference(n_heads: usize, n_kv: usize, hd: usize) {
        let cap = 32;
        // No window, and a sliding window of 4 (some queries see all, some a part).
        for window in [None, Some(4)] {
            for (start, len) in [(0, 5), (7, 3), (12, 1)] {
                let q = rand(&[n_heads, len, hd]);
                let cache_k = rand(&[n_kv, cap, hd]);
                let cache_v = rand(&[n_kv, cap, hd]);
                // Keys and values as strided views of a larger cache, as the device path
                // has them.
                let k = cache_k.narrow(1, 0, start + len).unwrap();
                let v = cache_v.narrow(1, 0, start + len).unwrap();
                let want = attention_reference(&q, &k, &v, start, window);
                let tensors = attention(&q, &k, &v, start, window, None).unwrap();
                let mut out = vec![0f32; len * n_heads * hd];
                let (kd, vd) = (flat(&cache_k), flat(&cache_v));
                let heads = Heads {
                    n_heads,
                    n_kv_heads: n_kv,
                    head_dim: hd,
                    capacity: cap,
                    window,
                    softcap: None,
                };
                let seq = HostSeq {
                    keys: &kd[..],
                    values: &vd[..],
                    start,
                    rows: 0..len,
                };
                attention_batch(&token_major(&q), &[seq], heads, &mut out);
                let host = Tensor::from_vec(out, (len, n_heads * hd), &Device::Cpu).unwrap();
                for got in [tensors, host] {
                    assert_eq!(got.dims(), &[len, n_heads * hd]);
                    assert!(
                        max_abs_diff(&got, &want) < 1e-5,
                        "heads {n_heads}/{n_kv} of {hd}: start {start} len {len} window {window:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn host_attention_of_a_token_does_not_depend_on_its_chunk() {
        let (n_heads, n_kv, hd, cap) = (6, 2, 8, 16);
        let q = rand(&[n_heads, 4, hd]);
        let (k, v) = (flat(&rand(&[n_kv, cap, hd])), flat(&rand(&[n_kv, cap, hd])));
        let width = n_heads * hd;
        // Positions 6..10 as one chunk, and the last one alone.
        let rows = token_major(&q);
        let mut chunk = vec![0f32; 4 * width];
        attention_host(&rows, &k, &v, cap, n_heads, n_kv, hd, 6, &mut chunk);
        let mut alone = vec![0f32; width];
        attention_host(
            &rows[3 * width..],
            &k,
            &v,
            cap,
            n_heads,
            n_kv,
            hd,
            9,
            &mut alone,
        );
        assert_eq!(&chunk[3 * width..], &alone[..]);
    }

    #[test]
    fn rope_rotates_pairs_by_position_angle() {
        let (hd, base) = (8usize, 10000f32);
        let x = rand(&[1, 2, 3, hd]);
        for style in [RopeStyle::Interleaved, RopeStyle::Halves] {
            let tables = RopeTables::new(hd, 32, base, style, &Device::Cpu).unwrap();
            let got = tables.apply(&x, 5).unwrap();
            let xv = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let gv = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for row in 0..(2 * 3) {
                let pos = 5 + row % 3;
                for i in 0..hd / 2 {
                    let theta = pos as f32 / base.powf(2.0 * i as f32 / hd as f32);
                    let (a, b) = match style {
                        RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                        RopeStyle::Halves => (i, i + hd / 2),
                    };
                    let (x0, x1) = (xv[row * hd + a], xv[row * hd + b]);
                    let want0 = x0 * theta.cos() - x1 * theta.sin();
                    let want1 = x0 * theta.sin() + x1 * theta.cos();
                    assert!((gv[row * hd + a] - want0).abs() < 1e-4, "{style:?}");
                    assert!((gv[row * hd + b] - want1).abs() < 1e-4, "{style:?}");
                }
            }
        }
    }

    #[test]
    fn rotate_in_place_matches_the_tensor_rope() {
        // llama's base with a small head, and qwen2's (base 1e6, heads of 64 and 128).
        for (heads, hd, base) in [(3, 8, 10000.0), (14, 64, 1e6), (12, 128, 1e6)] {
            rotate_in_place_matches(heads, hd, base);
        }
    }

    fn rotate_in_place_matches(heads: usize, hd: usize, base: f32) {
        let x = rand(&[1, heads, 1, hd]);
        for style in [RopeStyle::Interleaved, RopeStyle::Halves] {
            let tables = RopeTables::new(hd, 32, base, style, &Device::Cpu).unwrap();
            let want = tables
                .apply(&x, 7)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let mut got = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            tables.rotate_in_place(&mut got, 7);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "{style:?} head_dim {hd}");
            }
        }
    }

    #[test]
    fn rms_norm_matches_reference() {
        let x = rand(&[4, 16]);
        let w = rand(&[16]);
        let got = rms_norm(&x, &w, 1e-5).unwrap();
        let ms = x.sqr().unwrap().mean_keepdim(1).unwrap();
        let want = x
            .broadcast_div(&(ms + 1e-5).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(&w)
            .unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-5);
    }
}
