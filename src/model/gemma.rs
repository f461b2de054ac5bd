//! The Gemma family: Gemma 3 (`gemma3` in the GGUF; the 270M, 1B and text layers of the
//! larger ones) and Gemma 2 (`gemma2`). What sets them apart from the llama family (llama.rs):
//!
//! - token embeddings scaled by `sqrt(hidden)` before the first layer;
//! - four norms a layer: before and after attention, before and after the feed-forward
//!   layer (the GGUF's norm weights already include Gemma's `1 +`);
//! - per-head RMS norms of q and k before rotary (`attn_q_norm`, `attn_k_norm`);
//! - a GeGLU feed-forward layer (tanh-approximated GELU of the gate, times up);
//! - sliding-window attention on five layers of every six (window from
//!   `gemma3.attention.sliding_window`), whose rotary base is 10,000 while the global
//!   layers use `gemma3.rope.freq_base` (with linear scaling where the GGUF asks for it);
//! - rotary on halves (GPT-NeoX style) and tied output embeddings.
//!
//! Gemma 2 differs from Gemma 3: no q/k norms; every other layer (the even ones) slides, all
//! with one rotary base; attention scores and final logits are soft-capped
//! (`cap * tanh(x / cap)`, caps from `gemma2.attn_logit_softcapping` and
//! `gemma2.final_logit_softcapping`).
//!
//! The attention itself, the KV cache and the kernels are shared with llama.rs
//! (decoder.rs, ops.rs, quant/).

use candle_core::{Device, Result, Tensor};

use super::decoder::{self, Attention, Ends, Reader, StepTensors};
use super::gguf::GgufModel;
use super::kv_cache::KvPool;
use super::ops::{self, RopeStyle, RopeTables};
use super::quant::{tensor_bytes, Linear, LinearGroup};
use super::{Model, ModelConfig, SeqChunk};

/// Layers per repeat of the sliding-window pattern: the last of each six is global in Gemma 3,
/// the odd ones in Gemma 2.
const SLIDING_PATTERN: usize = 6;
const SLIDING_PATTERN_GEMMA2: usize = 2;
/// The rotary base of the sliding-window layers when the GGUF does not name one.
const LOCAL_ROPE_BASE: f32 = 10_000.0;

struct Layer {
    attn_norm: Tensor,
    qkv: LinearGroup,
    /// The q and k head norms (Gemma 3).
    qk_norm: Option<[Tensor; 2]>,
    wo: Linear,
    post_attention_norm: Tensor,
    ffn_norm: Tensor,
    gate_up: LinearGroup,
    w_down: Linear,
    post_ffw_norm: Tensor,
    /// Whether this layer attends within the sliding window (else over everything).
    sliding: bool,
}

pub struct Gemma {
    config: ModelConfig,
    device: Device,
    ends: Ends,
    layers: Vec<Layer>,
    rope_global: RopeTables,
    rope_local: RopeTables,
    window: usize,
    /// What q is multiplied by before attention, beyond the shared attention's own
    /// `1/sqrt(head_dim)` (1 for every size but the 27B).
    q_scale: f64,
    /// Gemma 2's soft caps of attention scores and of the final logits.
    attn_softcap: Option<f32>,
    final_softcap: Option<f32>,
}

impl Gemma {
    /// `max_positions`: the longest sequence this server will run (rotary tables are built
    /// that far, not to the 32K or 128K the weights allow).
    pub fn load(
        gguf: &mut GgufModel,
        config: ModelConfig,
        max_positions: usize,
        device: &Device,
    ) -> Result<Self> {
        let arch = config.architecture.clone();
        let content = gguf.content();
        let meta_f32 = |key: &str| {
            content
                .metadata
                .get(&format!("{arch}.{key}"))
                .and_then(|v| v.to_f32().ok())
        };
        let window = content
            .metadata
            .get(&format!("{arch}.attention.sliding_window"))
            .and_then(|v| v.to_u32().ok())
            .map(|w| w as usize)
            .ok_or_else(|| {
                candle_core::Error::Msg(format!("{arch}.attention.sliding_window is missing"))
            })?;
        let gemma2 = arch == "gemma2";
        let pattern = if gemma2 {
            SLIDING_PATTERN_GEMMA2
        } else {
            SLIDING_PATTERN
        };
        let (attn_softcap, final_softcap) = (
            meta_f32("attn_logit_softcapping"),
            meta_f32("final_logit_softcapping"),
        );
        let hd = config.head_dim;
        let linear_scaling = content
            .metadata
            .get(&format!("{arch}.rope.scaling.type"))
            .and_then(|v| v.to_string().ok())
            .is_some_and(|t| t == "linear");
        let factor = if linear_scaling {
            meta_f32("rope.scaling.factor").unwrap_or(1.0)
        } else {
            1.0
        };
        // Gemma 2's sliding layers rotate as its global ones do, unless the GGUF says.
        let local_base = meta_f32("rope.freq_base_swa").unwrap_or(match gemma2 {
            true => config.rope_base,
            false => LOCAL_ROPE_BASE,
        });
        let mut r = Reader { gguf, device };
        let ends = Ends::load(&mut r)?;
        let mut layers = Vec::with_capacity(config.n_layers);
        for i in 0..config.n_layers {
            let p = format!("blk.{i}");
            let mut f32 = |name: &str| r.f32(&format!("{p}.{name}.weight"));
            let attn_norm = f32("attn_norm")?;
            let qk_norm = if gemma2 {
                None
            } else {
                Some([f32("attn_q_norm")?, f32("attn_k_norm")?])
            };
            let (post_attention_norm, ffn_norm, post_ffw_norm) = (
                f32("post_attention_norm")?,
                f32("ffn_norm")?,
                f32("post_ffw_norm")?,
            );
            let mut linear = |name: &str| r.linear(&format!("{p}.{name}.weight"));
            layers.push(Layer {
                attn_norm,
                qkv: LinearGroup::new(vec![
                    linear("attn_q")?,
                    linear("attn_k")?,
                    linear("attn_v")?,
                ]),
                qk_norm,
                wo: linear("attn_output")?,
                post_attention_norm,
                ffn_norm,
                gate_up: LinearGroup::new(vec![linear("ffn_gate")?, linear("ffn_up")?]),
                w_down: linear("ffn_down")?,
                post_ffw_norm,
                sliding: i % pattern < pattern - 1,
            });
        }
        let rope_global = RopeTables::scaled(
            hd,
            max_positions,
            config.rope_base,
            factor,
            RopeStyle::Halves,
            device,
        )?;
        let rope_local = RopeTables::new(hd, max_positions, local_base, RopeStyle::Halves, device)?;
        // Queries are scaled by 1/sqrt(head_dim), except in the 27Bs (Gemma 2: 46 layers,
        // Gemma 3: 62), whose query_pre_attn_scalar is hidden / heads (as llama.cpp reads them).
        let is_27b = config.n_layers == if gemma2 { 46 } else { 62 };
        let q_scale = if is_27b {
            let wanted = 1.0 / ((config.hidden / config.n_heads) as f64).sqrt();
            wanted * (hd as f64).sqrt()
        } else {
            1.0
        };
        Ok(Self {
            config,
            device: device.clone(),
            ends,
            layers,
            rope_global,
            rope_local,
            window,
            q_scale,
            attn_softcap,
            final_softcap,
        })
    }
}

