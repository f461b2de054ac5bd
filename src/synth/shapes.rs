//! The real models a synthetic GGUF copies: hyper-parameters, every tensor's shape and ggml
//! type, and the layout of the vocabulary, as read from the real files (the tests compare
//! this table with them when they are in the model cache).

use candle_core::quantized::GgmlDType;

use super::vocab::Segment;

/// One real model file's shape.
#[derive(Debug)]
pub struct ModelShape {
    /// The real model's catalog id.
    pub id: &'static str,
    /// The real file, in words (`general.name` of the synthetic one says it is a copy of it).
    pub title: &'static str,
    /// `general.architecture`: the prefix of the hyper-parameter keys.
    pub architecture: &'static str,
    pub n_layers: usize,
    pub hidden: usize,
    pub ffn: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub vocab: usize,
    pub context_length: usize,
    pub rope_base: f32,
    pub rms_eps: f32,
    /// Whether q, k and v carry biases (qwen2 does).
    pub qkv_bias: bool,
    /// `general.file_type` (llama.cpp's `llama_ftype`: 15 is Q4_K_M, 3 is Q4_1).
    pub file_type: u32,
    pub token_embd: GgmlDType,
    /// `None`: no `output.weight`, the output projection is tied to the embeddings.
    pub output: Option<GgmlDType>,
    pub layers: LayerQuants,
    /// Other keys of the real file that wick or llama.cpp read, as they are there.
    pub extra: &'static [(&'static str, Meta)],
    pub tokenizer: TokenizerShape,
}

/// A scalar metadata value of the table.
#[derive(Debug, Clone, Copy)]
pub enum Meta {
    U32(u32),
    Bool(bool),
}

/// The tokenizer keys of the real file, and where its special tokens sit.
#[derive(Debug)]
pub struct TokenizerShape {
    /// `tokenizer.ggml.pre`: the pre-tokenizer's name.
    pub pre: &'static str,
    /// The vocabulary, in id order.
    pub segments: &'static [Segment],
    pub bos: u32,
    pub eos: u32,
    pub padding: u32,
    pub add_bos: bool,
    /// `tokenizer.chat_template`, byte for byte.
    pub chat_template: &'static str,
}

/// The ggml type of one kind of layer matrix: `base`, except in the layers `raised` lists
/// (llama.cpp's Q4_K_M gives attn_v and ffn_down more bits in some layers).
#[derive(Debug, Clone, Copy)]
pub struct LayerQuant {
    pub base: GgmlDType,
    pub raised: Option<(GgmlDType, &'static [usize])>,
}

impl LayerQuant {
    pub const fn all(dtype: GgmlDType) -> Self {
        Self {
            base: dtype,
            raised: None,
        }
    }

    pub fn at(&self, layer: usize) -> GgmlDType {
        match self.raised {
            Some((dtype, layers)) if layers.contains(&layer) => dtype,
            _ => self.base,
        }
    }
}

/// The type of each matrix of a layer.
#[derive(Debug, Clone, Copy)]
pub struct LayerQuants {
    pub attn_q: LayerQuant,
    pub attn_k: LayerQuant,
    pub attn_v: LayerQuant,
    pub attn_output: LayerQuant,
    pub ffn_gate: LayerQuant,
    pub ffn_up: LayerQuant,
    pub ffn_down: LayerQuant,
}

impl LayerQuants {
    const fn all(dtype: GgmlDType) -> Self {
        let q = LayerQuant::all(dtype);
        Self {
            attn_q: q,
            attn_k: q,
            attn_v: q,
            attn_output: q,
            ffn_gate: q,
            ffn_up: q,
            ffn_down: q,
        }
    }
}

/// How a tensor's values are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// A weight matrix or an embedding table.
    Weight,
    /// An RMS norm's scale.
    Norm,
    Bias,
}

/// One tensor of a file: dims in candle's order (`[rows, columns]`).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub dims: Vec<usize>,
    pub dtype: GgmlDType,
    pub init: Init,
}

impl ModelShape {
    pub fn head_dim(&self) -> usize {
        self.hidden / self.n_heads
    }

