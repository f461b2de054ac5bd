//! Generated text → thinking and answer, as it streams. Text that might still grow into a
//! tag is held back until it is known, so a tag split across tokens (`</thi` + `nk>`) never
//! reaches the caller as either part.
//!
//! The rules, as llama.cpp's server and vLLM's reasoning parsers apply them:
//! - a block opens only at the start of the output (after blank space), or before it in the
//!   prompt ([`Start::Inside`]); a `<think>` later in an answer is the answer's text;
//! - the first `</think>` ends the thinking (a `<think>` inside the thinking is thinking);
//! - blank space around the thinking and at the start of the answer is dropped;
//! - an output whose block never closes (the token budget ran out) is all thinking.

use super::{Start, CLOSE, OPEN};
use crate::tokenizer::Tokenizer;

/// What the splitter hands out, in order: any thinking comes before any answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Reasoning(String),
    Content(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing visible yet; a `<think>` now opens a block.
    Before,
    /// Inside the block.
    Thinking,
    /// Just after `</think>`: blank space is dropped.
    Closed,
    /// The answer: passed through as it comes.
    Answer,
}

/// Splits one output into thinking and answer.
pub struct ReasoningSplitter {
    state: State,
    /// Text not yet handed out: blank space, or a tail that may be the start of a tag.
    held: String,
    /// Blank space inside the thinking, shown only if more thinking follows it.
    blank: String,
    /// Whether any thinking has been handed out (blank space before it is dropped).
    thought: bool,
    /// The generated text of the thinking, tags included (for counting its tokens).
    span: String,
}

/// The thinking's share of an output, once it has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The text the model generated for its thinking, tags included; None when it did not
    /// think.
    pub span: Option<String>,
    /// Whether the block was closed (false: the output ended inside it).
    pub closed: bool,
}

impl Split {
    /// The tokens the thinking took: every generated token when the block never closed,
    /// else its text encoded again (the engine reports counts, not which token made which
    /// text), at most `completion_tokens`.
    pub fn tokens(&self, tokenizer: &Tokenizer, completion_tokens: usize) -> usize {
        match &self.span {
            None => 0,
            Some(_) if !self.closed => completion_tokens,
            Some(span) => tokenizer
                .hf()
                .encode_fast(span.as_str(), false)
                .map(|e| e.len())
                .unwrap_or(0)
                .min(completion_tokens),
        }
    }
}

impl ReasoningSplitter {
    pub fn new(start: Start) -> Self {
        Self {
            state: match start {
                Start::Inside => State::Thinking,
                Start::Before => State::Before,
                Start::Closed => State::Answer,
            },
            held: String::new(),
            blank: String::new(),
            thought: false,
            span: String::new(),
        }
    }

    /// Feed newly generated text; returns what is now known.
    pub fn push(&mut self, text: &str) -> Vec<Part> {
        self.held.push_str(text);
        let mut out = Vec::new();
        loop {
            match self.state {
                State::Before => {
                    let visible = self.held.trim_start();
                    if let Some(after) = visible.strip_prefix(OPEN) {
                        let opened = self.held.len() - after.len();
                        self.span.push_str(&self.held[..opened]);
                        self.held.drain(..opened);
                        self.state = State::Thinking;
                    } else if visible.is_empty() || OPEN.starts_with(visible) {
                        break;
                    } else {
                        // No block: the whole output is the answer, exactly as generated.
                        self.state = State::Answer;
                    }
                }
                State::Thinking => {
                    if let Some(at) = self.held.find(CLOSE) {
                        let end = at + CLOSE.len();
                        let thinking: String = self.held.drain(..end).collect();
                        self.span.push_str(&thinking);
                        self.think(&thinking[..at], &mut out);
                        self.blank.clear();
                        self.state = State::Closed;
                    } else {
                        let keep = tag_prefix_len(&self.held, CLOSE);
                        let ready: String = self.held.drain(..self.held.len() - keep).collect();
                        self.span.push_str(&ready);
                        self.think(&ready, &mut out);
                        break;
                    }
                }
                State::Closed => {
                    let answer = self.held.trim_start();
                    if answer.is_empty() {
                        self.held.clear();
                        break;
                    }
                    self.held = answer.to_string();
                    self.state = State::Answer;
                }
                State::Answer => {
                    if !self.held.is_empty() {
                        out.push(Part::Content(std::mem::take(&mut self.held)));
                    }
                    break;
                }
            }
        }
        out
    }

