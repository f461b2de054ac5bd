//! The BERT family of encoders: sentence-embedding models. Unlike the decoders, every token
//! sees every other token of its text (no causal mask, no KV cache) and the LayerNorms (with
//! biases) come after each block (post-norm). Two members, told apart by
//! `general.architecture` ([`Variant`]):
//!
//! - `bert` (all-MiniLM-L6-v2, bge-small): learned position embeddings, a GELU feed-forward
//!   with biases.
//! - `nomic-bert` (nomic-embed-text): no position embeddings but a rotary one on q and k
//!   (halves style, `nomic-bert.rope.freq_base`), q, k and v in one `attn_qkv` matrix, and a
//!   SwiGLU feed-forward without biases (silu(`ffn_gate`) * `ffn_up`, then `ffn_down`).
//!
//! Both read q, k and v from one fused matrix or three, and take the biases of attention (and
//! of BERT's feed-forward) where the GGUF has them, as llama.cpp does.
//!
//! A step takes a batch of texts: all their tokens are stacked into one matrix for every
//! linear layer (each weight read once per step however many texts), and only attention runs
//! text by text. What comes out is one vector per text, pooled as `{arch}.pooling_type` says
//! (mean, the first token `[CLS]`, or the last) and scaled to length 1, as llama.cpp's server
//! returns them.

use candle_core::{DType, Device, Result, Tensor, D};

use super::decoder::Reader;
use super::gguf::GgufModel;
use super::ops::{RopeStyle, RopeTables};
use super::quant::{tensor_bytes, Linear};

/// The member of the family a GGUF holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Bert,
    NomicBert,
}

impl Variant {
    /// From `general.architecture`; the names are those of `super::ENCODER_ARCHITECTURES`.
    pub fn from_architecture(arch: &str) -> anyhow::Result<Self> {
        match arch {
            "bert" => Ok(Self::Bert),
            "nomic-bert" => Ok(Self::NomicBert),
            other => anyhow::bail!("'{other}' is not an encoder wick runs"),
        }
    }
}

/// How the token vectors of a text become one vector (llama.cpp's `pooling_type` numbers;
/// `mean`, `cls` or `last` in a catalog's `pooled_embeddings` and `--pooled-embeddings`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    Mean,
    Cls,
    Last,
}

impl Pooling {
    /// `{arch}.pooling_type`: 1 mean, 2 cls, 3 last; 0 (none) and 4 (rank) give no sentence
    /// vector, so they are refused.
    pub fn from_gguf(value: Option<u32>) -> anyhow::Result<Self> {
        match value {
            Some(1) => Ok(Self::Mean),
            Some(2) => Ok(Self::Cls),
            Some(3) => Ok(Self::Last),
            None => anyhow::bail!("the GGUF has no pooling_type: wick cannot pool its tokens"),
            Some(other) => {
                anyhow::bail!("pooling_type {other} is not one wick runs (1 mean, 2 cls, 3 last)")
            }
        }
    }
}

/// Hyper-parameters of an encoder, from the GGUF metadata.
#[derive(Debug, Clone)]
pub struct EncoderConfig {
    pub architecture: String,
    pub variant: Variant,
    pub n_layers: usize,
    pub hidden: usize,
    pub n_heads: usize,
    pub context_length: usize,
    pub norm_eps: f64,
    pub pooling: Pooling,
}

/// A weight matrix: f16 and f32 matrices are held as f32 and multiplied with candle's
/// dense product over the whole batch at once; quantized ones go through wick's kernels.
enum Matrix {
    Dense(Tensor),
    Quantized(Linear),
}

impl Matrix {
    fn load(r: &mut Reader<'_>, name: &str) -> Result<Self> {
        let t = r.qtensor(name)?;
        use candle_core::quantized::GgmlDType as G;
        Ok(match t.dtype() {
            G::F32 | G::F16 | G::BF16 => Matrix::Dense(t.dequantize(r.device)?.t()?.contiguous()?),
            _ => Matrix::Quantized(Linear::new(t, r.device)?),
        })
    }

