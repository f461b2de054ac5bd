//! wick's own model code on candle tensors: one file per architecture family, all shaped for
//! batching. A step takes a batch of sequences, each with its new tokens, its start position
//! and its KV slot, and returns logits only for the sequences that will sample.
//!
//! Architectures (`general.architecture` in the GGUF): `llama`, `qwen2` and `qwen3`, run by
//! [`llama::Llama`] with their own [`llama::Variant`]; `gemma2` and `gemma3` by [`gemma::Gemma`]. What
//! they share (tensor reading, embeddings, attention over the cache) is in [`decoder`]. Hyper-parameters are read from the
//! keys under the architecture's own prefix (`llama.block_count`, `qwen2.rope.freq_base`, ...).
//!
//! Embedding models (`bert`, `nomic-bert`) are encoders: [`Encoder`] takes a batch of whole
//! texts and returns one pooled vector each ([`bert::Bert`], with its own [`bert::Variant`]);
//! they have no KV cache and do not generate.

pub mod bert;
pub mod cuda;
pub mod decoder;
pub mod gemma;
pub mod gguf;
pub mod kv_cache;
pub mod llama;
pub mod ops;
pub mod quant;

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};

use crate::catalog::ModelEntry;
use crate::template::ChatTemplate;
use crate::tokenizer::Tokenizer;
pub use kv_cache::{KvPool, KvShape};

/// One sequence's part of a batched step.
#[derive(Debug, Clone, Copy)]
pub struct SeqChunk<'a> {
    /// Its KV slot in the pool.
    pub slot: usize,
    /// Position of `tokens[0]`: how many tokens the slot already holds.
    pub start: usize,
    /// New tokens: one for a decode step, a chunk of the prompt for prefill.
    pub tokens: &'a [u32],
    /// Whether to return logits for its last token (false for a prefill chunk that is not
    /// the prompt's last).
    pub want_logits: bool,
}

/// Hyper-parameters read from the GGUF metadata.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub architecture: String,
    pub n_layers: usize,
    pub hidden: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Width of the feed-forward layer (`feed_forward_length`).
    pub ffn: usize,
    pub vocab_size: usize,
    pub rope_base: f32,
    pub rms_eps: f32,
    /// The context the weights were trained for.
    pub context_length: usize,
    /// `{arch}.pooling_type`: a decoder trained to embed (Qwen3-Embedding: 3, the last
    /// token) says how its token vectors are pooled; chat models have none.
    pub pooling_type: Option<u32>,
}

impl ModelConfig {
    fn from_gguf(ct: &gguf_file::Content) -> anyhow::Result<Self> {
        let arch = meta(ct, "general.architecture")?.to_string()?.clone();
        let key = |k: &str| format!("{arch}.{k}");
        let usize_of = |k: &str| -> anyhow::Result<usize> {
            let v = meta(ct, &key(k))?;
            Ok(v.to_u32()
                .map(|v| v as usize)
                .or_else(|_| v.to_u64().map(|v| v as usize))?)
        };
        let f32_of = |k: &str, default: f32| -> f32 {
            ct.metadata
                .get(&key(k))
                .and_then(|v| v.to_f32().ok())
                .unwrap_or(default)
        };
        let hidden = usize_of("embedding_length")?;
        let n_heads = usize_of("attention.head_count")?;
        let n_kv_heads = usize_of("attention.head_count_kv").unwrap_or(n_heads);
        let head_dim = usize_of("attention.key_length").unwrap_or(hidden / n_heads);
        // Rotary on part of each head (Phi-4-mini: 96 of 128) is not implemented: refuse it
        // rather than rotate the wrong dimensions.
        if let Ok(rotary) = usize_of("rope.dimension_count") {
            if rotary != head_dim {
                bail!(
                    "{arch}.rope.dimension_count is {rotary} but heads have {head_dim} \
                     dimensions: partial rotary embeddings are not supported yet"
                );
            }
        }
        let vocab_size = match usize_of("vocab_size") {
            Ok(v) => v,
            Err(_) => meta(ct, "tokenizer.ggml.tokens")?.to_vec()?.len(),
        };
        Ok(Self {
            n_layers: usize_of("block_count")?,
            hidden,
            n_heads,
            n_kv_heads,
            head_dim,
            ffn: usize_of("feed_forward_length")?,
            vocab_size,
            rope_base: f32_of("rope.freq_base", 10_000.0),
            rms_eps: f32_of("attention.layer_norm_rms_epsilon", 1e-5),
            context_length: usize_of("context_length")?,
            pooling_type: usize_of("pooling_type").ok().map(|t| t as u32),
            architecture: arch,
        })
    }
}