    /// The generation ended: what is held is text after all (an unfinished tag included).
    pub fn finish(&mut self) -> Vec<Part> {
        let held = std::mem::take(&mut self.held);
        let mut out = Vec::new();
        match self.state {
            // Blank space or the start of a tag, and nothing else: an answer.
            State::Before if !held.is_empty() => out.push(Part::Content(held)),
            State::Thinking => {
                self.span.push_str(&held);
                self.think(&held, &mut out);
            }
            _ => {}
        }
        out
    }

    /// The thinking's share of the output so far (complete once [`Self::finish`] ran).
    pub fn split(&self) -> Split {
        let thought = self.state != State::Before && !self.span.is_empty();
        Split {
            span: thought.then(|| self.span.clone()),
            closed: thought && matches!(self.state, State::Closed | State::Answer),
        }
    }

    /// Hand out thinking text, without blank space at its start or (until more follows) its
    /// end.
    fn think(&mut self, text: &str, out: &mut Vec<Part>) {
        let text = if self.thought {
            text
        } else {
            text.trim_start()
        };
        if text.is_empty() {
            return;
        }
        let body = text.trim_end();
        if body.is_empty() {
            self.blank.push_str(text);
            return;
        }
        let mut shown = std::mem::take(&mut self.blank);
        shown.push_str(body);
        self.blank.push_str(&text[body.len()..]);
        self.thought = true;
        out.push(Part::Reasoning(shown));
    }
}

