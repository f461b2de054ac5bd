//! The llama family of decoders: pre-norm attention with grouped-query heads and rotary
//! positions, then a SwiGLU feed-forward layer. Members differ only in the options of
//! [`Variant`]:
//!
//! - `llama` (SmolLM2 among others): rotary on adjacent pairs, no biases.
//! - `qwen2` (Qwen2.5, Qwen2.5-Coder): rotary on halves (GPT-NeoX style, as llama.cpp's
//!   `LLAMA_ROPE_TYPE_NEOX`), and biases on the q, k and v projections.
//! - `qwen3` (Qwen3): rotary on halves, no biases, and an RMS norm of each q and k head
//!   before rotary (`attn_q_norm`, `attn_k_norm`).
//!
//! - `phi3` (Phi-3, Phi-3.5, Phi-4): rotary on halves, q, k and v in one fused matrix
//!   (`attn_qkv`) and gate and up in another (`ffn_up`, gate first), which are cut apart
//!   after the product; LongRoPE for long contexts (below). Its GGUFs may state a sliding
//!   window, which llama.cpp ignores for phi3 (and so does wick: the reference).
//!
//! A `rope_freqs.weight` tensor (Llama 3.1 and later) divides each rotary pair's frequency,
//! which is how their GGUFs carry the rope scaling for long contexts. Phi-3's LongRoPE
//! carries two such sets, `rope_factors_short` and `rope_factors_long`: as llama.cpp does,
//! the long ones serve when the served context is longer than
//! `rope.scaling.original_context_length`, and `rope.scaling.attn_factor` scales the
//! rotated q and k (so the scores by its square).
//!
//! A llama GGUF that states `llama.attention.sliding_window` (Mistral 7B v0.1's 4096) gets
//! that window on every layer.
//!
//! All tie the output projection to the token embeddings when the GGUF has no
//! `output.weight` (SmolLM2, small Qwen exports).

use candle_core::{Device, Result, Tensor};

use super::decoder::{self, Attention, Ends, Reader, StepTensors};
use super::gguf::GgufModel;
use super::kv_cache::KvPool;
use super::ops::{self, RopeStyle, RopeTables};
use super::quant::{Linear, LinearGroup};
use super::{Model, ModelConfig, SeqChunk};

/// What sets one member of the family apart from another.
#[derive(Debug, Clone, Copy)]
pub struct Variant {
    pub rope: RopeStyle,
    /// Whether q, k and v projections carry a bias (qwen2 does).
    pub qkv_bias: bool,
    /// Whether each q and k head is RMS-normed before rotary (qwen3 does).
    pub qk_norm: bool,
}

impl Variant {
    pub const LLAMA: Variant = Variant {
        rope: RopeStyle::Interleaved,
        qkv_bias: false,
        qk_norm: false,
    };
    pub const QWEN2: Variant = Variant {
        rope: RopeStyle::Halves,
        qkv_bias: true,
        qk_norm: false,
    };
    pub const QWEN3: Variant = Variant {
        rope: RopeStyle::Halves,
        qkv_bias: false,
        qk_norm: true,
    };
    pub const PHI3: Variant = Variant {
        rope: RopeStyle::Halves,
        qkv_bias: false,
        qk_norm: false,
    };
}

/// The outputs of a group of projections of one input as `N` tensors: a group of `N`
/// matrices gives them as they are; one fused matrix (phi3's `attn_qkv`, `ffn_up`) gives one
/// tensor, cut along its last dimension into `sizes`.
fn unfuse<const N: usize>(outputs: Vec<Tensor>, sizes: [usize; N]) -> Result<[Tensor; N]> {
    if outputs.len() == N {
        return Ok(outputs.try_into().expect("N outputs"));
    }
    let fused = &outputs[0];
    let last = fused.rank() - 1;
    let mut start = 0;
    let mut parts = Vec::with_capacity(N);
    for size in sizes {
        parts.push(fused.narrow(last, start, size)?.contiguous()?);
        start += size;
    }
    Ok(parts.try_into().expect("N parts"))
}

