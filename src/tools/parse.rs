//! Generated text → content and tool calls, as it streams. Text that might be the start of
//! a call marker is held back until it is known; a call is handed out once its closing
//! marker arrives; a marked block that does not hold valid calls stays text.
//!
//! Models left free to choose (`tool_choice: auto`) sometimes answer with the call's JSON
//! and no markers, bare or in a fenced code block (Qwen2.5-Coder-0.5B does both): an answer
//! that starts with `{`, `[` or a backtick is held to its end and read as calls when it is
//! exactly that, `{"name": …, "arguments": {…}}` or a list of them.

use serde_json::Value;

use super::format::CallFormat;

/// One call the model made.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments object as JSON text (OpenAI's `function.arguments`).
    pub arguments: String,
}

/// What the splitter hands out, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Text(String),
    Call(ToolCall),
}

/// Splits streamed text into content and calls.
pub struct CallSplitter {
    format: CallFormat,
    buffer: String,
    inside: bool,
    /// Whitespace between or around calls: shown only if real text follows it.
    blank: String,
    calls: usize,
    /// None until the answer's first visible character; then whether it may be bare JSON.
    bare: Option<bool>,
}

impl CallSplitter {
    pub fn new(format: CallFormat) -> Self {
        Self {
            format,
            buffer: String::new(),
            inside: false,
            blank: String::new(),
            calls: 0,
            bare: None,
        }
    }

    /// Feed newly generated text; returns what is now known.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.buffer.push_str(text);
        if self.bare.is_none() {
            let start = self.buffer.trim_start();
            if start.is_empty() {
                return Vec::new();
            }
            self.bare = Some(start.starts_with(['{', '[', '`']));
        }
        if self.bare == Some(true) {
            return Vec::new();
        }
        self.split()
    }

    /// Hand out what the buffer holds that is known to be text or calls.
    fn split(&mut self) -> Vec<Piece> {
        let mut out = Vec::new();
        loop {
            if self.inside {
                let Some(end) = self.buffer.find(self.format.close) else {
                    break;
                };
                let inner = self.buffer[..end].to_string();
                self.buffer.drain(..end + self.format.close.len());
                self.inside = false;
                match parse_calls(&inner) {
                    Some(calls) => {
                        self.blank.clear();
                        self.calls += calls.len();
                        out.extend(calls.into_iter().map(Piece::Call));
                    }
                    None => {
                        let raw = format!("{}{inner}{}", self.format.open, self.format.close);
                        self.text(&raw, &mut out);
                    }
                }
            } else if let Some(start) = self.buffer.find(self.format.open) {
                let before = self.buffer[..start].to_string();
                self.buffer.drain(..start + self.format.open.len());
                self.text(&before, &mut out);
                self.inside = true;
            } else {
                // Keep back the longest tail that could still grow into the open marker.
                let keep = (1..self.format.open.len())
                    .rev()
                    .find(|&n| {
                        self.buffer.len() >= n
                            && self.buffer.is_char_boundary(self.buffer.len() - n)
                            && self
                                .format
                                .open
                                .starts_with(&self.buffer[self.buffer.len() - n..])
                    })
                    .unwrap_or(0);
                let ready: String = self.buffer.drain(..self.buffer.len() - keep).collect();
                self.text(&ready, &mut out);
                break;
            }
        }
        out
    }

    /// The generation ended: whatever is held is text (an unfinished call included).
    pub fn finish(&mut self) -> Vec<Piece> {
        let mut out = Vec::new();
        if self.bare == Some(true) {
            self.bare = Some(false);
            match parse_bare_calls(&self.buffer) {
                Some(calls) => {
                    self.buffer.clear();
                    return calls.into_iter().map(Piece::Call).collect();
                }
                None => out = self.split(),
            }
        }
        let mut rest = std::mem::take(&mut self.buffer);
        if self.inside {
            rest.insert_str(0, self.format.open);
            self.inside = false;
        }
        self.text(&rest, &mut out);
        if self.calls == 0 && !self.blank.is_empty() {
            out.push(Piece::Text(std::mem::take(&mut self.blank)));
        }
        out
    }

    fn text(&mut self, text: &str, out: &mut Vec<Piece>) {
        if text.is_empty() {
            return;
        }
        if text.trim().is_empty() {
            self.blank.push_str(text);
            return;
        }
        let mut shown = std::mem::take(&mut self.blank);
        shown.push_str(text);
        out.push(Piece::Text(shown));
    }
}

/// Split a whole answer into its content (None when only calls) and calls.
pub fn split_answer(format: CallFormat, text: &str) -> (Option<String>, Vec<ToolCall>) {
    let mut splitter = CallSplitter::new(format);
    let mut pieces = splitter.push(text);
    pieces.extend(splitter.finish());
    let (mut content, mut calls) = (String::new(), Vec::new());
    for piece in pieces {
        match piece {
            Piece::Text(t) => content.push_str(&t),
            Piece::Call(c) => calls.push(c),
        }
    }
    let content = if calls.is_empty() || !content.trim().is_empty() {
        Some(content)
    } else {
        None
    };
    (content, calls)
}

