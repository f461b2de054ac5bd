//! Text ↔ token ids: a `tokenizers::Tokenizer` built from a GGUF's own vocabulary (or a
//! tokenizer.json), the ids that end a turn, and an incremental detokenizer for streams.
//!
//! Two kinds of GGUF vocabulary (`tokenizer.ggml.model`):
//! - `gpt2`: byte-level BPE. The GGUF carries the whole vocabulary and merge list, but not the
//!   pre-tokenizer: only its name (`tokenizer.ggml.pre`).
//! - `llama`: SentencePiece BPE (Gemma, Llama 2, Mistral 7B, Phi-3): no merge list but a score
//!   per token; spaces become `▁`, and characters outside the vocabulary fall back to byte
//!   tokens `<0xNN>`. llama.cpp merges the adjacent pair whose joined text is the vocabulary
//!   entry of highest score, leftmost first; ranking every such pair by that score gives
//!   a merge list that `tokenizers`' BPE applies in the same order ([`spm_merges`]).
//!
//! - `bert`: WordPiece (BERT-family embedding models). llama.cpp's converter stores each
//!   word-start piece as `▁piece` and each continuation (`##piece` in the model's own
//!   vocabulary) bare; [`wordpiece`] turns them back and runs `tokenizers`' WordPiece with
//!   BERT's normaliser (lowercase, accents stripped, as llama.cpp's WPM tokenizer always does)
//!   and pre-tokenizer. A text is framed as `[CLS] text [SEP]` (`add_bos_token`,
//!   `add_eos_token`).
//!
//! For `gpt2`, the split rules for that name are llama.cpp's (`pretokenize.rs`). Chat prompts
//! keep control-token texts typed by clients as text (`guard.rs`).

use std::path::Path;

use anyhow::{anyhow, bail, Context};
use candle_core::quantized::gguf_file;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::AddedToken;

mod guard;
mod length_bound;
mod pretokenize;
pub use pretokenize::PreTokenization;

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_NORMAL: i64 = 1;
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// Texts that end a turn in the chat formats we know; any of them in the vocabulary is a stop id.
const END_OF_TURN_MARKERS: [&str; 4] =
    ["<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>"];

/// A loaded tokenizer plus the special-token facts the engine and the template need.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos: Option<(u32, String)>,
    eos: Option<(u32, String)>,
    add_bos: bool,
    /// Whether a text ends with eos (`[SEP]` of a BERT vocabulary); only `bert` vocabularies
    /// are read for it, as chat models' prompts never end with one.
    add_eos: bool,
    stop_ids: Vec<u32>,
    /// Control-token texts kept out of user content (`guard`).
    controls: guard::ControlTexts,
    /// How far one token reaches into a text (`length_bound`).
    length_bound: length_bound::LengthBound,
}