    /// Every tensor of a file with the first `n_layers` layers, in the real file's order
    /// within a layer; each layer keeps the real layer's types.
    pub fn tensors(&self, n_layers: usize) -> Vec<TensorSpec> {
        let spec = |name: String, dims: &[usize], dtype, init| TensorSpec {
            name,
            dims: dims.to_vec(),
            dtype,
            init,
        };
        let (h, f) = (self.hidden, self.ffn);
        let q_dim = self.n_heads * self.head_dim();
        let kv_dim = self.n_kv_heads * self.head_dim();
        let mut out = Vec::new();
        if let Some(dtype) = self.output {
            out.push(spec(
                "output.weight".into(),
                &[self.vocab, h],
                dtype,
                Init::Weight,
            ));
        }
        out.push(spec(
            "token_embd.weight".into(),
            &[self.vocab, h],
            self.token_embd,
            Init::Weight,
        ));
        let q = &self.layers;
        for i in 0..n_layers {
            let name = |part: &str| format!("blk.{i}.{part}");
            out.push(spec(
                name("attn_norm.weight"),
                &[h],
                GgmlDType::F32,
                Init::Norm,
            ));
            out.push(spec(
                name("ffn_down.weight"),
                &[h, f],
                q.ffn_down.at(i),
                Init::Weight,
            ));
            out.push(spec(
                name("ffn_gate.weight"),
                &[f, h],
                q.ffn_gate.at(i),
                Init::Weight,
            ));
            out.push(spec(
                name("ffn_up.weight"),
                &[f, h],
                q.ffn_up.at(i),
                Init::Weight,
            ));
            out.push(spec(
                name("ffn_norm.weight"),
                &[h],
                GgmlDType::F32,
                Init::Norm,
            ));
            let projections = [
                ("attn_k", kv_dim, q.attn_k.at(i)),
                ("attn_output", h, q.attn_output.at(i)),
                ("attn_q", q_dim, q.attn_q.at(i)),
                ("attn_v", kv_dim, q.attn_v.at(i)),
            ];
            for (part, rows, dtype) in projections {
                // attn_output's columns are the heads' outputs; the rest read the hidden state.
                let cols = if part == "attn_output" { q_dim } else { h };
                if self.qkv_bias && part != "attn_output" {
                    out.push(spec(
                        name(&format!("{part}.bias")),
                        &[rows],
                        GgmlDType::F32,
                        Init::Bias,
                    ));
                }
                out.push(spec(
                    name(&format!("{part}.weight")),
                    &[rows, cols],
                    dtype,
                    Init::Weight,
                ));
            }
        }
        out.push(spec(
            "output_norm.weight".into(),
            &[h],
            GgmlDType::F32,
            Init::Norm,
        ));
        out
    }
}

/// Every model a synthetic file can copy.
pub const ALL: [&ModelShape; 2] = [&QWEN2_5_CODER_1_5B_INSTRUCT, &SMOLLM2_135M_INSTRUCT];

pub fn find(id: &str) -> Option<&'static ModelShape> {
    ALL.into_iter().find(|s| s.id == id)
}

/// The layers where the real Q4_K_M file has attn_v and ffn_down in Q6_K (Q4_K elsewhere).
const QWEN_1_5B_Q6K_LAYERS: &[usize] = &[0, 1, 5, 6, 7, 8, 9, 10, 13, 16, 19, 21, 24, 27];

/// Qwen2.5-Coder's special tokens, from id 151643 on, with their GGUF token types
/// (3: control, 4: user-defined).
const QWEN_SPECIALS: &[(&str, i32)] = &[
    ("<|endoftext|>", 3),
    ("<|im_start|>", 3),
    ("<|im_end|>", 3),
    ("<|object_ref_start|>", 3),
    ("<|object_ref_end|>", 3),
    ("<|box_start|>", 3),
    ("<|box_end|>", 3),
    ("<|quad_start|>", 3),
    ("<|quad_end|>", 3),
    ("<|vision_start|>", 3),
    ("<|vision_end|>", 3),
    ("<|vision_pad|>", 3),
    ("<|image_pad|>", 3),
    ("<|video_pad|>", 3),
    ("<tool_call>", 4),
    ("</tool_call>", 4),
    ("<|fim_prefix|>", 3),
    ("<|fim_middle|>", 3),
    ("<|fim_suffix|>", 3),
    ("<|fim_pad|>", 3),
    ("<|repo_name|>", 3),
    ("<|file_sep|>", 3),
];