    /// `x`: `[tokens, k]` → `[tokens, rows]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Matrix::Dense(wt) => x.matmul(wt),
            Matrix::Quantized(linear) => linear.forward(x),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Matrix::Dense(t) => tensor_bytes(t),
            Matrix::Quantized(l) => l.bytes(),
        }
    }
}

/// A linear layer and its bias, where the GGUF has one.
struct Affine {
    weight: Matrix,
    bias: Option<Tensor>,
}

impl Affine {
    fn load(r: &mut Reader<'_>, prefix: &str) -> Result<Self> {
        let bias = format!("{prefix}.bias");
        Ok(Self {
            weight: Matrix::load(r, &format!("{prefix}.weight"))?,
            bias: if r.has(&bias) {
                Some(r.f32(&bias)?)
            } else {
                None
            },
        })
    }
    /// Without a bias even where the GGUF has one: llama.cpp runs nomic-bert's feed-forward
    /// without its biases (its converter writes none).
    fn load_weight(r: &mut Reader<'_>, prefix: &str) -> Result<Self> {
        Ok(Self {
            weight: Matrix::load(r, &format!("{prefix}.weight"))?,
            bias: None,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.weight.forward(x)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
    fn bytes(&self) -> usize {
        self.weight.bytes() + self.bias.as_ref().map_or(0, tensor_bytes)
    }
}

/// A layer norm's scale and shift.
struct Norm {
    weight: Tensor,
    bias: Tensor,
}

impl Norm {
    fn load(r: &mut Reader<'_>, prefix: &str) -> Result<Self> {
        Ok(Self {
            weight: r.f32(&format!("{prefix}.weight"))?,
            bias: r.f32(&format!("{prefix}.bias"))?,
        })
    }
    fn forward(&self, x: &Tensor, eps: f64) -> Result<Tensor> {
        layer_norm(x, &self.weight, &self.bias, eps)
    }
    fn bytes(&self) -> usize {
        tensor_bytes(&self.weight) + tensor_bytes(&self.bias)
    }
}

/// Normalise each row to mean 0 and variance 1, then scale and shift.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    centred
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .broadcast_mul(weight)?
        .broadcast_add(bias)
}

/// The q, k and v projections: one matrix whose output stacks q, k and v in that order
/// (`attn_qkv`, nomic-bert's), or three.
enum Qkv {
    Fused(Affine),
    Split(Box<[Affine; 3]>),
}

impl Qkv {
    fn load(r: &mut Reader<'_>, prefix: &str) -> Result<Self> {
        if !r.has(&format!("{prefix}.attn_qkv.weight")) {
            return Ok(Qkv::Split(Box::new([
                Affine::load(r, &format!("{prefix}.attn_q"))?,
                Affine::load(r, &format!("{prefix}.attn_k"))?,
                Affine::load(r, &format!("{prefix}.attn_v"))?,
            ])));
        }
        let mut fused = Affine::load(r, &format!("{prefix}.attn_qkv"))?;
        // A fused matrix may come with three separate biases instead of one.
        let parts = ["attn_q", "attn_k", "attn_v"].map(|p| format!("{prefix}.{p}.bias"));
        if fused.bias.is_none() && parts.iter().all(|p| r.has(p)) {
            let biases = parts.iter().map(|p| r.f32(p)).collect::<Result<Vec<_>>>()?;
            fused.bias = Some(Tensor::cat(&biases, 0)?);
        }
        Ok(Qkv::Fused(fused))
    }

    /// `x`: `[tokens, hidden]` → q, k and v, `[tokens, hidden]` each.
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        match self {
            Qkv::Split(qkv) => {
                let [q, k, v] = qkv.as_ref();
                Ok((q.forward(x)?, k.forward(x)?, v.forward(x)?))
            }
            Qkv::Fused(qkv) => {
                let hidden = x.dim(1)?;
                let all = qkv.forward(x)?;
                let part = |i: usize| all.narrow(1, i * hidden, hidden)?.contiguous();
                Ok((part(0)?, part(1)?, part(2)?))
            }
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Qkv::Fused(qkv) => qkv.bytes(),
            Qkv::Split(qkv) => qkv.iter().map(Affine::bytes).sum(),
        }
    }
}

enum FeedForward {
    /// BERT's: GELU between two linear layers with biases.
    Gelu { up: Affine, down: Affine },
    /// nomic-bert's: silu(gate) * up, then down.
    SwiGlu {
        up: Affine,
        gate: Affine,
        down: Affine,
    },
}

impl FeedForward {
    fn load(r: &mut Reader<'_>, prefix: &str, variant: Variant) -> Result<Self> {
        let name = |part: &str| format!("{prefix}.{part}");
        Ok(match variant {
            Variant::Bert => FeedForward::Gelu {
                up: Affine::load(r, &name("ffn_up"))?,
                down: Affine::load(r, &name("ffn_down"))?,
            },
            Variant::NomicBert => FeedForward::SwiGlu {
                up: Affine::load_weight(r, &name("ffn_up"))?,
                gate: Affine::load_weight(r, &name("ffn_gate"))?,
                down: Affine::load_weight(r, &name("ffn_down"))?,
            },
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            FeedForward::Gelu { up, down } => down.forward(&up.forward(x)?.gelu_erf()?),
            FeedForward::SwiGlu { up, gate, down } => {
                down.forward(&super::ops::swiglu(&gate.forward(x)?, &up.forward(x)?)?)
            }
        }
    }

    fn bytes(&self) -> usize {
        match self {
            FeedForward::Gelu { up, down } => up.bytes() + down.bytes(),
            FeedForward::SwiGlu { up, gate, down } => up.bytes() + gate.bytes() + down.bytes(),
        }
    }
}

/// Where a token's position enters.
enum Positions {
    /// BERT: a learned vector per position, `[positions, hidden]`, added to the input.
    Learned(Tensor),
    /// nomic-bert: q and k of every head rotated by the position, pairs (i, i + head_dim / 2).
    Rotary(RopeTables),
}

/// Rotate `x` (`[heads, len, head_dim]`, one text's q or k, positions from 0) by `rope`.
fn rotate(rope: &RopeTables, x: &Tensor) -> Result<Tensor> {
    rope.apply(&x.unsqueeze(0)?.contiguous()?, 0)?.squeeze(0)
}

struct Layer {
    qkv: Qkv,
    output: Affine,
    attn_norm: Norm,
    ffn: FeedForward,
    out_norm: Norm,
}

impl Layer {
    fn bytes(&self) -> usize {
        self.qkv.bytes()
            + self.output.bytes()
            + self.attn_norm.bytes()
            + self.ffn.bytes()
            + self.out_norm.bytes()
    }
}

pub struct Bert {
    config: EncoderConfig,
    device: Device,
    /// `[vocab, hidden]` and `[types, hidden]`, f32.
    token_embd: Tensor,
    token_types: Option<Tensor>,
    positions: Positions,
    embd_norm: Norm,
    layers: Vec<Layer>,
}

impl Bert {
    pub fn load(gguf: &mut GgufModel, device: &Device) -> anyhow::Result<Self> {
        let content = gguf.content();
        let arch = super::meta(content, "general.architecture")?
            .to_string()?
            .clone();
        let variant = Variant::from_architecture(&arch)?;
        let number = |key: &str| -> anyhow::Result<u32> {
            let v = super::meta(content, &format!("{arch}.{key}"))?;
            Ok(v.to_u32().or_else(|_| v.to_u64().map(|x| x as u32))?)
        };
        let float = |key: &str| {
            content
                .metadata
                .get(&format!("{arch}.{key}"))
                .and_then(|v| v.to_f32().ok())
        };
        let pooling = Pooling::from_gguf(number("pooling_type").ok())?;
        let rope_base = float("rope.freq_base").unwrap_or(10_000.0);
        let rope_dims = number("rope.dimension_count").ok();
        let n_heads = number("attention.head_count")? as usize;
        // Every head has its own k and v (fused q/k/v is split in three equal parts).
        if let Some(kv) = number("attention.head_count_kv")
            .ok()
            .filter(|&kv| kv as usize != n_heads)
        {
            anyhow::bail!("{kv} k/v heads for {n_heads} q heads in an encoder");
        }
        let config = EncoderConfig {
            n_layers: number("block_count")? as usize,
            hidden: number("embedding_length")? as usize,
            n_heads,
            context_length: number("context_length")? as usize,
            norm_eps: float("attention.layer_norm_epsilon").unwrap_or(1e-12) as f64,
            pooling,
            variant,
            architecture: arch,
        };
        if config.n_heads == 0 || !config.hidden.is_multiple_of(config.n_heads) {
            anyhow::bail!(
                "{} heads do not divide the width {}",
                config.n_heads,
                config.hidden
            );
        }
        let head_dim = config.hidden / config.n_heads;
        let mut r = Reader { gguf, device };
        let token_embd = r.f32("token_embd.weight")?;
        let token_types = if r.has("token_types.weight") {
            Some(r.f32("token_types.weight")?)
        } else {
            None
        };
        let positions = match variant {
            Variant::Bert => Positions::Learned(r.f32("position_embd.weight")?),
            Variant::NomicBert => {
                // nomic-embed-text rotates every dimension of a head; a partial rotary
                // (fewer dimensions) is not one wick runs.
                if let Some(dims) = rope_dims.filter(|&d| d as usize != head_dim) {
                    anyhow::bail!("a rotary over {dims} of {head_dim} head dimensions");
                }
                Positions::Rotary(RopeTables::new(
                    head_dim,
                    config.context_length,
                    rope_base,
                    RopeStyle::Halves,
                    device,
                )?)
            }
        };
        let embd_norm = Norm::load(&mut r, "token_embd_norm")?;
        let mut layers = Vec::with_capacity(config.n_layers);
        for i in 0..config.n_layers {
            let p = format!("blk.{i}");
            layers.push(Layer {
                qkv: Qkv::load(&mut r, &p)?,
                output: Affine::load(&mut r, &format!("{p}.attn_output"))?,
                attn_norm: Norm::load(&mut r, &format!("{p}.attn_output_norm"))?,
                ffn: FeedForward::load(&mut r, &p, variant)?,
                out_norm: Norm::load(&mut r, &format!("{p}.layer_output_norm"))?,
            });
        }
        Ok(Self {
            config,
            device: device.clone(),
            token_embd,
            token_types,
            positions,
            embd_norm,
            layers,
        })
    }