impl Tokenizer {
    /// Build from GGUF metadata: `tokenizer.ggml.{model,pre,tokens,token_type,merges,
    /// bos_token_id,eos_token_id,eot_token_id,add_bos_token}`. Pre-tokenizer chosen from
    /// `tokenizer.ggml.pre` as llama.cpp does (`pretokenize.rs`).
    /// Control tokens (token_type 3) and user-defined ones (4) are added as special tokens so
    /// `<|im_start|>` encodes to one id.
    pub fn from_gguf(content: &gguf_file::Content) -> anyhow::Result<Self> {
        let model = meta_str(content, "tokenizer.ggml.model")?
            .context("GGUF has no `tokenizer.ggml.model`")?;
        let tokens = string_array(content, "tokenizer.ggml.tokens")?;
        // Whether BOS starts a text when the GGUF has no `add_bos_token`: llama.cpp's default
        // for the vocabulary kind (SentencePiece yes; byte-level BPE per pre-tokenizer).
        let (mut inner, add_bos_default) = match model {
            "gpt2" => {
                let pre = pre_tokenization(content)?;
                (byte_level_bpe(content, &tokens, &pre)?, pre.add_bos)
            }
            "llama" => (sentencepiece_bpe(content, &tokens)?, true),
            "bert" => (wordpiece(content, &tokens)?, true),
            other => bail!(
                "tokenizer model `{other}` is not supported (supported: `gpt2`, byte-level BPE; \
                 `llama`, SentencePiece BPE; `bert`, WordPiece); give the model's \
                 tokenizer.json instead"
            ),
        };
        // Control and user-defined tokens are matched whole in the input before any splitting.
        // Control tokens are special (skipped by `decode`); user-defined ones stay visible in
        // decoded text, as in llama.cpp, so markers such as Qwen's `<tool_call>` reach the caller.
        let strips = strips_after_special(content)?;
        let added: Vec<AddedToken> = tokens
            .iter()
            .zip(token_types(content, tokens.len())?)
            .filter(|(_, ty)| *ty == TOKEN_TYPE_CONTROL || *ty == TOKEN_TYPE_USER_DEFINED)
            .map(|(token, ty)| {
                AddedToken::from(token.to_string(), ty == TOKEN_TYPE_CONTROL)
                    .normalized(false)
                    .rstrip(strips(token))
            })
            .collect();
        // `add_tokens` keeps the ids these texts already have in the vocabulary.
        inner
            .add_tokens(added)
            .map_err(|e| anyhow!("adding special tokens: {e}"))?;

        let id_of = |key: &str| -> anyhow::Result<Option<(u32, String)>> {
            let Some(id) = meta_id(content, key)? else {
                return Ok(None);
            };
            let text = tokens
                .get(id as usize)
                .with_context(|| format!("{key} = {id} is outside the vocabulary"))?;
            Ok(Some((id, text.to_string())))
        };
        let bos = id_of("tokenizer.ggml.bos_token_id")?;
        let eos = id_of("tokenizer.ggml.eos_token_id")?;
        let eot = id_of("tokenizer.ggml.eot_token_id")?.map(|(id, _)| id);
        let add_bos =
            meta_bool(content, "tokenizer.ggml.add_bos_token")?.unwrap_or(add_bos_default);
        let mut tokenizer = Self::assemble(inner, bos, eos, eot, add_bos);
        // BERT closes a text with `[SEP]` unless told otherwise; other vocabularies close it
        // only where the GGUF asks (a decoder embedding model such as Qwen3-Embedding).
        tokenizer.add_eos =
            meta_bool(content, "tokenizer.ggml.add_eos_token")?.unwrap_or(model == "bert");
        Ok(tokenizer)
    }