/// qwen2.5-coder-1.5b-instruct-q4_k_m.gguf (Qwen's own export).
pub const QWEN2_5_CODER_1_5B_INSTRUCT: ModelShape = ModelShape {
    id: "qwen2.5-coder-1.5b-instruct",
    title: "Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
    architecture: "qwen2",
    n_layers: 28,
    hidden: 1536,
    ffn: 8960,
    n_heads: 12,
    n_kv_heads: 2,
    vocab: 151_936,
    context_length: 32_768,
    rope_base: 1_000_000.0,
    rms_eps: 1e-6,
    qkv_bias: true,
    file_type: 15,
    token_embd: GgmlDType::Q4K,
    output: Some(GgmlDType::Q6K),
    layers: LayerQuants {
        attn_v: LayerQuant {
            base: GgmlDType::Q4K,
            raised: Some((GgmlDType::Q6K, QWEN_1_5B_Q6K_LAYERS)),
        },
        ffn_down: LayerQuant {
            base: GgmlDType::Q4K,
            raised: Some((GgmlDType::Q6K, QWEN_1_5B_Q6K_LAYERS)),
        },
        ..LayerQuants::all(GgmlDType::Q4K)
    },
    extra: &[],
    tokenizer: TokenizerShape {
        pre: "qwen2",
        // 151,643 ordinary tokens (the bytes, then merged ones), the specials, then 271
        // unused ids up to the embedding's padded row count.
        segments: &[
            Segment::Bytes,
            Segment::Words(151_387),
            Segment::Specials(QWEN_SPECIALS),
            Segment::Unused(271),
        ],
        bos: 151_643,
        eos: 151_645,
        padding: 151_643,
        add_bos: false,
        chat_template: include_str!("templates/qwen2.5-coder-instruct.jinja"),
    },
};

/// SmolLM2's special tokens, ids 0 to 16, all control tokens.
const SMOLLM2_SPECIALS: &[(&str, i32)] = &[
    ("<|endoftext|>", 3),
    ("<|im_start|>", 3),
    ("<|im_end|>", 3),
    ("<repo_name>", 3),
    ("<reponame>", 3),
    ("<file_sep>", 3),
    ("<filename>", 3),
    ("<gh_stars>", 3),
    ("<issue_start>", 3),
    ("<issue_comment>", 3),
    ("<issue_closed>", 3),
    ("<jupyter_start>", 3),
    ("<jupyter_text>", 3),
    ("<jupyter_code>", 3),
    ("<jupyter_output>", 3),
    ("<jupyter_script>", 3),
    ("<empty_output>", 3),
];

/// SmolLM2-135M-Instruct.Q4_1.gguf (QuantFactory's export).
pub const SMOLLM2_135M_INSTRUCT: ModelShape = ModelShape {
    id: "smollm2-135m-instruct",
    title: "SmolLM2-135M-Instruct Q4_1",
    architecture: "llama",
    n_layers: 30,
    hidden: 576,
    ffn: 1536,
    n_heads: 9,
    n_kv_heads: 3,
    vocab: 49_152,
    context_length: 8192,
    rope_base: 100_000.0,
    rms_eps: 1e-5,
    qkv_bias: false,
    file_type: 3,
    token_embd: GgmlDType::Q8_0,
    output: None,
    layers: LayerQuants::all(GgmlDType::Q4_1),
    extra: &[
        ("llama.rope.dimension_count", Meta::U32(64)),
        ("llama.vocab_size", Meta::U32(49_152)),
        ("tokenizer.ggml.unknown_token_id", Meta::U32(0)),
        ("tokenizer.ggml.add_space_prefix", Meta::Bool(false)),
    ],
    tokenizer: TokenizerShape {
        pre: "smollm",
        segments: &[
            Segment::Specials(SMOLLM2_SPECIALS),
            Segment::Bytes,
            Segment::Words(48_879),
        ],
        bos: 1,
        eos: 2,
        padding: 2,
        add_bos: false,
        chat_template: include_str!("templates/smollm2-instruct.jinja"),
    },
};