    /// The most tokens a text may have: the learned positions, or the trained context.
    fn max_tokens(&self) -> Result<usize> {
        match &self.positions {
            Positions::Learned(table) => table.dim(0),
            Positions::Rotary(_) => Ok(self.config.context_length),
        }
    }

    /// Attention of one text's tokens over each other: `q`, `k`, `v` `[len, hidden]` →
    /// `[len, hidden]`.
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let (len, hidden) = q.dims2()?;
        let heads = self.config.n_heads;
        let head_dim = hidden / heads;
        let split = |t: &Tensor| {
            t.reshape((len, heads, head_dim))?
                .transpose(0, 1)?
                .contiguous()
        };
        let (mut q, mut k, v) = (split(q)?, split(k)?, split(v)?);
        if let Positions::Rotary(rope) = &self.positions {
            q = rotate(rope, &q)?;
            k = rotate(rope, &k)?;
        }
        let scale = 1.0 / (head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        probs.matmul(&v)?.transpose(0, 1)?.reshape((len, hidden))
    }
}

impl super::Encoder for Bert {
    fn config(&self) -> &EncoderConfig {
        &self.config
    }

    fn weight_bytes(&self) -> usize {
        let layers: usize = self.layers.iter().map(Layer::bytes).sum();
        let positions = match &self.positions {
            Positions::Learned(table) => tensor_bytes(table),
            Positions::Rotary(_) => 0,
        };
        tensor_bytes(&self.token_embd)
            + self.token_types.as_ref().map_or(0, tensor_bytes)
            + positions
            + self.embd_norm.bytes()
            + layers
    }