    /// Build from a tokenizer.json; special ids are taken from the GGUF metadata when given.
    pub fn from_file(path: &Path, content: Option<&gguf_file::Content>) -> anyhow::Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| anyhow!("reading tokenizer {}: {e}", path.display()))?;
        let named = |id: u32| inner.id_to_token(id).map(|text| (id, text));
        let by_text = |candidates: &[&str]| {
            candidates
                .iter()
                .find_map(|t| inner.token_to_id(t).map(|id| (id, t.to_string())))
        };
        let (bos, eos, eot, add_bos) = match content {
            Some(content) => (
                meta_id(content, "tokenizer.ggml.bos_token_id")?.and_then(named),
                meta_id(content, "tokenizer.ggml.eos_token_id")?.and_then(named),
                meta_id(content, "tokenizer.ggml.eot_token_id")?,
                meta_bool(content, "tokenizer.ggml.add_bos_token")?.unwrap_or(false),
            ),
            // Without metadata, fall back to the usual spellings of these tokens.
            None => (
                by_text(&["<|begin_of_text|>", "<s>", "<bos>", "<|startoftext|>"]),
                by_text(&["<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>"]),
                None,
                false,
            ),
        };
        Ok(Self::assemble(inner, bos, eos, eot, add_bos))
    }

    fn assemble(
        inner: tokenizers::Tokenizer,
        bos: Option<(u32, String)>,
        eos: Option<(u32, String)>,
        eot: Option<u32>,
        add_bos: bool,
    ) -> Self {
        let mut stop_ids = Vec::new();
        let markers = END_OF_TURN_MARKERS.iter().map(|t| inner.token_to_id(t));
        let candidates = [eos.as_ref().map(|(id, _)| *id), eot]
            .into_iter()
            .chain(markers);
        for id in candidates.flatten() {
            if !stop_ids.contains(&id) {
                stop_ids.push(id);
            }
        }
        let controls = guard::ControlTexts::new(&inner);
        let length_bound = length_bound::LengthBound::new(&inner);
        Self {
            inner,
            bos,
            eos,
            add_bos,
            add_eos: false,
            stop_ids,
            controls,
            length_bound,
        }
    }

    /// Encode text, parsing special tokens (`<|im_start|>` → its id). Adds bos only when the
    /// model's `add_bos_token` says so.
    pub fn encode(&self, text: &str) -> anyhow::Result<Vec<u32>> {
        // No post-processor is relied on (a tokenizer.json may carry one that adds its own bos):
        // bos is added here, from the GGUF's flag, so both constructors behave the same.
        let encoding = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| anyhow!("encoding: {e}"))?;
        let mut ids = Vec::with_capacity(encoding.len() + 1);
        if self.add_bos {
            if let Some((bos, _)) = &self.bos {
                ids.push(*bos);
            }
        }
        ids.extend_from_slice(encoding.get_ids());
        Ok(ids)
    }

    /// The ids of a text to embed: its content as plain text (control-token texts are not
    /// parsed: user content is data), framed by bos and eos where the model's vocabulary
    /// asks for them (`[CLS] ... [SEP]` for BERT).
    pub fn encode_for_embedding(&self, text: &str) -> anyhow::Result<Vec<u32>> {
        let mut ids = Vec::new();
        if let (true, Some((bos, _))) = (self.add_bos, &self.bos) {
            ids.push(*bos);
        }
        ids.extend(self.encode_text(text)?);
        ids.extend(self.closing_eos());
        Ok(ids)
    }

    /// The eos the vocabulary closes every text with when special tokens are added
    /// (`add_eos_token`: BERT's `[SEP]`), if it asks for one.
    pub fn closing_eos(&self) -> Option<u32> {
        match (self.add_eos, &self.eos) {
            (true, Some((eos, _))) => Some(*eos),
            _ => None,
        }
    }

    /// Decode ids to text; special tokens are skipped.
    pub fn decode(&self, ids: &[u32]) -> anyhow::Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| anyhow!("decoding: {e}"))
    }

    /// The text of the bos / eos tokens (for chat templates), if the model has them.
    pub fn bos_token(&self) -> Option<&str> {
        self.bos.as_ref().map(|(_, t)| t.as_str())
    }
    pub fn eos_token(&self) -> Option<&str> {
        self.eos.as_ref().map(|(_, t)| t.as_str())
    }

    /// The bos / eos ids, if the model has them.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos.as_ref().map(|(id, _)| *id)
    }
    pub fn eos_id(&self) -> Option<u32> {
        self.eos.as_ref().map(|(id, _)| *id)
    }

    /// Every id that ends generation: eos, eot, and end-of-turn markers present in the
    /// vocabulary (`<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`, `<|endoftext|>`).
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// A lower bound on the tokens `text` encodes to, known without encoding it, so a prompt
    /// that can never fit the context is refused before the tokenizer spends memory and time
    /// on it (`length_bound.rs`).
    pub fn fewest_tokens(&self, text: &str) -> usize {
        self.length_bound.fewest_tokens(text)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token given by its vocabulary text (e.g. `<|im_end|>`).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The underlying Hugging Face tokenizer (for the constraint engine's vocabulary).
    pub fn hf(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// The vocabulary text of an id (byte-level form, e.g. `Ġthe`).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Decode ids to text with special tokens written out (`<|im_end|>`), as llama.cpp's
    /// `/detokenize` does.
    pub fn decode_with_special(&self, ids: &[u32]) -> anyhow::Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| anyhow!("decoding: {e}"))
    }

    /// The bytes one token stands for on its own, as llama.cpp's `token_to_piece` gives
    /// them: a leading space kept, a byte token as its byte (which may be part of a UTF-8
    /// character), a control token as its text. None for an id outside the vocabulary.
    pub fn piece_bytes(&self, id: u32) -> Option<Vec<u8>> {
        let text = self.inner.id_to_token(id)?;
        let byte_level = matches!(
            self.inner.get_decoder(),
            Some(tokenizers::decoders::DecoderWrapper::ByteLevel(_))
        );
        Some(if byte_level {
            byte_level_bytes(&text)
        } else {
            spm_piece_bytes(&text)
        })
    }
}