/// Length of the longest tail of `text` that is a proper prefix of `tag`.
fn tag_prefix_len(text: &str, tag: &str) -> usize {
    (1..tag.len().min(text.len() + 1))
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && tag.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

/// A whole output's thinking (None when it has none) and answer.
pub fn split_answer(start: Start, text: &str) -> (Option<String>, String, Split) {
    let mut splitter = ReasoningSplitter::new(start);
    let mut parts = splitter.push(text);
    parts.extend(splitter.finish());
    let (mut reasoning, mut content) = (None::<String>, String::new());
    for part in parts {
        match part {
            Part::Reasoning(t) => reasoning.get_or_insert_with(String::new).push_str(&t),
            Part::Content(t) => content.push_str(&t),
        }
    }
    (reasoning, content, splitter.split())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `deltas` one by one and merge what comes out, keeping the order of the parts.
    fn run(start: Start, deltas: &[&str]) -> Vec<Part> {
        let mut s = ReasoningSplitter::new(start);
        let mut parts: Vec<Part> = Vec::new();
        for d in deltas {
            parts.extend(s.push(d));
        }
        parts.extend(s.finish());
        let mut merged: Vec<Part> = Vec::new();
        for p in parts {
            match (merged.last_mut(), p) {
                (Some(Part::Reasoning(a)), Part::Reasoning(b)) => a.push_str(&b),
                (Some(Part::Content(a)), Part::Content(b)) => a.push_str(&b),
                (_, p) => merged.push(p),
            }
        }
        merged
    }

    fn r(t: &str) -> Part {
        Part::Reasoning(t.into())
    }
    fn c(t: &str) -> Part {
        Part::Content(t.into())
    }

    /// Every way of cutting `text` into two or three deltas gives the same parts.
    fn same_at_every_cut(start: Start, text: &str, want: &[Part]) {
        let cuts: Vec<usize> = (0..=text.len())
            .filter(|&i| text.is_char_boundary(i))
            .collect();
        for &i in &cuts {
            for &j in cuts.iter().filter(|&&j| j >= i) {
                let got = run(start, &[&text[..i], &text[i..j], &text[j..]]);
                assert_eq!(got, want, "cut at {i} and {j} of {text:?}");
            }
        }
    }

    #[test]
    fn a_block_the_model_opens_is_thinking_and_the_rest_is_the_answer() {
        same_at_every_cut(
            Start::Before,
            "<think>\nLet me see. 2+2 is 4.\n</think>\n\nIt is 4.",
            &[r("Let me see. 2+2 is 4."), c("It is 4.")],
        );
    }

    #[test]
    fn a_block_opened_by_the_prompt_needs_only_its_close() {
        same_at_every_cut(
            Start::Inside,
            "Hmm, < and </ are not tags.</think>\n\nAnswer <b>",
            &[r("Hmm, < and </ are not tags."), c("Answer <b>")],
        );
    }

    #[test]
    fn a_block_never_closed_is_all_thinking_even_a_partial_close_tag() {
        same_at_every_cut(
            Start::Inside,
            "Still thinking\n</thi",
            &[r("Still thinking\n</thi")],
        );
        same_at_every_cut(Start::Before, "<think>abc", &[r("abc")]);
    }

    #[test]
    fn output_without_a_block_is_untouched() {
        same_at_every_cut(
            Start::Before,
            "  Hello <think>x</think>",
            &[c("  Hello <think>x</think>")],
        );
        same_at_every_cut(Start::Before, " <thi", &[c(" <thi")]);
        same_at_every_cut(Start::Before, "\n", &[c("\n")]);
        assert_eq!(run(Start::Before, &[]), Vec::<Part>::new());
    }

    #[test]
    fn a_nested_open_tag_is_thinking_and_a_second_block_is_answer() {
        same_at_every_cut(
            Start::Before,
            "<think>a <think> b</think>c<think>d</think>",
            &[r("a <think> b"), c("c<think>d</think>")],
        );
    }

    #[test]
    fn an_empty_block_gives_no_thinking() {
        same_at_every_cut(Start::Before, "<think>\n\n</think>\n\nHi", &[c("Hi")]);
        let (reasoning, content, split) = split_answer(Start::Before, "<think>\n\n</think>\n\nHi");
        assert_eq!((reasoning, content.as_str()), (None, "Hi"));
        assert_eq!(split.span.as_deref(), Some("<think>\n\n</think>"));
        assert!(split.closed);
    }

    #[test]
    fn tags_split_across_many_deltas_never_leak() {
        let deltas = [
            "<", "th", "in", "k", ">", "x", "<", "/", "thi", "nk", ">", "\n", "y",
        ];
        assert_eq!(run(Start::Before, &deltas), [r("x"), c("y")]);
        // Each delta on its own: nothing that is part of a tag is handed out.
        let mut s = ReasoningSplitter::new(Start::Before);
        for d in deltas {
            for part in s.push(d) {
                let text = match &part {
                    Part::Reasoning(t) | Part::Content(t) => t,
                };
                assert!(!text.contains('<') && !text.contains('>'), "{part:?}");
            }
        }
    }

    #[test]
    fn blank_space_inside_the_thinking_is_kept() {
        same_at_every_cut(Start::Inside, "\n a\n\n b \n</think>  ", &[r("a\n\n b")]);
    }

    #[test]
    fn the_span_is_the_generated_thinking_with_its_tags() {
        let (reasoning, content, split) = split_answer(Start::Before, " <think>x</think>\ny");
        assert_eq!(reasoning.as_deref(), Some("x"));
        assert_eq!(content, "y");
        assert_eq!(split.span.as_deref(), Some(" <think>x</think>"));
        let (_, _, split) = split_answer(Start::Inside, "x y");
        assert_eq!(
            split,
            Split {
                span: Some("x y".into()),
                closed: false
            }
        );
        let (_, _, split) = split_answer(Start::Before, "plain");
        assert_eq!(
            split,
            Split {
                span: None,
                closed: false
            }
        );
    }

    #[test]
    fn after_a_block_the_prompt_closed_everything_is_the_answer() {
        same_at_every_cut(
            Start::Closed,
            "<think>x</think>y",
            &[c("<think>x</think>y")],
        );
        let (_, _, split) = split_answer(Start::Closed, "<think>x</think>y");
        assert_eq!(
            split,
            Split {
                span: None,
                closed: false
            }
        );
    }

    #[test]
    fn multibyte_text_is_never_cut() {
        same_at_every_cut(Start::Inside, "é</think>ü", &[r("é"), c("ü")]);
    }
}