impl Model for Gemma {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn weight_bytes(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                let norms = [
                    &l.attn_norm,
                    &l.post_attention_norm,
                    &l.ffn_norm,
                    &l.post_ffw_norm,
                ];
                norms.into_iter().map(tensor_bytes).sum::<usize>()
                    + l.qk_norm.iter().flatten().map(tensor_bytes).sum::<usize>()
                    + l.qkv.bytes()
                    + l.wo.bytes()
                    + l.gate_up.bytes()
                    + l.w_down.bytes()
            })
            .sum();
        self.ends.bytes() + layers
    }

    fn forward(&self, batch: &[SeqChunk<'_>], kv: &KvPool) -> Result<Tensor> {
        let x = self.layers_output(batch, kv)?;
        let logits = self.ends.logits(&x, batch, &self.config, &self.device)?;
        match self.final_softcap {
            Some(cap) => (logits / cap as f64)?.tanh()? * cap as f64,
            None => Ok(logits),
        }
    }

    fn hidden_states(&self, batch: &[SeqChunk<'_>], kv: &KvPool) -> Result<Tensor> {
        let x = self.layers_output(batch, kv)?;
        self.ends.final_norm(&x, &self.config)
    }
}

impl Gemma {
    /// The residual stream after the last layer, `[tokens of the batch, hidden]`.
    fn layers_output(&self, batch: &[SeqChunk<'_>], kv: &KvPool) -> Result<Tensor> {
        let c = &self.config;
        let eps = c.rms_eps;
        let x = self.ends.embed(batch, &self.device)?;
        let mut x = (x * (c.hidden as f64).sqrt())?;
        let step = StepTensors::new(batch, kv, &self.device)?;
        for (index, layer) in self.layers.iter().enumerate() {
            let h = ops::rms_norm(&x, &layer.attn_norm, eps)?;
            let [mut q, mut k, v]: [Tensor; 3] = layer
                .qkv
                .forward(&h)?
                .try_into()
                .expect("three projections");
            if let Some([q_norm, k_norm]) = &layer.qk_norm {
                q = decoder::head_norm(&q, q_norm, c.head_dim, eps)?;
                k = decoder::head_norm(&k, k_norm, c.head_dim, eps)?;
            }
            if self.q_scale != 1.0 {
                q = (q * self.q_scale)?;
            }
            let attention = Attention {
                config: c,
                device: &self.device,
                rope: if layer.sliding {
                    &self.rope_local
                } else {
                    &self.rope_global
                },
                window: layer.sliding.then_some(self.window),
                softcap: self.attn_softcap,
            };
            let att = attention.run(index, &q, &k, &v, batch, kv, &step)?;
            let att = ops::rms_norm(&layer.wo.forward(&att)?, &layer.post_attention_norm, eps)?;
            x = (x + att)?;
            let h = ops::rms_norm(&x, &layer.ffn_norm, eps)?;
            let [gate, up]: [Tensor; 2] = layer
                .gate_up
                .forward(&h)?
                .try_into()
                .expect("two projections");
            let ffn = layer.w_down.forward(&(gate.gelu()? * up)?)?;
            x = (x + ops::rms_norm(&ffn, &layer.post_ffw_norm, eps)?)?;
        }
        Ok(x)
    }
}