struct Layer {
    attn_norm: Tensor,
    /// q, k and v projections.
    qkv: LinearGroup,
    bias: Option<[Tensor; 3]>,
    /// The q and k head norms (qwen3).
    qk_norm: Option<[Tensor; 2]>,
    wo: Linear,
    ffn_norm: Tensor,
    /// gate and up projections.
    gate_up: LinearGroup,
    w_down: Linear,
}

pub struct Llama {
    config: ModelConfig,
    device: Device,
    ends: Ends,
    layers: Vec<Layer>,
    rope: RopeTables,
    /// Mistral-style sliding window on every layer, where the GGUF states one.
    window: Option<usize>,
}

impl Llama {
    pub fn load(
        gguf: &mut GgufModel,
        config: ModelConfig,
        variant: Variant,
        max_positions: usize,
        device: &Device,
    ) -> Result<Self> {
        let arch = config.architecture.clone();
        let meta = |key: &str| {
            gguf.content()
                .metadata
                .get(&format!("{arch}.{key}"))
                .cloned()
        };
        let original_context = meta("rope.scaling.original_context_length")
            .and_then(|v| v.to_u32().ok())
            .map_or(config.context_length, |c| c as usize);
        let attn_factor = meta("rope.scaling.attn_factor")
            .and_then(|v| v.to_f32().ok())
            .unwrap_or(1.0);
        // llama.cpp reads a sliding window for none of this family but Phi-3, whose it
        // turns off; Mistral-style llama files keep theirs.
        let window = match arch.as_str() {
            "llama" => meta("attention.sliding_window")
                .and_then(|v| v.to_u32().ok())
                .filter(|&w| w > 0)
                .map(|w| w as usize),
            _ => None,
        };
        let mut r = Reader { gguf, device };
        let ends = Ends::load(&mut r)?;
        let mut layers = Vec::with_capacity(config.n_layers);
        for i in 0..config.n_layers {
            let p = format!("blk.{i}");
            let bias = if variant.qkv_bias {
                Some([
                    r.f32(&format!("{p}.attn_q.bias"))?,
                    r.f32(&format!("{p}.attn_k.bias"))?,
                    r.f32(&format!("{p}.attn_v.bias"))?,
                ])
            } else {
                None
            };
            let qk_norm = if variant.qk_norm {
                Some([
                    r.f32(&format!("{p}.attn_q_norm.weight"))?,
                    r.f32(&format!("{p}.attn_k_norm.weight"))?,
                ])
            } else {
                None
            };
            layers.push(Layer {
                attn_norm: r.f32(&format!("{p}.attn_norm.weight"))?,
                qkv: LinearGroup::new(match r.has(&format!("{p}.attn_qkv.weight")) {
                    true => vec![r.linear(&format!("{p}.attn_qkv.weight"))?],
                    false => vec![
                        r.linear(&format!("{p}.attn_q.weight"))?,
                        r.linear(&format!("{p}.attn_k.weight"))?,
                        r.linear(&format!("{p}.attn_v.weight"))?,
                    ],
                }),
                bias,
                qk_norm,
                wo: r.linear(&format!("{p}.attn_output.weight"))?,
                ffn_norm: r.f32(&format!("{p}.ffn_norm.weight"))?,
                gate_up: LinearGroup::new(match r.has(&format!("{p}.ffn_gate.weight")) {
                    true => vec![
                        r.linear(&format!("{p}.ffn_gate.weight"))?,
                        r.linear(&format!("{p}.ffn_up.weight"))?,
                    ],
                    false => vec![r.linear(&format!("{p}.ffn_up.weight"))?],
                }),
                w_down: r.linear(&format!("{p}.ffn_down.weight"))?,
            });
        }
        let factors = if r.has("rope_freqs.weight") {
            Some("rope_freqs.weight")
        } else if r.has("rope_factors_long.weight") {
            Some(match max_positions > original_context {
                true => "rope_factors_long.weight",
                false => "rope_factors_short.weight",
            })
        } else {
            None
        };
        let divisors = match factors {
            Some(name) => r.f32(name)?.to_vec1::<f32>()?,
            None => vec![1.0; config.head_dim / 2],
        };
        let rope = RopeTables::with_divisors(
            config.head_dim,
            max_positions,
            config.rope_base,
            &divisors,
            variant.rope,
            device,
        )?
        .with_magnitude(attn_factor)?;
        Ok(Self {
            config,
            device: device.clone(),
            ends,
            layers,
            rope,
            window,
        })
    }
}

