//! A synthetic byte-level BPE vocabulary of a real model's size, with its special tokens at
//! their real ids: what wick's tokenizer needs to load, encode and decode, without the
//! real vocabulary.
//!
//! Ordinary tokens past the 256 bytes are lowercase "words" (`ab`, `Ġab`, `abc`, ...), each
//! made by one merge of a shorter one and a letter, so plain English text still merges into
//! tokens of a few characters and a prompt's token count stays in the real model's range;
//! random weights then emit words that decode to printable text.

/// A run of ids of the vocabulary, in id order.
#[derive(Debug, Clone, Copy)]
pub enum Segment {
    /// Special tokens, with their GGUF token types (3: control, 4: user-defined).
    Specials(&'static [(&'static str, i32)]),
    /// The 256 byte-level tokens, in GPT-2's byte-to-unicode order.
    Bytes,
    /// This many merged lowercase words.
    Words(usize),
    /// This many unused ids (`[PAD<id>]`, type 5), as exports pad the vocabulary.
    Unused(usize),
}

/// GGUF token types (llama.cpp's `llama_token_type`).
const NORMAL: i32 = 1;
const UNUSED: i32 = 5;

/// `tokenizer.ggml.tokens`, `token_type` and `merges` of a synthetic vocabulary.
#[derive(Debug, Default)]
pub struct Vocab {
    pub tokens: Vec<String>,
    pub types: Vec<i32>,
    pub merges: Vec<String>,
}

impl Vocab {
    pub fn build(segments: &[Segment]) -> Self {
        let mut vocab = Vocab::default();
        for segment in segments {
            match *segment {
                Segment::Specials(specials) => {
                    for &(text, ty) in specials {
                        vocab.push(text.to_string(), ty);
                    }
                }
                Segment::Bytes => {
                    for c in byte_chars() {
                        vocab.push(c.to_string(), NORMAL);
                    }
                }
                Segment::Words(count) => {
                    for (word, merge) in words().take(count) {
                        vocab.push(word, NORMAL);
                        vocab.merges.push(merge);
                    }
                }
                Segment::Unused(count) => {
                    for _ in 0..count {
                        let id = vocab.tokens.len();
                        vocab.push(format!("[PAD{id}]"), UNUSED);
                    }
                }
            }
        }
        vocab
    }

    fn push(&mut self, token: String, ty: i32) {
        self.tokens.push(token);
        self.types.push(ty);
    }
}

/// GPT-2's byte-to-unicode table in its own order: printable bytes stand for themselves,
/// the rest (controls, space, ...) for code points from 256 on.
pub fn byte_chars() -> Vec<char> {
    let printable = |b: u32| (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || b >= 0xae;
    let mut chars: Vec<char> = (0..256u32)
        .filter(|&b| printable(b))
        .filter_map(char::from_u32)
        .collect();
    let others = (0..256u32).filter(|&b| !printable(b));
    chars.extend(others.zip(256u32..).filter_map(|(_, c)| char::from_u32(c)));
    chars
}

/// The marker byte-level BPE puts for a leading space (byte 0x20).
const SPACE: char = 'Ġ';

/// Lowercase words with their merges, shortest first, so every word's prefix is already a
/// token: per length, those after a space (`Ġab`), then the bare ones (`abc`).
fn words() -> impl Iterator<Item = (String, String)> {
    (2usize..).flat_map(|len| {
        let spaced = letter_strings(len - 1).map(|s| format!("{SPACE}{s}"));
        spaced.chain(letter_strings(len)).map(|word| {
            let cut = word.char_indices().last().expect("two characters").0;
            let merge = format!("{} {}", &word[..cut], &word[cut..]);
            (word, merge)
        })
    })
}

/// Every string of `len` lowercase letters, in alphabetical order.
fn letter_strings(len: usize) -> impl Iterator<Item = String> {
    let count = 26usize.pow(len as u32);
    (0..count).map(move |mut n| {
        let mut s = vec![b'a'; len];
        for place in s.iter_mut().rev() {
            *place = b'a' + (n % 26) as u8;
            n /= 26;
        }
        String::from_utf8(s).expect("ASCII")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_follow_gpt2s_table() {
        let chars = byte_chars();
        assert_eq!(chars.len(), 256);
        assert_eq!(&chars[..3], &['!', '"', '#']);
        // Space (byte 32) is the 33rd non-printable byte: code point 256 + 32.
        assert!(chars.contains(&SPACE));
        let unique: std::collections::HashSet<_> = chars.iter().collect();
        assert_eq!(unique.len(), 256);
    }

    #[test]
    fn words_merge_from_tokens_already_present() {
        let vocab = Vocab::build(&[Segment::Bytes, Segment::Words(20_000)]);
        assert_eq!(vocab.tokens.len(), 256 + 20_000);
        assert_eq!(vocab.merges.len(), 20_000);
        assert_eq!(&vocab.tokens[256..258], ["Ġa", "Ġb"]);
        assert_eq!(vocab.merges[0], "Ġ a");
        let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for (token, merge) in vocab.tokens[256..].iter().zip(&vocab.merges) {
            let (left, right) = merge.split_once(' ').unwrap();
            assert!(seen.contains(left) || left.chars().count() == 1, "{merge}");
            assert!(right.chars().count() == 1, "{merge}");
            assert_eq!(format!("{left}{right}"), *token);
            seen.insert(token);
        }
        assert_eq!(seen.len(), 20_000, "words are unique");
    }

    #[test]
    fn specials_and_unused_ids_keep_their_places() {
        let vocab = Vocab::build(&[
            Segment::Bytes,
            Segment::Words(10),
            Segment::Specials(&[("<|x|>", 3)]),
            Segment::Unused(2),
        ]);
        assert_eq!(vocab.tokens[266], "<|x|>");
        assert_eq!(vocab.types[266], 3);
        assert_eq!(vocab.tokens[268], "[PAD268]");
        assert_eq!(vocab.types[268], UNUSED);
    }
}
