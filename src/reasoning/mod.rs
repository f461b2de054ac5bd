//! Reasoning models (Qwen3, DeepSeek-R1 and its distills, and others that think in
//! `<think>…</think>` before they answer): which models get their thinking split from their
//! answer, where in the output the thinking starts, and how a grammar (tool calls,
//! `response_format`) leaves room for it.
//!
//! The API sends the thinking as `reasoning_content` (llama.cpp's server's name for it; vLLM's
//! older name too) and the rest as `content`; the split itself is [`ReasoningSplitter`].
//!
//! A model is treated as a thinking model when its chat template or its vocabulary knows the
//! think tags ([`thinks`]). Everything else is left exactly as it was: its text is never
//! scanned for tags.

mod split;

pub use split::{split_answer, Part, ReasoningSplitter, Split};

use crate::template::ChatTemplate;
use crate::tokenizer::Tokenizer;

/// The tag that opens a model's thinking.
pub const OPEN: &str = "<think>";
/// The tag that closes it; what follows is the answer.
pub const CLOSE: &str = "</think>";

/// Where a thinking model's output starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The prompt ends inside an open think block (DeepSeek-R1's and the newer Qwen
    /// templates end the generation prompt in `<think>\n`): the output is thinking until
    /// `</think>`, and all of it when the model never closes the block.
    Inside,
    /// The model may open a think block at the very start of its output (Qwen3's hybrid
    /// template leaves that to the model); output that starts otherwise is all answer.
    Before,
    /// The prompt ends in a closed block (`<think>\n\n</think>\n\n`: the template was
    /// told not to think): the output is all answer, and a grammar leaves no room for
    /// thinking (a small model shown an empty block likes to open another).
    Closed,
}

impl Start {
    /// Where the output of a thinking model starts after this prompt.
    pub fn after(prompt: &str) -> Self {
        // Only the prompt's very end counts: user text that mentions the tag is data, and
        // a template that closed the block (`<think>\n\n</think>\n\n`, thinking switched
        // off) leaves the model outside it.
        let end = prompt.trim_end();
        if end.ends_with(OPEN) {
            Start::Inside
        } else if end.ends_with(CLOSE) {
            Start::Closed
        } else {
            Start::Before
        }
    }
}

/// Whether a model thinks in `<think>` tags: its template mentions them (it renders or
/// strips earlier thinking, or opens the block itself), or its vocabulary has both tags as
/// tokens of their own.
pub fn thinks(template: &ChatTemplate, tokenizer: &Tokenizer) -> bool {
    let source = template.source();
    if source.contains(OPEN) || source.contains(CLOSE) {
        return true;
    }
    let vocab = tokenizer.hf();
    vocab.token_to_id(OPEN).is_some() && vocab.token_to_id(CLOSE).is_some()
}

/// The grammar's rule names this module adds; no grammar of `crate::tools` uses them.
const ANSWER_RULE: &str = "wick_answer";

/// A Lark grammar (whose top rule is `start`) that first lets the model think, then holds
/// the rest of the output to `lark`: free text up to the first `</think>`, the blank line
/// thinking models write after it, then the original grammar. With `Start::Before` the
/// think block is optional and must open the output. The thinking is a lazy lexeme, so it
/// ends at the first `</think>` and cannot run on past it.
pub fn grammar_after_thinking(lark: &str, start: Start) -> String {
    let Some(rest) = lark.strip_prefix("start:") else {
        // Not a grammar of ours (they all begin with their start rule): leave it be.
        return lark.to_string();
    };
    let thinking = "wick_thinking[lazy]: /(.|\\n)*<\\/think>/";
    let top = match start {
        Start::Closed => return lark.to_string(),
        Start::Inside => format!("start: wick_thinking \"\\n\\n\" {ANSWER_RULE}"),
        Start::Before => {
            format!("start: (\"<think>\" wick_thinking \"\\n\\n\")? {ANSWER_RULE}")
        }
    };
    format!("{top}\n{thinking}\n{ANSWER_RULE}:{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_prompt_that_ends_in_an_open_block_starts_inside() {
        assert_eq!(
            Start::after("<|im_start|>assistant\n<think>\n"),
            Start::Inside
        );
        assert_eq!(Start::after("<｜Assistant｜><think>"), Start::Inside);
        assert_eq!(
            Start::after("<|im_start|>assistant\n<think>\n\n</think>\n\n"),
            Start::Closed
        );
        assert_eq!(
            Start::after("<|im_start|>user\n<think>\n<|im_end|>\n<|im_start|>assistant\n"),
            Start::Before
        );
    }

    #[test]
    fn a_grammar_is_wrapped_after_the_thinking() {
        let g = grammar_after_thinking("start: %json {\"type\": \"object\"}\n", Start::Inside);
        assert!(
            g.starts_with("start: wick_thinking \"\\n\\n\" wick_answer\n"),
            "{g}"
        );
        assert!(
            g.contains("\nwick_answer: %json {\"type\": \"object\"}\n"),
            "{g}"
        );
        let g = grammar_after_thinking("start: block\nblock: \"x\"\n", Start::Before);
        assert!(
            g.starts_with("start: (\"<think>\" wick_thinking \"\\n\\n\")? wick_answer\n"),
            "{g}"
        );
        assert_eq!(
            grammar_after_thinking("other: \"x\"", Start::Inside),
            "other: \"x\""
        );
        let g = "start: \"x\"";
        assert_eq!(grammar_after_thinking(g, Start::Closed), g);
    }
}
