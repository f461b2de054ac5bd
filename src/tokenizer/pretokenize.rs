//! The pre-tokenizer of a byte-level BPE GGUF, chosen by its `tokenizer.ggml.pre` name as
//! llama.cpp chooses it: the same split rules (regexes applied in turn, each splitting the
//! pieces of the previous one, matches and gaps both kept) and the same per-name switches.
//! llama.cpp is the reference the ids are checked against (tests/vocab_reference.rs on its own
//! vocabulary files), and a wrong rule still yields plausible ids, just not the model's.
//!
//! llama.cpp runs these rules on a copy of the text where every non-ASCII character stands
//! for its Unicode category, so `\p{Lu}`, `\p{Ll}`, `\p{Lt}`, `\p{Lm}` and `\p{Lo}` all match
//! any letter there; [`rule`] rewrites them to `\p{L}` so the regex engine here agrees.

use anyhow::anyhow;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;

/// How one family of names splits text before the merges.
#[derive(Debug, Clone, Copy)]
pub struct PreTokenization {
    /// The family's name in llama.cpp's table (for messages).
    pub family: &'static str,
    regexes: &'static [&'static str],
    /// A whole piece found in the vocabulary is one token, merges or not.
    pub ignore_merges: bool,
    /// Whether a BOS token starts the text when the GGUF does not say.
    pub add_bos: bool,
}

const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const DEEPSEEK3: &str = r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##;
/// Letters split at case changes; "upper" is any letter but a-z, "lower" any but A-Z.
const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TINY_AYA: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const JAIS2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s{512}(?!\S)|\s{256}(?!\S)|\s{128}(?!\S)|\s{64}(?!\S)|\s{32}(?!\S)|\s{16}(?!\S)|\s{8}(?!\S)|\s{4}(?!\S)|\s{1,2}(?!\S)|\s{1}";
const SEED_CODER: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+";
const BLOOM: &str = " ?[^(\\s|.,!?\u{2026}\u{3002}\u{ff0c}\u{3001}\u{964}\u{6d4}\u{60c})]+";

const fn family(
    family: &'static str,
    regexes: &'static [&'static str],
    ignore_merges: bool,
    add_bos: bool,
) -> PreTokenization {
    PreTokenization {
        family,
        regexes,
        ignore_merges,
        add_bos,
    }
}

/// llama.cpp's choice for a name it does not know, or no name: its `default` rules.
pub const DEFAULT: PreTokenization = family(
    "default",
    &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"],
    false,
    false,
);