impl Model for Llama {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn device(&self) -> &Device {
        &self.device
    }

    /// Every weight's bytes; tied embeddings are the output matrix, counted once.
    fn weight_bytes(&self) -> usize {
        use super::quant::tensor_bytes;
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                let bias: usize = l.bias.iter().flatten().map(tensor_bytes).sum::<usize>()
                    + l.qk_norm.iter().flatten().map(tensor_bytes).sum::<usize>();
                tensor_bytes(&l.attn_norm)
                    + l.qkv.bytes()
                    + bias
                    + l.wo.bytes()
                    + tensor_bytes(&l.ffn_norm)
                    + l.gate_up.bytes()
                    + l.w_down.bytes()
            })
            .sum();
        self.ends.bytes() + layers
    }

    fn forward(&self, batch: &[SeqChunk<'_>], kv: &KvPool) -> Result<Tensor> {
        let x = self.layers_output(batch, kv)?;
        self.ends.logits(&x, batch, &self.config, &self.device)
    }

    fn hidden_states(&self, batch: &[SeqChunk<'_>], kv: &KvPool) -> Result<Tensor> {
        let x = self.layers_output(batch, kv)?;
        self.ends.final_norm(&x, &self.config)
    }
}

impl Llama {
    /// The residual stream after the last layer, `[tokens of the batch, hidden]`.
    fn layers_output(&self, batch: &[SeqChunk<'_>], kv: &KvPool) -> Result<Tensor> {
        let eps = self.config.rms_eps;
        let mut x = self.ends.embed(batch, &self.device)?;
        let step = StepTensors::new(batch, kv, &self.device)?;
        let attention = Attention {
            config: &self.config,
            device: &self.device,
            rope: &self.rope,
            window: self.window,
            softcap: None,
        };
        for (index, layer) in self.layers.iter().enumerate() {
            let h = ops::rms_norm(&x, &layer.attn_norm, eps)?;
            let (q_size, kv_size) = (
                self.config.n_heads * self.config.head_dim,
                self.config.n_kv_heads * self.config.head_dim,
            );
            let [mut q, mut k, mut v] = unfuse(layer.qkv.forward(&h)?, [q_size, kv_size, kv_size])?;
            if let Some([bq, bk, bv]) = &layer.bias {
                q = q.broadcast_add(bq)?;
                k = k.broadcast_add(bk)?;
                v = v.broadcast_add(bv)?;
            }
            if let Some([q_norm, k_norm]) = &layer.qk_norm {
                q = decoder::head_norm(&q, q_norm, self.config.head_dim, eps)?;
                k = decoder::head_norm(&k, k_norm, self.config.head_dim, eps)?;
            }
            let att = attention.run(index, &q, &k, &v, batch, kv, &step)?;
            x = (x + layer.wo.forward(&att)?)?;
            let h = ops::rms_norm(&x, &layer.ffn_norm, eps)?;
            let ffn = self.config.ffn;
            let [gate, up] = unfuse(layer.gate_up.forward(&h)?, [ffn, ffn])?;
            let act = ops::swiglu(&gate, &up)?;
            x = (x + layer.w_down.forward(&act)?)?;
        }
        Ok(x)
    }
}