    fn embed(&self, texts: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let lens: Vec<usize> = texts.iter().map(|t| t.len()).collect();
        let vocab = self.token_embd.dim(0)?;
        let most = self.max_tokens()?;
        for (i, text) in texts.iter().enumerate() {
            if text.is_empty() || text.len() > most {
                candle_core::bail!(
                    "text {i} has {} tokens; this model takes 1 to {most}",
                    text.len()
                );
            }
            if let Some(bad) = text.iter().find(|&&id| id as usize >= vocab) {
                candle_core::bail!("token id {bad} is outside the vocabulary of {vocab}");
            }
        }
        let ids: Vec<u32> = texts.iter().flat_map(|t| t.iter().copied()).collect();
        let dev = &self.device;
        let mut x = self
            .token_embd
            .index_select(&Tensor::new(ids.as_slice(), dev)?, 0)?;
        // Every token is of the first segment (type 0), as for a single text in BERT.
        if let Some(types) = &self.token_types {
            x = x.broadcast_add(&types.get(0)?)?;
        }
        if let Positions::Learned(table) = &self.positions {
            let pos: Vec<u32> = lens.iter().flat_map(|&n| 0..n as u32).collect();
            x = x.add(&table.index_select(&Tensor::new(pos.as_slice(), dev)?, 0)?)?;
        }
        let eps = self.config.norm_eps;
        let mut x = self.embd_norm.forward(&x, eps)?;
        for layer in &self.layers {
            let (q, k, v) = layer.qkv.forward(&x)?;
            let mut start = 0;
            let mut outputs = Vec::with_capacity(texts.len());
            for &len in &lens {
                let part = |t: &Tensor| t.narrow(0, start, len);
                outputs.push(self.attend(&part(&q)?, &part(&k)?, &part(&v)?)?);
                start += len;
            }
            let att = Tensor::cat(&outputs, 0)?;
            x = layer
                .attn_norm
                .forward(&(x + layer.output.forward(&att)?)?, eps)?;
            x = layer
                .out_norm
                .forward(&(&x + layer.ffn.forward(&x)?)?, eps)?;
        }
        let mut start = 0;
        let mut vectors = Vec::with_capacity(texts.len());
        for &len in &lens {
            vectors.push(pool(&x.narrow(0, start, len)?, self.config.pooling)?);
            start += len;
        }
        Ok(vectors)
    }
}

/// One text's token vectors `[tokens, hidden]` pooled into one vector of length 1 (also
/// how a decoder's embeddings are made, src/engine/pooled.rs).
pub fn pool(rows: &Tensor, pooling: Pooling) -> Result<Vec<f32>> {
    let pooled = match pooling {
        Pooling::Mean => rows.mean(0)?,
        Pooling::Cls => rows.get(0)?,
        Pooling::Last => rows.get(rows.dim(0)? - 1)?,
    };
    Ok(normalize(pooled.to_dtype(DType::F32)?.to_vec1::<f32>()?))
}

/// Scale a vector to length 1 (a zero vector stays zero).
pub fn normalize(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v
        .iter()
        .map(|x| (*x as f64) * (*x as f64))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        for x in &mut v {
            *x = (*x as f64 / norm) as f32;
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_centres_and_scales_rows() {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[1f32, 2., 3., 4.], [2., 2., 2., 2.]], &dev).unwrap();
        let w = Tensor::new(&[1f32, 1., 2., 2.], &dev).unwrap();
        let b = Tensor::new(&[0f32, 1., 0., 0.], &dev).unwrap();
        let y = layer_norm(&x, &w, &b, 0.0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        // Row 0: mean 2.5, variance 1.25.
        let s = 1.25f32.sqrt();
        let want = [-1.5 / s, -0.5 / s + 1.0, 2.0 * 0.5 / s, 2.0 * 1.5 / s];
        for (a, b) in y[0].iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{:?} vs {want:?}", y[0]);
        }
        // A constant row has no variance: eps 0 would divide 0 by 0, so it gives NaN.
        assert!(y[1][0].is_nan());
    }

