//! Text ↔ token ids: a `tokenizers::Tokenizer` built from a GGUF's own vocabulary (or a
//! tokenizer.json), the ids that end a turn, and an incremental detokenizer for streams.
//!
//! CONTRACT (owned by the tokenizer helper; signatures are fixed, bodies to be written):

use std::path::Path;

use candle_core::quantized::gguf_file;

/// A loaded tokenizer plus the special-token facts the engine and the template need.
pub struct Tokenizer {
    // private fields
}

impl Tokenizer {
    /// Build from GGUF metadata: `tokenizer.ggml.{model,pre,tokens,token_type,merges,
    /// bos_token_id,eos_token_id,eot_token_id,add_bos_token}`. Pre-tokenizer chosen from
    /// `tokenizer.ggml.pre` as llama.cpp does (`smollm`, `qwen2`, `llama-bpe`, `gpt2`/default).
    /// Control tokens (token_type 3) and user-defined ones (4) are added as special tokens so
    /// `<|im_start|>` encodes to one id.
    pub fn from_gguf(_content: &gguf_file::Content) -> anyhow::Result<Self> {
        todo!()
    }

    /// Build from a tokenizer.json; special ids are taken from the GGUF metadata when given.
    pub fn from_file(_path: &Path, _content: Option<&gguf_file::Content>) -> anyhow::Result<Self> {
        todo!()
    }

    /// Encode text, parsing special tokens (`<|im_start|>` → its id). Adds bos only when the
    /// model's `add_bos_token` says so.
    pub fn encode(&self, _text: &str) -> anyhow::Result<Vec<u32>> {
        todo!()
    }

    /// Decode ids to text; special tokens are skipped.
    pub fn decode(&self, _ids: &[u32]) -> anyhow::Result<String> {
        todo!()
    }

    /// The text of the bos / eos tokens (for chat templates), if the model has them.
    pub fn bos_token(&self) -> Option<&str> {
        todo!()
    }
    pub fn eos_token(&self) -> Option<&str> {
        todo!()
    }

    /// Every id that ends generation: eos, eot, and end-of-turn markers present in the
    /// vocabulary (`<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`, `<|endoftext|>`).
    pub fn stop_ids(&self) -> &[u32] {
        todo!()
    }

    pub fn vocab_size(&self) -> usize {
        todo!()
    }

}

/// Turns a growing sequence of ids into text deltas that never split a UTF-8 character:
/// a token that ends inside a multi-byte character yields nothing until the character is whole.
/// It holds no reference to the tokenizer (a sequence that owns one can live anywhere).
#[derive(Default)]
pub struct StreamDecoder {
    // private fields
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Push one generated id; returns the new text it completes (possibly empty).
    pub fn push(&mut self, _tokenizer: &Tokenizer, _id: u32) -> anyhow::Result<String> {
        todo!()
    }
}
