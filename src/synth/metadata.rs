//! The GGUF metadata of a synthetic file: the real model's hyper-parameters and tokenizer
//! keys (what wick's loader and llama.cpp read), a synthetic vocabulary, and keys that say
//! the weights are random.

use candle_core::quantized::gguf_file::Value;

use super::shapes::{Meta, ModelShape};
use super::vocab::Vocab;

/// Marks a file made by `wick synth-gguf`; wick warns when it loads one.
pub use crate::model::SYNTHETIC_KEY;

/// `general.name` of a synthetic copy of `shape`.
pub fn synthetic_name(shape: &ModelShape) -> String {
    format!("SYNTHETIC random weights, shape of {}", shape.title)
}

/// Every key, in the order written.
pub fn build(shape: &ModelShape, n_layers: usize, seed: u64) -> Vec<(String, Value)> {
    let arch = shape.architecture;
    let u32_of = |n: usize| Value::U32(n as u32);
    let strings = |items: Vec<String>| Value::Array(items.into_iter().map(Value::String).collect());
    let t = &shape.tokenizer;
    let vocab = Vocab::build(t.segments);
    let mut keys: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        ("general.name".into(), Value::String(synthetic_name(shape))),
        ("general.file_type".into(), Value::U32(shape.file_type)),
        ("general.quantization_version".into(), Value::U32(2)),
        (format!("{arch}.block_count"), u32_of(n_layers)),
        (
            format!("{arch}.context_length"),
            u32_of(shape.context_length),
        ),
        (format!("{arch}.embedding_length"), u32_of(shape.hidden)),
        (format!("{arch}.feed_forward_length"), u32_of(shape.ffn)),
        (
            format!("{arch}.attention.head_count"),
            u32_of(shape.n_heads),
        ),
        (
            format!("{arch}.attention.head_count_kv"),
            u32_of(shape.n_kv_heads),
        ),
        (
            format!("{arch}.attention.layer_norm_rms_epsilon"),
            Value::F32(shape.rms_eps),
        ),
        (
            format!("{arch}.rope.freq_base"),
            Value::F32(shape.rope_base),
        ),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String(t.pre.into())),
        ("tokenizer.ggml.tokens".into(), strings(vocab.tokens)),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(vocab.types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.merges".into(), strings(vocab.merges)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(t.bos)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(t.eos)),
        (
            "tokenizer.ggml.padding_token_id".into(),
            Value::U32(t.padding),
        ),
        (
            "tokenizer.ggml.add_bos_token".into(),
            Value::Bool(t.add_bos),
        ),
        (
            "tokenizer.chat_template".into(),
            Value::String(t.chat_template.into()),
        ),
    ];
    keys.extend(shape.extra.iter().map(|&(key, meta)| {
        let value = match meta {
            Meta::U32(n) => Value::U32(n),
            Meta::Bool(b) => Value::Bool(b),
        };
        (key.to_string(), value)
    }));
    keys.extend([
        (SYNTHETIC_KEY.into(), Value::Bool(true)),
        (
            format!("{SYNTHETIC_KEY}.like"),
            Value::String(shape.id.into()),
        ),
        (format!("{SYNTHETIC_KEY}.seed"), Value::U64(seed)),
    ]);
    keys
}