fn meta<'a>(ct: &'a gguf_file::Content, key: &str) -> anyhow::Result<&'a gguf_file::Value> {
    ct.metadata
        .get(key)
        .with_context(|| format!("GGUF metadata has no `{key}`"))
}

/// What runs a step. The engine owns it; nothing else calls it.
pub trait Model: Send {
    fn config(&self) -> &ModelConfig;
    fn device(&self) -> &Device;
    /// Run one batched step; returns `[number of chunks with want_logits, vocab]` logits (f32).
    fn forward(&self, batch: &[SeqChunk<'_>], kv: &KvPool) -> candle_core::Result<Tensor>;
    /// Run one batched step as [`Model::forward`] does, but return every token's vector
    /// after the final norm, `[tokens of the batch, hidden]` (f32), instead of logits: what
    /// pooled embeddings are made of (src/engine/pooled.rs).
    fn hidden_states(&self, batch: &[SeqChunk<'_>], kv: &KvPool) -> candle_core::Result<Tensor>;
    /// Bytes of weights held (in the layout the kernels read: wick's panels, candle's
    /// tensors), for /health and /metrics.
    fn weight_bytes(&self) -> usize;
}

/// What the request path needs to turn messages into token ids (shared with handlers;
/// holds no weights).
pub struct ModelFrontend {
    pub id: String,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
    /// Tokens a request may use, prompt and completion together.
    pub context_length: usize,
}

/// A model read from disk: the weights for the engine, the rest for the request path.
pub struct LoadedModel {
    pub weights: Box<dyn Model>,
    pub frontend: Arc<ModelFrontend>,
}

/// An embedding model: whole texts in, one vector each out (pooled and of length 1). The
/// engine's embedder owns it; nothing else calls it.
pub trait Encoder: Send {
    fn config(&self) -> &bert::EncoderConfig;
    /// One vector per text, in order; every token of every text is in one step.
    fn embed(&self, texts: &[&[u32]]) -> candle_core::Result<Vec<Vec<f32>>>;
    /// Bytes of weights held, for /health and the memory budget.
    fn weight_bytes(&self) -> usize;
}

/// An embedding model read from disk: the weights for the engine's embedder, the tokenizer
/// (and a placeholder template) for the request path.
pub struct LoadedEncoder {
    pub weights: Box<dyn Encoder>,
    pub frontend: Arc<ModelFrontend>,
}

/// The `general.architecture` values wick runs as embedding models.
pub const ENCODER_ARCHITECTURES: [&str; 2] = ["bert", "nomic-bert"];

/// Whether the GGUF at `path` is an embedding model (an architecture of
/// [`ENCODER_ARCHITECTURES`]) rather than a decoder.
pub fn is_encoder(path: &Path) -> anyhow::Result<bool> {
    let header = gguf::read_header(path)?;
    let arch = meta(&header, "general.architecture")?.to_string()?;
    Ok(ENCODER_ARCHITECTURES.contains(&arch.as_str()))
}

/// Load an embedding model's GGUF for a catalog entry.
pub fn load_encoder(
    path: &Path,
    entry: &ModelEntry,
    device: &Device,
) -> anyhow::Result<LoadedEncoder> {
    let mut gguf = gguf::GgufModel::open(path)?;
    if is_synthetic(gguf.content()) {
        // Its vectors are noise: say so where they are served.
        tracing::warn!(
            model = %entry.id,
            "RANDOM WEIGHTS (a test GGUF): its vectors mean nothing; label any figure \"random weights\""
        );
    }
    let tokenizer = match &entry.tokenizer_json {
        Some(json) => Tokenizer::from_file(json, Some(gguf.content()))?,
        None => Tokenizer::from_gguf(gguf.content())?,
    };
    let weights = bert::Bert::load(&mut gguf, device)?;
    let config = Encoder::config(&weights).clone();
    // It never renders a chat; a template is kept only because the frontend's shape has one.
    let template = ChatTemplate::new(
        crate::template::CHATML,
        tokenizer.bos_token(),
        tokenizer.eos_token(),
    )?;
    let context_length = entry.context_length.min(config.context_length);
    tracing::info!(
        model = %entry.id,
        arch = %config.architecture,
        layers = config.n_layers,
        dimensions = config.hidden,
        pooling = ?config.pooling,
        context_length,
        "embedding model loaded"
    );
    Ok(LoadedEncoder {
        weights: Box::new(weights),
        frontend: Arc::new(ModelFrontend {
            id: entry.id.clone(),
            tokenizer,
            template,
            context_length,
        }),
    })
}

/// The `general.architecture` values wick runs.
pub const ARCHITECTURES: [&str; 6] = ["llama", "qwen2", "qwen3", "phi3", "gemma2", "gemma3"];

/// The metadata key that marks a GGUF of random weights (written by `wick synth-gguf`, or by
/// scripts/embedding-gguf/random_nomic_gguf.py for a test).
pub const SYNTHETIC_KEY: &str = "wick.synthetic";

/// Whether the GGUF says it holds random weights ([`SYNTHETIC_KEY`]).
fn is_synthetic(content: &gguf_file::Content) -> bool {
    content
        .metadata
        .get(SYNTHETIC_KEY)
        .is_some_and(|v| v.to_bool().unwrap_or(false))
}

/// Load a GGUF file for a catalog entry.
pub fn load(path: &Path, entry: &ModelEntry, device: &Device) -> anyhow::Result<LoadedModel> {
    let mut gguf = gguf::GgufModel::open(path)?;
    let content = gguf.content();
    let config = ModelConfig::from_gguf(content)?;
    if is_synthetic(content) {
        // Its speed is real, its output noise: say so where the measurements are taken.
        tracing::warn!(
            model = %entry.id,
            "RANDOM WEIGHTS (wick synth-gguf): answers are noise; label any figure \"random weights\""
        );
    }

    let tokenizer = match &entry.tokenizer_json {
        Some(json) => Tokenizer::from_file(json, Some(content))?,
        None => Tokenizer::from_gguf(content)?,
    };
    let template_source = match &entry.chat_template {
        Some(source) => source.clone(),
        None => match content.metadata.get("tokenizer.chat_template") {
            Some(v) => v.to_string()?.clone(),
            None => {
                // As llama.cpp's server does: a base model without a template still chats,
                // in ChatML.
                tracing::warn!(
                    model = %entry.id,
                    "the GGUF has no chat template: chat requests use ChatML \
                     (set chat_template in the catalog to choose another)"
                );
                crate::template::CHATML.to_string()
            }
        },
    };
    let template = ChatTemplate::new(
        &template_source,
        tokenizer.bos_token(),
        tokenizer.eos_token(),
    )?;

    let context_length = entry.context_length.min(config.context_length);
    let weights: Box<dyn Model> = match config.architecture.as_str() {
        "llama" | "qwen2" | "qwen3" | "phi3" => {
            let variant = match config.architecture.as_str() {
                "llama" => llama::Variant::LLAMA,
                "qwen2" => llama::Variant::QWEN2,
                "qwen3" => llama::Variant::QWEN3,
                _ => llama::Variant::PHI3,
            };
            Box::new(llama::Llama::load(
                &mut gguf,
                config.clone(),
                variant,
                context_length,
                device,
            )?)
        }
        "gemma2" | "gemma3" => Box::new(gemma::Gemma::load(
            &mut gguf,
            config.clone(),
            context_length,
            device,
        )?),
        other => bail!(
            "architecture '{other}' is not supported yet (supported: {})",
            ARCHITECTURES.join(", ")
        ),
    };
    tracing::info!(
        model = %entry.id,
        arch = %config.architecture,
        layers = config.n_layers,
        context_length,
        "model loaded"
    );
    Ok(LoadedModel {
        weights,
        frontend: Arc::new(ModelFrontend {
            id: entry.id.clone(),
            tokenizer,
            template,
            context_length,
        }),
    })
}
