//! How few tokens a text can encode to, known without encoding it: the chat and completions
//! endpoints refuse a prompt that is sure to exceed the context before the tokenizer spends
//! memory on it (a body-limit prompt costs it hundreds of MiB, which the allocator keeps).
//!
//! Every token stands for some bytes of input, at most `reach[k]` of them of kind k
//! (whitespace, ASCII punctuation, anything else), the vocabulary's maxima measured on each
//! entry's decoded text. So a text with n[k] bytes of kind k needs at least
//! max over k of n[k] / reach[k] tokens. Splitting by kind matters: vocabularies hold runs of
//! 128 spaces or 112 dashes while their longest word is far shorter.

const KINDS: usize = 3;

/// The vocabulary's longest reach, per byte kind.
pub struct LengthBound {
    reach: [usize; KINDS],
    /// A normalizer may shorten text before it is split (NFC composes `e` + U+0301 into
    /// `é`): the bound is then halved to stay a bound.
    shrink: usize,
}

impl LengthBound {
    pub fn new(inner: &tokenizers::Tokenizer) -> Self {
        let mut reach = [1; KINDS];
        let mut widen = |text: &str| {
            for (r, n) in reach.iter_mut().zip(count_kinds(text)) {
                *r = (*r).max(n);
            }
        };
        for id in 0..inner.get_vocab_size(true) as u32 {
            // A lone piece of a multibyte character decodes to U+FFFD (3 bytes for 1):
            // an overcount, which only loosens the bound.
            if let Ok(text) = inner.decode(&[id], false) {
                widen(&text);
            }
        }
        // Added tokens (`<|im_start|>`) are matched on their literal content.
        for token in inner.get_added_tokens_decoder().values() {
            widen(&token.content);
        }
        let shrink = if inner.get_normalizer().is_some() {
            2
        } else {
            1
        };
        Self { reach, shrink }
    }

    /// A lower bound on the tokens `text` encodes to.
    pub fn fewest_tokens(&self, text: &str) -> usize {
        let fewest = count_kinds(text)
            .iter()
            .zip(self.reach)
            .map(|(n, reach)| n / reach)
            .max()
            .unwrap_or(0);
        fewest / self.shrink
    }
}

/// Bytes of `text` by kind: whitespace, ASCII punctuation, the rest.
fn count_kinds(text: &str) -> [usize; KINDS] {
    let mut counts = [0; KINDS];
    for b in text.bytes() {
        let kind = if b.is_ascii_whitespace() {
            0
        } else if b.is_ascii_punctuation() {
            1
        } else {
            2
        };
        counts[kind] += 1;
    }
    counts
}