/// The family of a `tokenizer.ggml.pre` name; `None` for names llama.cpp does not map.
pub fn for_name(pre: &str) -> Option<PreTokenization> {
    Some(match pre {
        "default" => DEFAULT,
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" => family("llama3", &[LLAMA3], true, true),
        "dbrx" | "smaug-bpe" | "chatglm-bpe" => family("llama3", &[LLAMA3], false, false),
        "glm4" | "glm5" => family("llama3", &[LLAMA3], true, false),
        "jais-2" => family("jais-2", &[JAIS2], false, false),
        "deepseek-llm" => family(
            "deepseek-llm",
            &[
                "[\r\n]",
                "\\s?[A-Za-z\u{b5}\u{c0}-\u{d6}\u{d8}-\u{f6}\u{f8}-\u{1ba}\u{1bc}-\u{1bf}\u{1c4}-\u{293}\u{295}-\u{2af}\u{370}-\u{373}\u{376}\u{377}\u{37b}-\u{37d}\u{37f}\u{386}\u{388}-\u{38a}\u{38c}\u{38e}-\u{3a1}\u{3a3}-\u{3f5}\u{3f7}-\u{481}\u{48a}-\u{52f}\u{531}-\u{556}\u{10a0}-\u{10c5}\u{13a0}-\u{13f5}\u{13f8}-\u{13fd}\u{1c90}-\u{1cba}\u{1cbd}-\u{1cbf}\u{1d00}-\u{1d2b}\u{1d6b}-\u{1d77}\u{1d79}-\u{1d9a}\u{1e00}-\u{1f15}\u{1f18}-\u{1f1d}\u{1f20}-\u{1f45}\u{1f48}-\u{1f4d}\u{1f50}-\u{1f57}\u{1f59}\u{1f5b}\u{1f5d}\u{1f5f}-\u{1f7d}\u{1f80}-\u{1fb4}\u{1fb6}-\u{1fbc}\u{1fbe}\u{1fc2}-\u{1fc4}\u{1fc6}-\u{1fcc}\u{1fd0}-\u{1fd3}\u{1fd6}-\u{1fdb}\u{1fe0}-\u{1fec}\u{1ff2}-\u{1ff4}\u{1ff6}-\u{1ffc}\u{2102}\u{2107}\u{210a}-\u{2113}\u{2115}\u{2119}-\u{211d}\u{2124}\u{2126}\u{2128}\u{212a}-\u{212d}\u{212f}-\u{2134}\u{2139}\u{213c}-\u{213f}\u{2145}-\u{2149}\u{214e}\u{2183}\u{2184}\u{2c00}-\u{2c7b}\u{2c7e}-\u{2ce4}\u{2ceb}-\u{2cee}\u{2cf2}\u{2cf3}\u{a640}-\u{a66d}\u{a680}-\u{a69b}\u{a722}-\u{a76f}\u{a771}-\u{a787}\u{a78b}-\u{a78e}\u{ab70}-\u{abbf}\u{fb00}-\u{fb06}\u{fb13}-\u{fb17}\u{ff21}-\u{ff3a}\u{ff41}-\u{ff5a}\u{10400}-\u{1044f}\u{104b0}-\u{104d3}\u{104d8}-\u{104fb}\u{10c80}-\u{10cb2}\u{10cc0}-\u{10cf2}\u{118a0}-\u{118df}\u{1e900}-\u{1e943}]+",
                "\\s?[!-/:-~\u{ff01}-\u{ff0f}\u{ff1a}-\u{ff5e}\u{2018}-\u{201f}\u{3000}-\u{3002}]+",
                "\\s+$",
                "[\u{4e00}-\u{9fa5}\u{800}-\u{4e00}\u{ac00}-\u{d7ff}]+",
                r"\p{N}+",
            ],
            false,
            false,
        ),
        "deepseek-v3" | "hunyuan-dense" | "joyai-llm" | "hy_v4" => family(
            "deepseek-v3",
            &[r"\p{N}{1,3}", "[\u{4e00}-\u{9fa5}\u{3040}-\u{309f}\u{30a0}-\u{30ff}]+", DEEPSEEK3],
            false,
            false,
        ),
        "deepseek-coder" => family(
            "deepseek-coder",
            &[
                "[\r\n]",
                r"\s?\p{L}+",
                r"\s?\p{P}+",
                "[\u{4e00}-\u{9fa5}\u{800}-\u{4e00}\u{ac00}-\u{d7ff}]+",
                r"\p{N}",
            ],
            false,
            false,
        ),
        "falcon" => family(
            "falcon",
            &[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]"],
            false,
            false,
        ),
        "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone"
        | "minerva-7b" | "mellum2" => family("starcoder", &[r"\p{N}", GPT2], false, false),
        "gpt-2" | "gpt2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es"
        | "jina-v2-de" | "a.x-4.0" | "mellum" | "modern-bert" | "exaone4" | "mpt" | "olmo"
        | "jais" | "trillion" | "granite-docling" | "jina-v1-en" | "jina-v2-code"
        | "roberta-bpe" => family("gpt-2", &[GPT2], false, false),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" | "stablelm2" | "hunyuan"
        | "solar-open" | "grok-2" => family("qwen2", &[QWEN2], false, false),
        "qwen35" => family(
            "qwen35",
            &[r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"],
            false,
            false,
        ),
        "poro-chat" | "bloom" | "gpt3-finnish" => family("bloom", &[BLOOM], false, false),
        "viking" => family("viking", &[BLOOM, r"\p{N}"], false, false),
        "tekken" => family("tekken", &[TEKKEN], true, true),
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => {
            family("gpt-4o", &[GPT4O], false, false)
        }
        "tiny_aya" | "cohere2moe" => family(
            "tiny_aya",
            &[r"\d{1,3}(?=(?:\d{3})*\b)", TINY_AYA],
            false,
            false,
        ),
        "seed-coder" => family("seed-coder", &[SEED_CODER], false, false),
        "bailingmoe" | "bailingmoe2" | "llada-moe" => family(
            "bailingmoe",
            &[r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"],
            false,
            false,
        ),
        "ufakzeka" => family(
            "ufakzeka",
            &[r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"],
            false,
            false,
        ),
        "minicpm5" => family(
            "minicpm5",
            &[r"\p{N}{1,3}", r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"],
            true,
            false,
        ),
        _ => return None,
    })
}

impl PreTokenization {
    /// The `tokenizers` pre-tokenizer: the rules in turn, then GPT-2's byte-to-unicode
    /// mapping with no prefix space.
    pub fn pre_tokenizer(&self) -> anyhow::Result<PreTokenizerWrapper> {
        let mut steps = Vec::new();
        for regex in self.regexes {
            let split = Split::new(
                SplitPattern::Regex(rule(regex)),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| anyhow!("pre-tokenizer rule of `{}`: {e}", self.family))?;
            steps.push(split.into());
        }
        steps.push(ByteLevel::new(false, false, false).into());
        Ok(Sequence::new(steps).into())
    }
}

/// A rule as llama.cpp effectively runs it (see the module comment on letter classes).
fn rule(regex: &str) -> String {
    ["Lu", "Ll", "Lt", "Lm", "Lo"]
        .iter()
        .fold(regex.to_string(), |r, class| {
            r.replace(&format!(r"\p{{{class}}}"), r"\p{L}")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

    fn pieces(pre: &str, text: &str) -> Vec<String> {
        let mut s = PreTokenizedString::from(text);
        let family = for_name(pre).unwrap();
        family
            .pre_tokenizer()
            .unwrap()
            .pre_tokenize(&mut s)
            .unwrap();
        s.get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(p, _, _)| p.to_string())
            .collect()
    }

    #[test]
    fn smollm_splits_every_digit() {
        assert_eq!(pieces("smollm", "in 2024"), ["in", "Ġ", "2", "0", "2", "4"]);
    }

    #[test]
    fn gpt2_keeps_digit_runs_and_adds_no_prefix_space() {
        assert_eq!(pieces("gpt-2", "in 2024"), ["in", "Ġ2024"]);
    }

    #[test]
    fn qwen2_splits_digits_and_keeps_newlines_apart() {
        assert_eq!(
            pieces("qwen2", "x = 12\n\n  y"),
            ["x", "Ġ=", "Ġ", "1", "2", "ĊĊ", "Ġ", "Ġy"]
        );
    }

    #[test]
    fn llama3_groups_digits_by_three() {
        assert_eq!(pieces("llama3", "12345"), ["123", "45"]);
    }

    #[test]
    fn tekken_splits_at_case_changes() {
        assert_eq!(pieces("tekken", "HelloWorld"), ["Hello", "World"]);
    }

    #[test]
    fn every_rule_compiles() {
        for name in [
            "default",
            "deepseek-llm",
            "deepseek-v3",
            "tekken",
            "gpt-4o",
            "tiny_aya",
            "jais-2",
            "bloom",
            "viking",
            "falcon",
            "bailingmoe",
            "minicpm5",
            "seed-coder",
        ] {
            for_name(name).unwrap().pre_tokenizer().unwrap();
        }
    }
}