    #[test]
    fn normalize_gives_unit_length() {
        let v = normalize(vec![3.0, 4.0]);
        assert_eq!(v, vec![0.6, 0.8]);
        assert_eq!(normalize(vec![0.0, 0.0]), vec![0.0, 0.0]);
    }

    #[test]
    fn every_encoder_architecture_is_a_variant() {
        for arch in crate::model::ENCODER_ARCHITECTURES {
            assert!(Variant::from_architecture(arch).is_ok(), "{arch}");
        }
        assert_eq!(
            Variant::from_architecture("nomic-bert").unwrap(),
            Variant::NomicBert
        );
        assert!(Variant::from_architecture("llama").is_err());
    }

    #[test]
    fn rotary_turns_each_half_pair_by_its_position() {
        let dev = Device::Cpu;
        let (base, dim) = (1000f32, 4);
        let rope = RopeTables::new(dim, 8, base, RopeStyle::Halves, &dev).unwrap();
        // One head, three positions, the same vector at each.
        let x = Tensor::new(&[[[1f32, 2., 3., 4.]; 3]], &dev).unwrap();
        let y = rotate(&rope, &x).unwrap().to_vec3::<f32>().unwrap();
        for (p, row) in y[0].iter().enumerate() {
            // Pairs (0, 2) and (1, 3); pair i turns by p / base^(2i / dim).
            let (a0, a1) = (p as f32, p as f32 / base.powf(2.0 / dim as f32));
            let want = [
                a0.cos() - 3.0 * a0.sin(),
                2.0 * a1.cos() - 4.0 * a1.sin(),
                a0.sin() + 3.0 * a0.cos(),
                2.0 * a1.sin() + 4.0 * a1.cos(),
            ];
            for (a, b) in row.iter().zip(want) {
                assert!((a - b).abs() < 1e-5, "position {p}: {row:?} vs {want:?}");
            }
        }
        // Position 0 is left as it is.
        assert_eq!(y[0][0], vec![1., 2., 3., 4.]);
    }