/// A byte-level BPE token's bytes: each character of its vocabulary text stands for one
/// byte (GPT-2's table, which `tokenizers` keeps private, so it is rebuilt here). A text
/// with a character outside the table (an added token typed with a plain space) is taken
/// as it is.
fn byte_level_bytes(text: &str) -> Vec<u8> {
    static CHAR_BYTES: std::sync::LazyLock<std::collections::HashMap<char, u8>> =
        std::sync::LazyLock::new(|| {
            // Printable bytes stand for themselves; the rest take the characters from U+0100 on.
            let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
            let mut next = 256u32;
            (0..=255u8)
                .map(|b| {
                    let c = if printable(b) {
                        char::from(b)
                    } else {
                        next += 1;
                        char::from_u32(next - 1).expect("a valid character")
                    };
                    (c, b)
                })
                .collect()
        });
    text.chars()
        .map(|c| CHAR_BYTES.get(&c).copied())
        .collect::<Option<Vec<u8>>>()
        .unwrap_or_else(|| text.as_bytes().to_vec())
}

/// A SentencePiece token's bytes: `<0xNN>` is byte NN, `▁` is a space.
fn spm_piece_bytes(text: &str) -> Vec<u8> {
    let byte = text
        .strip_prefix("<0x")
        .and_then(|t| t.strip_suffix('>'))
        .filter(|hex| hex.len() == 2)
        .and_then(|hex| u8::from_str_radix(hex, 16).ok());
    match byte {
        Some(b) => vec![b],
        None => text.replace(SPM_SPACE, " ").into_bytes(),
    }
}

/// A byte-level BPE tokenizer (`tokenizer.ggml.model = gpt2`) with llama.cpp's pre-tokenizer
/// for `tokenizer.ggml.pre`.
fn byte_level_bpe(
    content: &gguf_file::Content,
    tokens: &[&str],
    pre: &PreTokenization,
) -> anyhow::Result<tokenizers::Tokenizer> {
    let merges = string_array(content, "tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| anyhow!("malformed merge `{m}` in tokenizer.ggml.merges"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab(tokens), merges)
        // llama.cpp looks a whole llama3 (or tekken, ...) piece up in the vocabulary first.
        .ignore_merges(pre.ignore_merges)
        .build()
        .map_err(|e| anyhow!("building the BPE model from the GGUF vocabulary: {e}"))?;
    let mut inner = tokenizers::Tokenizer::new(bpe);
    inner.with_pre_tokenizer(Some(pre.pre_tokenizer()?));
    inner.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(inner)
}

/// A WordPiece tokenizer (`tokenizer.ggml.model = bert`) from a GGUF vocabulary in
/// llama.cpp's phantom-space form: `▁word` starts a word, a bare piece continues one (the
/// model's own `##piece`), control tokens keep their text.
fn wordpiece(
    content: &gguf_file::Content,
    tokens: &[&str],
) -> anyhow::Result<tokenizers::Tokenizer> {
    use tokenizers::models::wordpiece::WordPiece;
    let types = token_types(content, tokens.len())?;
    let mut vocab = tokenizers::models::bpe::Vocab::default();
    for (id, (token, ty)) in tokens.iter().zip(&types).enumerate() {
        let piece = if *ty == TOKEN_TYPE_CONTROL {
            token.to_string()
        } else if let Some(word) = token.strip_prefix(SPM_SPACE) {
            word.to_string()
        } else {
            format!("##{token}")
        };
        // A duplicate keeps its first id, as a lookup by text in llama.cpp finds it.
        vocab.entry(piece).or_insert(id as u32);
    }
    let unk = meta_id(content, "tokenizer.ggml.unknown_token_id")?
        .and_then(|id| tokens.get(id as usize))
        .map_or("[UNK]".to_string(), |t| t.to_string());
    let model = WordPiece::builder()
        .vocab(vocab)
        .unk_token(unk)
        .continuing_subword_prefix("##".into())
        .build()
        .map_err(|e| anyhow!("building the WordPiece model from the GGUF vocabulary: {e}"))?;
    let mut inner = tokenizers::Tokenizer::new(model);
    inner
        .with_normalizer(Some(tokenizers::normalizers::BertNormalizer::new(
            true, true, None, true,
        )))
        .map_err(|e| anyhow!("setting the BERT normaliser: {e}"))?;
    inner.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::bert::BertPreTokenizer));
    inner.with_decoder(Some(tokenizers::decoders::wordpiece::WordPiece::default()));
    Ok(inner)
}

