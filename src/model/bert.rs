//! The BERT family of encoders (`general.architecture = bert`): sentence-embedding models such
//! as all-MiniLM-L6-v2 and bge-small. Unlike the decoders, every token sees every other token
//! of its text (no causal mask, no KV cache), norms come after each block (post-norm, with
//! biases), the feed-forward layer is GELU, and positions are learned embeddings.
//!
//! A step takes a batch of texts: all their tokens are stacked into one matrix for every
//! linear layer (each weight read once per step however many texts), and only attention runs
//! text by text. What comes out is one vector per text, pooled as `bert.pooling_type` says
//! (mean, the first token `[CLS]`, or the last) and scaled to length 1, as llama.cpp's server
//! returns them.

use candle_core::{DType, Device, Result, Tensor, D};

use super::decoder::Reader;
use super::gguf::GgufModel;
use super::quant::{tensor_bytes, Linear};

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

/// A linear layer with its bias.
struct Affine {
    weight: Matrix,
    bias: Tensor,
}

impl Affine {
    fn load(r: &mut Reader<'_>, prefix: &str) -> Result<Self> {
        Ok(Self {
            weight: Matrix::load(r, &format!("{prefix}.weight"))?,
            bias: r.f32(&format!("{prefix}.bias"))?,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.weight.forward(x)?.broadcast_add(&self.bias)
    }
    fn bytes(&self) -> usize {
        self.weight.bytes() + tensor_bytes(&self.bias)
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

struct Layer {
    q: Affine,
    k: Affine,
    v: Affine,
    output: Affine,
    attn_norm: Norm,
    up: Affine,
    down: Affine,
    out_norm: Norm,
}

pub struct Bert {
    config: EncoderConfig,
    device: Device,
    /// `[vocab, hidden]`, `[positions, hidden]`, `[types, hidden]`, all f32.
    token_embd: Tensor,
    position_embd: Tensor,
    token_types: Tensor,
    embd_norm: Norm,
    layers: Vec<Layer>,
}

impl Bert {
    pub fn load(gguf: &mut GgufModel, device: &Device) -> anyhow::Result<Self> {
        let content = gguf.content();
        let arch = super::meta(content, "general.architecture")?
            .to_string()?
            .clone();
        let number = |key: &str| -> anyhow::Result<u32> {
            let v = super::meta(content, &format!("{arch}.{key}"))?;
            Ok(v.to_u32().or_else(|_| v.to_u64().map(|x| x as u32))?)
        };
        let pooling = Pooling::from_gguf(number("pooling_type").ok())?;
        let config = EncoderConfig {
            n_layers: number("block_count")? as usize,
            hidden: number("embedding_length")? as usize,
            n_heads: number("attention.head_count")? as usize,
            context_length: number("context_length")? as usize,
            norm_eps: content
                .metadata
                .get(&format!("{arch}.attention.layer_norm_epsilon"))
                .and_then(|v| v.to_f32().ok())
                .unwrap_or(1e-12) as f64,
            pooling,
            architecture: arch,
        };
        let mut r = Reader { gguf, device };
        let token_embd = r.f32("token_embd.weight")?;
        let position_embd = r.f32("position_embd.weight")?;
        let token_types = r.f32("token_types.weight")?;
        let embd_norm = Norm::load(&mut r, "token_embd_norm")?;
        let mut layers = Vec::with_capacity(config.n_layers);
        for i in 0..config.n_layers {
            let p = format!("blk.{i}");
            layers.push(Layer {
                q: Affine::load(&mut r, &format!("{p}.attn_q"))?,
                k: Affine::load(&mut r, &format!("{p}.attn_k"))?,
                v: Affine::load(&mut r, &format!("{p}.attn_v"))?,
                output: Affine::load(&mut r, &format!("{p}.attn_output"))?,
                attn_norm: Norm::load(&mut r, &format!("{p}.attn_output_norm"))?,
                up: Affine::load(&mut r, &format!("{p}.ffn_up"))?,
                down: Affine::load(&mut r, &format!("{p}.ffn_down"))?,
                out_norm: Norm::load(&mut r, &format!("{p}.layer_output_norm"))?,
            });
        }
        if !config.hidden.is_multiple_of(config.n_heads) {
            anyhow::bail!(
                "{} heads do not divide the width {}",
                config.n_heads,
                config.hidden
            );
        }
        Ok(Self {
            config,
            device: device.clone(),
            token_embd,
            position_embd,
            token_types,
            embd_norm,
            layers,
        })
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
        let (q, k, v) = (split(q)?, split(k)?, split(v)?);
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
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                l.q.bytes()
                    + l.k.bytes()
                    + l.v.bytes()
                    + l.output.bytes()
                    + l.attn_norm.bytes()
                    + l.up.bytes()
                    + l.down.bytes()
                    + l.out_norm.bytes()
            })
            .sum();
        tensor_bytes(&self.token_embd)
            + tensor_bytes(&self.position_embd)
            + tensor_bytes(&self.token_types)
            + self.embd_norm.bytes()
            + layers
    }

    fn embed(&self, texts: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let lens: Vec<usize> = texts.iter().map(|t| t.len()).collect();
        let vocab = self.token_embd.dim(0)?;
        let positions = self.position_embd.dim(0)?;
        for (i, text) in texts.iter().enumerate() {
            if text.is_empty() || text.len() > positions {
                candle_core::bail!(
                    "text {i} has {} tokens; this model takes 1 to {positions}",
                    text.len()
                );
            }
            if let Some(bad) = text.iter().find(|&&id| id as usize >= vocab) {
                candle_core::bail!("token id {bad} is outside the vocabulary of {vocab}");
            }
        }
        let ids: Vec<u32> = texts.iter().flat_map(|t| t.iter().copied()).collect();
        let pos: Vec<u32> = lens.iter().flat_map(|&n| 0..n as u32).collect();
        let dev = &self.device;
        // Every token is of the first segment (type 0), as for a single text in BERT.
        let x = self
            .token_embd
            .index_select(&Tensor::new(ids.as_slice(), dev)?, 0)?
            .add(
                &self
                    .position_embd
                    .index_select(&Tensor::new(pos.as_slice(), dev)?, 0)?,
            )?
            .broadcast_add(&self.token_types.get(0)?)?;
        let eps = self.config.norm_eps;
        let mut x = self.embd_norm.forward(&x, eps)?;
        for layer in &self.layers {
            let (q, k, v) = (
                layer.q.forward(&x)?,
                layer.k.forward(&x)?,
                layer.v.forward(&x)?,
            );
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
            let h = layer.up.forward(&x)?.gelu_erf()?;
            x = layer
                .out_norm
                .forward(&(&x + layer.down.forward(&h)?)?, eps)?;
        }
        let mut start = 0;
        let mut vectors = Vec::with_capacity(texts.len());
        for &len in &lens {
            let rows = x.narrow(0, start, len)?;
            let pooled = match self.config.pooling {
                Pooling::Mean => rows.mean(0)?,
                Pooling::Cls => rows.get(0)?,
                Pooling::Last => rows.get(len - 1)?,
            };
            vectors.push(normalize(pooled.to_dtype(DType::F32)?.to_vec1::<f32>()?));
            start += len;
        }
        Ok(vectors)
    }
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
    fn pooling_types_are_llama_cpp_s() {
        assert_eq!(Pooling::from_gguf(Some(1)).unwrap(), Pooling::Mean);
        assert_eq!(Pooling::from_gguf(Some(2)).unwrap(), Pooling::Cls);
        assert_eq!(Pooling::from_gguf(Some(3)).unwrap(), Pooling::Last);
        assert!(Pooling::from_gguf(Some(0)).is_err());
        assert!(Pooling::from_gguf(None).is_err());
    }
}
