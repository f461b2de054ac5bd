//! One choice's generated text → its thinking, its text and its tool calls, the way every
//! chat-shaped endpoint reads it: the thinking of a thinking model is split off first
//! (`crate::reasoning`), and only what follows it is read for calls (`crate::tools`), so a
//! call the model considers while thinking is never made, and thinking always comes out
//! before the answer.

use crate::reasoning::{self, Part, ReasoningSplitter, Split, Start};
use crate::tools::{self, CallFormat, CallSplitter, Piece, ToolCall};

/// What the splitter hands out, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    Reasoning(String),
    Text(String),
    Call(ToolCall),
}

/// Splits one streamed output.
pub struct AnswerSplitter {
    reasoning: Option<ReasoningSplitter>,
    calls: Option<CallSplitter>,
}

impl AnswerSplitter {
    /// `reasoning`: where a thinking model's thinking starts (None: the model does not
    /// think); `calls`: the call format when tools are offered.
    pub fn new(reasoning: Option<Start>, calls: Option<CallFormat>) -> Self {
        Self {
            reasoning: reasoning.map(ReasoningSplitter::new),
            calls: calls.map(CallSplitter::new),
        }
    }

    /// Feed newly generated text; returns what is now known.
    pub fn push(&mut self, text: &str) -> Vec<Out> {
        let parts = match self.reasoning.as_mut() {
            Some(r) => r.push(text),
            None => vec![Part::Content(text.to_string())],
        };
        self.read(parts)
    }

    /// The generation ended: whatever is held comes out.
    pub fn finish(&mut self) -> Vec<Out> {
        let parts = match self.reasoning.as_mut() {
            Some(r) => r.finish(),
            None => Vec::new(),
        };
        let mut out = self.read(parts);
        if let Some(calls) = self.calls.as_mut() {
            out.extend(calls.finish().into_iter().map(piece));
        }
        out
    }

    /// The thinking's share of the output (None for a model that does not think).
    pub fn split(&self) -> Option<Split> {
        self.reasoning.as_ref().map(ReasoningSplitter::split)
    }

    fn read(&mut self, parts: Vec<Part>) -> Vec<Out> {
        let mut out = Vec::new();
        for part in parts {
            match (part, self.calls.as_mut()) {
                (Part::Reasoning(t), _) => out.push(Out::Reasoning(t)),
                (Part::Content(t), Some(calls)) => {
                    out.extend(calls.push(&t).into_iter().map(piece))
                }
                (Part::Content(t), None) => out.push(Out::Text(t)),
            }
        }
        out
    }
}

fn piece(p: Piece) -> Out {
    match p {
        Piece::Text(t) => Out::Text(t),
        Piece::Call(c) => Out::Call(c),
    }
}

/// A whole output, read.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitAnswer {
    /// The thinking; None when there was none (or the model does not think).
    pub reasoning: Option<String>,
    /// The answer's text: None when the answer is only calls, or only thinking.
    pub content: Option<String>,
    pub calls: Vec<ToolCall>,
    /// The thinking's share of the output (None for a model that does not think).
    pub split: Option<Split>,
}

/// Read a whole output as [`AnswerSplitter`] reads a stream of it.
pub fn split_answer(
    reasoning: Option<Start>,
    calls: Option<CallFormat>,
    text: &str,
) -> SplitAnswer {
    let (thinking, rest, split) = match reasoning {
        Some(start) => {
            let (thinking, rest, split) = reasoning::split_answer(start, text);
            (thinking, rest, Some(split))
        }
        None => (None, text.to_string(), None),
    };
    let (content, calls) = match calls {
        Some(format) => tools::split_answer(format, &rest),
        None => (Some(rest), Vec::new()),
    };
    // A thinking model that only thought (its budget ran out) has no answer yet.
    let content = content.filter(|c| thinking.is_none() || !c.is_empty());
    SplitAnswer {
        reasoning: thinking,
        content,
        calls,
        split,
    }
}

/// [`split_answer`] of a finished choice, with the thinking and calls a remote engine
/// returned apart from its text.
pub fn read_output(
    reasoning: Option<Start>,
    calls: Option<CallFormat>,
    output: &super::stream::ChoiceOutput,
) -> SplitAnswer {
    let mut read = split_answer(reasoning, calls, &output.text);
    if !output.reasoning.is_empty() {
        read.reasoning = Some(output.reasoning.clone());
    }
    if !output.calls.is_empty() {
        read.calls.extend(output.calls.iter().cloned());
        // OpenAI's message of only calls has no content.
        read.content = read.content.filter(|c| !c.is_empty());
    }
    read
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_read_only_after_the_thinking() {
        let text = "<think>Maybe <tool_call>{\"name\": \"no\", \"arguments\": {}}</tool_call>?\
                    </think>\n\n<tool_call>\n{\"name\": \"yes\", \"arguments\": {}}\n</tool_call>";
        let a = split_answer(Some(Start::Before), Some(CallFormat::HERMES), text);
        assert_eq!(
            a.reasoning.as_deref(),
            Some("Maybe <tool_call>{\"name\": \"no\", \"arguments\": {}}</tool_call>?")
        );
        assert_eq!(a.content, None);
        assert_eq!(a.calls.len(), 1);
        assert_eq!(a.calls[0].name, "yes");

        let mut s = AnswerSplitter::new(Some(Start::Before), Some(CallFormat::HERMES));
        let mut outs = Vec::new();
        for cut in text.as_bytes().chunks(5) {
            outs.extend(s.push(std::str::from_utf8(cut).unwrap()));
        }
        outs.extend(s.finish());
        let first_call = outs.iter().position(|o| matches!(o, Out::Call(_))).unwrap();
        assert!(outs[..first_call]
            .iter()
            .all(|o| matches!(o, Out::Reasoning(_))));
        assert_eq!(outs.len() - first_call, 1, "{outs:?}");
    }

    #[test]
    fn a_model_that_does_not_think_is_read_as_before() {
        let a = split_answer(None, None, "<think>x</think>y");
        assert_eq!(a.content.as_deref(), Some("<think>x</think>y"));
        assert_eq!((a.reasoning, a.split), (None, None));
        let a = split_answer(None, None, "");
        assert_eq!(a.content.as_deref(), Some(""));
    }

    #[test]
    fn only_thinking_means_no_content() {
        let a = split_answer(Some(Start::Inside), None, "hmm");
        assert_eq!(a.reasoning.as_deref(), Some("hmm"));
        assert_eq!(a.content, None);
        let a = split_answer(Some(Start::Inside), None, "hmm</think>\n\nok");
        assert_eq!(a.content.as_deref(), Some("ok"));
    }
}