/// Which special tokens swallow the whitespace after them. llama.cpp decides this by the
/// model's name, not its metadata: in a vocabulary named like Phi-3 (`phi-3`, `phi3`) every
/// special token does but `<unk>`, `<s>` and `<|endoftext|>` (as Phi-3's own tokenizer has
/// it, so `<|user|>\n` reads as the marker alone); elsewhere none.
fn strips_after_special(content: &gguf_file::Content) -> anyhow::Result<impl Fn(&str) -> bool> {
    let name = meta_str(content, "general.name")?
        .unwrap_or_default()
        .to_lowercase();
    let phi3 = name.contains("phi-3") || name.contains("phi3");
    Ok(move |token: &str| phi3 && !matches!(token, "<unk>" | "<s>" | "<|endoftext|>"))
}

/// The pre-tokenization of a byte-level BPE GGUF: llama.cpp's for its `tokenizer.ggml.pre`,
/// or its `default` rules (with a warning, as llama.cpp gives) for a missing or unknown name.
fn pre_tokenization(content: &gguf_file::Content) -> anyhow::Result<PreTokenization> {
    let name = meta_str(content, "tokenizer.ggml.pre")?;
    Ok(match name.and_then(pretokenize::for_name) {
        Some(family) => family,
        None => {
            tracing::warn!(
                "pre-tokenizer `{}` is not one llama.cpp knows: using its default rules; \
                 ids may differ from the model's training",
                name.unwrap_or("(none)")
            );
            pretokenize::DEFAULT
        }
    })
}

fn vocab(tokens: &[&str]) -> tokenizers::models::bpe::Vocab {
    tokens
        .iter()
        .enumerate()
        .map(|(id, t)| (t.to_string(), id as u32))
        .collect()
}

/// SentencePiece's word-boundary mark, which stands for a space in its vocabularies.
const SPM_SPACE: &str = "\u{2581}";