    fn dense(rows: &[&[f32]]) -> Matrix {
        // Held transposed, `[k, rows]`, as `Matrix::load` holds a dense weight.
        let w: Vec<Vec<f32>> = rows.iter().map(|r| r.to_vec()).collect();
        Matrix::Dense(Tensor::new(w, &Device::Cpu).unwrap().t().unwrap())
    }

    #[test]
    fn swiglu_feed_forward_gates_up_with_silu_of_gate() {
        let affine = |rows: &[&[f32]]| Affine {
            weight: dense(rows),
            bias: None,
        };
        let ffn = FeedForward::SwiGlu {
            up: affine(&[&[1., 0.], &[0., 1.]]),
            gate: affine(&[&[2., 0.], &[0., 2.]]),
            down: affine(&[&[1., 0.], &[0., 1.]]),
        };
        let x = Tensor::new(&[[1f32, -1.]], &Device::Cpu).unwrap();
        let y = ffn.forward(&x).unwrap().to_vec2::<f32>().unwrap();
        let silu = |z: f32| z / (1.0 + (-z).exp());
        // gate [2, -2], up [1, -1].
        let want = [silu(2.0), -silu(-2.0)];
        for (a, b) in y[0].iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{y:?} vs {want:?}");
        }
    }

    #[test]
    fn a_fused_qkv_gives_q_then_k_then_v() {
        let qkv = Qkv::Fused(Affine {
            weight: dense(&[
                &[1., 0.],
                &[2., 0.],
                &[3., 0.],
                &[4., 0.],
                &[5., 0.],
                &[6., 0.],
            ]),
            bias: Some(Tensor::new(&[0f32, 0., 0., 0., 0., 10.], &Device::Cpu).unwrap()),
        });
        let x = Tensor::new(&[[1f32, 7.]], &Device::Cpu).unwrap();
        let (q, k, v) = qkv.forward(&x).unwrap();
        let row = |t: Tensor| t.to_vec2::<f32>().unwrap().remove(0);
        assert_eq!(row(q), vec![1., 2.]);
        assert_eq!(row(k), vec![3., 4.]);
        assert_eq!(row(v), vec![5., 16.]);
    }

    #[test]
    fn pooling_types_are_llama_cpp_s() {
        assert_eq!(Pooling::from_gguf(Some(1)).unwrap(), Pooling::Mean);
        assert_eq!(Pooling::from_gguf(Some(2)).unwrap(), Pooling::Cls);
        assert_eq!(Pooling::from_gguf(Some(3)).unwrap(), Pooling::Last);
        assert!(Pooling::from_gguf(Some(0)).is_err());
        assert!(Pooling::from_gguf(None).is_err());
    }
}