/// The calls in one marked block: one call object, or a list of them (an empty list is no
/// call). None when the block is not that.
fn parse_calls(block: &str) -> Option<Vec<ToolCall>> {
    match serde_json::from_str::<Value>(block.trim()).ok()? {
        Value::Array(items) => items.iter().map(call).collect(),
        object => Some(vec![call(&object)?]),
    }
}

/// An unmarked answer that is nothing but calls: each object has exactly `name` and an
/// `arguments` object, so ordinary JSON answers stay text.
fn parse_bare_calls(text: &str) -> Option<Vec<ToolCall>> {
    let text = text.trim();
    let json = match text.strip_prefix("```") {
        Some(fenced) => fenced
            .trim_start_matches(|c: char| c.is_ascii_alphabetic())
            .strip_suffix("```")?,
        None => text,
    };
    let value: Value = serde_json::from_str(json.trim()).ok()?;
    let items = match &value {
        Value::Array(items) if !items.is_empty() => items.as_slice(),
        Value::Array(_) => return None,
        object => std::slice::from_ref(object),
    };
    let is_call = |v: &Value| {
        v.as_object().is_some_and(|o| {
            o.len() == 2
                && o.get("name").is_some_and(Value::is_string)
                && o.get("arguments").is_some_and(Value::is_object)
        })
    };
    if !items.iter().all(is_call) {
        return None;
    }
    items.iter().map(call).collect()
}

fn call(value: &Value) -> Option<ToolCall> {
    let name = value.get("name")?.as_str()?.to_string();
    let arguments = match value.get("arguments") {
        None | Some(Value::Null) => "{}".to_string(),
        // Some models write the arguments as a JSON string already.
        Some(Value::String(s)) if serde_json::from_str::<Value>(s).is_ok() => s.clone(),
        Some(v) if v.is_object() => v.to_string(),
        Some(_) => return None,
    };
    Some(ToolCall {
        id: format!("call_{}", &uuid::Uuid::new_v4().simple().to_string()[..24]),
        name,
        arguments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts_and_names(pieces: &[Piece]) -> Vec<String> {
        pieces
            .iter()
            .map(|p| match p {
                Piece::Text(t) => format!("text:{t}"),
                Piece::Call(c) => format!("call:{}:{}", c.name, c.arguments),
            })
            .collect()
    }

    #[test]
    fn holds_back_a_partial_marker_and_splits_calls_from_text() {
        let mut s = CallSplitter::new(CallFormat::HERMES);
        let mut pieces = Vec::new();
        for delta in [
            "Let me check.<to",
            "ol_call>\n{\"name\": \"f\", ",
            "\"arguments\": {\"x\": 1}}\n</tool_",
            "call>\n<tool_call>\n{\"name\": \"g\", \"arguments\": {}}\n</tool_call>",
        ] {
            pieces.extend(s.push(delta));
        }
        pieces.extend(s.finish());
        assert_eq!(
            texts_and_names(&pieces),
            ["text:Let me check.", "call:f:{\"x\":1}", "call:g:{}"]
        );
    }

    #[test]
    fn a_list_block_gives_every_call_and_a_bad_block_stays_text() {
        let (content, calls) = split_answer(
            CallFormat::LIST,
            "<tool_call>[{\"name\": \"a\", \"arguments\": {}}, {\"name\": \"b\", \"arguments\": {\"q\": \"x\"}}]</tool_call>",
        );
        assert_eq!(content, None);
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[1].arguments, "{\"q\":\"x\"}");
        let (content, calls) = split_answer(CallFormat::LIST, "a <tool_call>oops</tool_call>");
        assert!(calls.is_empty());
        assert_eq!(content.as_deref(), Some("a <tool_call>oops</tool_call>"));
    }

    #[test]
    fn an_unmarked_call_is_a_call_and_other_json_stays_text() {
        let (content, calls) = split_answer(
            CallFormat::HERMES,
            "{\"name\": \"f\", \"arguments\": {\"city\": \"Paris\"}}",
        );
        assert_eq!(content, None);
        assert_eq!(calls[0].name, "f");
        let fenced = "```json\n{\"name\": \"g\", \"arguments\": {}}\n```";
        assert_eq!(split_answer(CallFormat::HERMES, fenced).1[0].name, "g");
        let (content, calls) = split_answer(CallFormat::HERMES, "{\"name\": \"Ada\", \"age\": 3}");
        assert!(calls.is_empty());
        assert_eq!(content.as_deref(), Some("{\"name\": \"Ada\", \"age\": 3}"));
    }

    #[test]
    fn a_lone_less_than_sign_is_text() {
        let (content, calls) = split_answer(CallFormat::HERMES, "1 < 2");
        assert!(calls.is_empty());
        assert_eq!(content.as_deref(), Some("1 < 2"));
    }
}