/// A SentencePiece BPE tokenizer (`tokenizer.ggml.model = llama`), as llama.cpp runs it:
/// spaces become `▁` (and one is put before the text, and after every special token, when
/// `tokenizer.ggml.add_space_prefix` says so: Llama 2 and Mistral, not Gemma), no
/// pre-tokenizer splits the text, pairs merge by the score of their joined token, and a
/// character outside the vocabulary becomes its UTF-8 bytes as `<0xNN>` tokens.
fn sentencepiece_bpe(
    content: &gguf_file::Content,
    tokens: &[&str],
) -> anyhow::Result<tokenizers::Tokenizer> {
    use tokenizers::decoders::{byte_fallback::ByteFallback, fuse::Fuse, strip::Strip};
    use tokenizers::normalizers::{Prepend, Replace};
    let scores = content
        .metadata
        .get("tokenizer.ggml.scores")
        .context("a SentencePiece GGUF has `tokenizer.ggml.scores`")?
        .to_vec()
        .map_err(|e| anyhow!("tokenizer.ggml.scores: {e}"))?
        .iter()
        .map(|v| {
            v.to_f32()
                .map_err(|e| anyhow!("tokenizer.ggml.scores: {e}"))
        })
        .collect::<anyhow::Result<Vec<f32>>>()?;
    if scores.len() != tokens.len() {
        bail!(
            "tokenizer.ggml.scores has {} entries for {} tokens",
            scores.len(),
            tokens.len()
        );
    }
    let types = token_types(content, tokens.len())?;
    let add_space_prefix = meta_bool(content, "tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab(tokens), spm_merges(tokens, &scores, &types))
        .byte_fallback(true);
    if let Some((_, unk)) = meta_id(content, "tokenizer.ggml.unknown_token_id")?
        .and_then(|id| tokens.get(id as usize).map(|t| (id, t)))
    {
        builder = builder.unk_token(unk.to_string());
    }
    let bpe = builder
        .build()
        .map_err(|e| anyhow!("building the SentencePiece model from the GGUF vocabulary: {e}"))?;
    let mut inner = tokenizers::Tokenizer::new(bpe);
    let space = Replace::new(" ", SPM_SPACE).map_err(|e| anyhow!("{e}"))?;
    let normalizer: tokenizers::NormalizerWrapper = if add_space_prefix {
        let steps = vec![Prepend::new(SPM_SPACE.into()).into(), space.into()];
        tokenizers::normalizers::Sequence::new(steps).into()
    } else {
        space.into()
    };
    inner
        .with_normalizer(Some(normalizer))
        .map_err(|e| anyhow!("SentencePiece normalizer: {e}"))?;
    let mut decoders = vec![
        Replace::new(SPM_SPACE, " ")
            .map_err(|e| anyhow!("{e}"))?
            .into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_space_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    inner.with_decoder(Some(tokenizers::decoders::sequence::Sequence::new(
        decoders,
    )));
    Ok(inner)
}

/// The merge list equivalent to SentencePiece BPE's scores: every split of a normal token
/// into two vocabulary entries, ranked by that token's score (highest first; ties by id, so
/// the order is fixed). Control, unknown and byte tokens are never the result of a merge.
fn spm_merges(tokens: &[&str], scores: &[f32], types: &[i64]) -> Vec<(String, String)> {
    let ids: std::collections::HashMap<&str, usize> =
        tokens.iter().enumerate().map(|(id, t)| (*t, id)).collect();
    let mut ranked = Vec::new();
    for (id, token) in tokens.iter().enumerate() {
        if types[id] != TOKEN_TYPE_NORMAL {
            continue;
        }
        for (at, _) in token.char_indices().skip(1) {
            let (left, right) = token.split_at(at);
            if ids.contains_key(left) && ids.contains_key(right) {
                ranked.push((scores[id], id, left, right));
            }
        }
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    ranked
        .into_iter()
        .map(|(_, _, l, r)| (l.to_string(), r.to_string()))
        .collect()
}

/// `tokenizer.ggml.token_type` for every token (normal where the GGUF says nothing).
fn token_types(content: &gguf_file::Content, n: usize) -> anyhow::Result<Vec<i64>> {
    let Some(types) = content.metadata.get("tokenizer.ggml.token_type") else {
        return Ok(vec![TOKEN_TYPE_NORMAL; n]);
    };
    let types = types
        .to_vec()
        .map_err(|e| anyhow!("tokenizer.ggml.token_type: {e}"))?
        .iter()
        .map(|t| int_value(t).context("tokenizer.ggml.token_type"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if types.len() != n {
        bail!(
            "tokenizer.ggml.token_type has {} entries for {n} tokens",
            types.len()
        );
    }
    Ok(types)
}

/// Turns a growing sequence of ids into text deltas that never split a UTF-8 character:
/// a token that ends inside a multi-byte character yields nothing until the character is whole.
/// It holds no reference to the tokenizer, so a sequence that owns one can live anywhere;
/// each call is given the tokenizer instead.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    /// Start of the window that is re-decoded each step: a little context before the new ids,
    /// so text that depends on its neighbours (byte pieces) decodes correctly.
    prefix_offset: usize,
    /// Everything before this index has been emitted.
    read_offset: usize,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Push one generated id; returns the new text it completes (possibly empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> anyhow::Result<String> {
        self.ids.push(id);
        let window = &self.ids[self.prefix_offset..];
        let emitted = tok.decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let text = tok.decode(window)?;
        // A trailing U+FFFD means the last bytes are an incomplete character: wait for more.
        if text.len() <= emitted.len() || text.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        let Some(delta) = text.get(emitted.len()..) else {
            return Ok(String::new());
        };
        let delta = delta.to_string();
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        Ok(delta)
    }

    /// Text still held back when the stream ends (an incomplete character, shown as U+FFFD).
    pub fn finish(&mut self, tok: &Tokenizer) -> anyhow::Result<String> {
        let emitted = tok.decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let text = tok.decode(&self.ids[self.prefix_offset..])?;
        self.prefix_offset = self.ids.len();
        self.read_offset = self.ids.len();
        Ok(text.get(emitted.len()..).unwrap_or_default().to_string())
    }
}

fn meta_str<'a>(content: &'a gguf_file::Content, key: &str) -> anyhow::Result<Option<&'a str>> {
    content
        .metadata
        .get(key)
        .map(|v| v.to_string().map(|s| s.as_str()))
        .transpose()
        .map_err(|e| anyhow!("{key}: {e}"))
}

fn meta_bool(content: &gguf_file::Content, key: &str) -> anyhow::Result<Option<bool>> {
    content
        .metadata
        .get(key)
        .map(|v| v.to_bool())
        .transpose()
        .map_err(|e| anyhow!("{key}: {e}"))
}

fn meta_id(content: &gguf_file::Content, key: &str) -> anyhow::Result<Option<u32>> {
    let Some(v) = content.metadata.get(key) else {
        return Ok(None);
    };
    let id = int_value(v).with_context(|| key.to_string())?;
    Ok(Some(
        u32::try_from(id).map_err(|_| anyhow!("{key}: {id} is not a token id"))?,
    ))
}

/// GGUF writers disagree on integer widths (ids as u32 or i32, types as i32), so accept any.
fn int_value(v: &gguf_file::Value) -> anyhow::Result<i64> {
    use gguf_file::Value as V;
    Ok(match v {
        V::U8(x) => (*x).into(),
        V::I8(x) => (*x).into(),
        V::U16(x) => (*x).into(),
        V::I16(x) => (*x).into(),
        V::U32(x) => (*x).into(),
        V::I32(x) => (*x).into(),
        V::I64(x) => *x,
        V::U64(x) => i64::try_from(*x)?,
        other => bail!("expected an integer, found {other:?}"),
    })
}

fn string_array<'a>(content: &'a gguf_file::Content, key: &str) -> anyhow::Result<Vec<&'a str>> {
    let values = content
        .metadata
        .get(key)
        .with_context(|| format!("GGUF has no `{key}`"))?
        .to_vec()
        .map_err(|e| anyhow!("{key}: {e}"))?;
    values
        .iter()
        .map(|v| {
            v.to_string()
                .map(|s| s.as_str())
                .map_err(|e| anyhow!("{key}: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_pieces_are_gpt2_bytes() {
        assert_eq!(byte_level_bytes("Ġthe"), b" the");
        assert_eq!(byte_level_bytes("Ċ"), b"\n");
        // "é" is two bytes, C3 A9, each its own character in the table.
        assert_eq!(byte_level_bytes("Ã©"), "é".as_bytes());
        assert_eq!(byte_level_bytes("<|im_end|>"), b"<|im_end|>");
        assert_eq!(byte_level_bytes("a b"), b"a b");
    }

    #[test]
    fn sentencepiece_pieces_keep_spaces_and_bytes() {
        assert_eq!(spm_piece_bytes("▁Hello"), b" Hello");
        assert_eq!(spm_piece_bytes("<0x0A>"), b"\n");
        assert_eq!(spm_piece_bytes("<0xE2>"), [0xE2]);
        assert_eq!(spm_piece_bytes("<s>"), b"<s>");
    }
}
