//! User text stays text. A chat prompt is one string, rendered by the model's template and
//! then tokenized with control tokens parsed, so a user who types `<|im_end|>` or
//! `<|im_start|>system` would otherwise forge turns. Before rendering, every control
//! token's text inside client-given strings is swapped for a placeholder character of its
//! own (Unicode private use, plane 15); the template moves it about like any character; when
//! the rendered prompt is encoded, each placeholder becomes its token's text encoded as plain
//! text, while the template's own control tokens stay control tokens. Raw /v1/completions
//! prompts are not guarded: their caller writes the whole prompt, markers included.

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, MatchKind};
use anyhow::anyhow;
use tokenizers::{
    Model, NormalizedString, Normalizer, OffsetType, PreTokenizedString, PreTokenizer,
};

use super::Tokenizer;

/// The first placeholder (Supplementary Private Use Area-A) and how many there are.
const FIRST_PLACEHOLDER: u32 = 0xF0000;
const PLACEHOLDERS: usize = 0xFFFFE - 0xF0000;

/// The control tokens' texts and a matcher for them.
pub struct ControlTexts {
    texts: Vec<String>,
    matcher: Option<AhoCorasick>,
}

impl ControlTexts {
    pub fn new(inner: &tokenizers::Tokenizer) -> Self {
        let mut texts: Vec<String> = inner
            .get_added_tokens_decoder()
            .values()
            .filter(|t| t.special && !t.content.is_empty())
            .map(|t| t.content.clone())
            .collect();
        texts.sort();
        if texts.len() > PLACEHOLDERS {
            tracing::warn!(
                "{} control tokens: only the first {PLACEHOLDERS} are kept out of user text",
                texts.len()
            );
            texts.truncate(PLACEHOLDERS);
        }
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&texts)
            .ok();
        Self { texts, matcher }
    }

    fn text_of(&self, placeholder: char) -> Option<&str> {
        let index = (placeholder as u32).checked_sub(FIRST_PLACEHOLDER)? as usize;
        self.texts.get(index).map(String::as_str)
    }
}

fn placeholder(index: usize) -> char {
    char::from_u32(FIRST_PLACEHOLDER + index as u32).expect("a plane-15 code point")
}

impl Tokenizer {
    /// `text` with every control token's text replaced by its placeholder (see the module).
    pub fn defuse<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let Some(matcher) = &self.controls.matcher else {
            return Cow::Borrowed(text);
        };
        if !matcher.is_match(text) {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for m in matcher.find_iter(text) {
            out.push_str(&text[last..m.start()]);
            out.push(placeholder(m.pattern().as_usize()));
            last = m.end();
        }
        out.push_str(&text[last..]);
        Cow::Owned(out)
    }

    /// Every string inside a JSON value, defused (tool-call arguments, tool definitions).
    pub fn defuse_json(&self, value: &mut serde_json::Value) {
        use serde_json::Value;
        match value {
            Value::String(s) => {
                if let Cow::Owned(defused) = self.defuse(s) {
                    *s = defused;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.defuse_json(v)),
            Value::Object(fields) => fields.values_mut().for_each(|v| self.defuse_json(v)),
            _ => {}
        }
    }

    /// Encode a rendered chat prompt: as [`Tokenizer::encode`], except that each placeholder
    /// becomes its control token's text as plain text.
    pub fn encode_prompt(&self, prompt: &str) -> anyhow::Result<Vec<u32>> {
        let is_placeholder = |c: char| self.controls.text_of(c).is_some();
        if !prompt.contains(is_placeholder) {
            return self.encode(prompt);
        }
        let mut ids = self.encode("")?;
        let mut rest = prompt;
        while !rest.is_empty() {
            let cut = rest.find(is_placeholder).unwrap_or(rest.len());
            if cut > 0 {
                let encoding = self
                    .inner
                    .encode_fast(&rest[..cut], false)
                    .map_err(|e| anyhow!("encoding: {e}"))?;
                ids.extend_from_slice(encoding.get_ids());
            }
            let Some(c) = rest[cut..].chars().next() else {
                break;
            };
            let text = self.controls.text_of(c).expect("a placeholder");
            ids.extend(self.encode_text(text)?);
            rest = &rest[cut + c.len_utf8()..];
        }
        Ok(ids)
    }

    /// `text` as plain text: normalized, pre-tokenized and merged, with no added or control
    /// token matched in it and no BOS.
    pub fn encode_text(&self, text: &str) -> anyhow::Result<Vec<u32>> {
        let mut normalized = NormalizedString::from(text);
        if let Some(normalizer) = self.inner.get_normalizer() {
            normalizer
                .normalize(&mut normalized)
                .map_err(|e| anyhow!("normalizing: {e}"))?;
        }
        let mut pieces = PreTokenizedString::from(normalized);
        if let Some(pre) = self.inner.get_pre_tokenizer() {
            pre.pre_tokenize(&mut pieces)
                .map_err(|e| anyhow!("pre-tokenizing: {e}"))?;
        }
        let model = self.inner.get_model();
        pieces
            .tokenize(|piece| model.tokenize(piece.get()))
            .map_err(|e| anyhow!("encoding: {e}"))?;
        let encoding = pieces
            .into_encoding(None, 0, OffsetType::Byte)
            .map_err(|e| anyhow!("encoding: {e}"))?;
        Ok(encoding.get_ids().to_vec())
    }
}
