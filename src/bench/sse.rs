//! Reading an OpenAI chat-completion SSE stream: bytes → lines → what each `data:` event
//! tells a benchmark (content arrived, the choice finished, usage, an error, the end).
//!
//! Only the fields a measurement needs are read, and read leniently: servers differ in what
//! else they put in a chunk (llama-server adds `timings`, wick adds nothing).

use serde_json::Value;

/// Splits a byte stream into lines. Network chunks end anywhere, even inside a UTF-8
/// character, so bytes are held until their line is complete.
#[derive(Default)]
pub struct LineBuffer {
    pending: Vec<u8>,
}

impl LineBuffer {
    /// Append `bytes` and return the lines they complete, without their `\n` or `\r\n`.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.pending.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            lines.push(String::from_utf8_lossy(&line).into_owned());
        }
        lines
    }
}

/// Token counts as the server reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// What one `data:` event carries. One chunk may carry several of these at once
/// (llama-server puts the finish reason and usage in the same last chunk).
#[derive(Debug, Default, PartialEq)]
pub struct ChunkInfo {
    /// Non-empty content text; the role-only first chunk carries none.
    pub content: Option<String>,
    pub finished: bool,
    pub usage: Option<Usage>,
    pub error: Option<String>,
}

#[derive(Debug, PartialEq)]
pub enum SseData {
    Chunk(ChunkInfo),
    /// `data: [DONE]`: the stream is over.
    Done,
}

/// Read one SSE line. Comments, `event:`/`id:` fields and blank separators give `None`.
pub fn parse_line(line: &str) -> Option<Result<SseData, String>> {
    let payload = line.strip_prefix("data:")?.trim_start();
    if payload == "[DONE]" {
        return Some(Ok(SseData::Done));
    }
    Some(
        serde_json::from_str::<Value>(payload)
            .map(|v| SseData::Chunk(chunk_info(&v)))
            .map_err(|e| format!("a stream event is not JSON ({e}): {payload}")),
    )
}

fn chunk_info(v: &Value) -> ChunkInfo {
    let choice = v.get("choices").and_then(|c| c.get(0));
    let content = choice
        .and_then(|c| c.pointer("/delta/content"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let finished = choice
        .and_then(|c| c.get("finish_reason"))
        .is_some_and(|f| !f.is_null());
    let usage = v.get("usage").and_then(|u| {
        Some(Usage {
            prompt_tokens: u.get("prompt_tokens")?.as_u64()?,
            completion_tokens: u.get("completion_tokens")?.as_u64()?,
        })
    });
    // wick's error chunk and llama-server's both put an `error` object (or string) at the top.
    let error = v.get("error").filter(|e| !e.is_null()).map(|e| {
        e.get("message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| e.to_string())
    });
    ChunkInfo {
        content,
        finished,
        usage,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_across_chunks_and_crlf() {
        let mut buf = LineBuffer::default();
        assert!(buf.push(b"data: {\"a\"").is_empty());
        assert_eq!(
            buf.push(b":1}\r\n\r\ndata: [DO"),
            vec!["data: {\"a\":1}", ""]
        );
        assert_eq!(buf.push(b"NE]\n"), vec!["data: [DONE]"]);
    }

    #[test]
    fn utf8_split_inside_a_character_is_kept_whole() {
        let mut buf = LineBuffer::default();
        let text = "data: é\n".as_bytes();
        assert!(buf.push(&text[..7]).is_empty());
        assert_eq!(buf.push(&text[7..]), vec!["data: é"]);
    }

    #[test]
    fn role_chunk_has_no_content() {
        let line = r#"data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#;
        assert_eq!(
            parse_line(line),
            Some(Ok(SseData::Chunk(ChunkInfo::default())))
        );
    }

    #[test]
    fn content_finish_and_usage() {
        let line = r#"data: {"choices":[{"delta":{"content":"Hi"},"finish_reason":null}]}"#;
        let Some(Ok(SseData::Chunk(c))) = parse_line(line) else {
            panic!("not a chunk")
        };
        assert_eq!(c.content.as_deref(), Some("Hi"));
        assert!(!c.finished);

        // llama-server's last chunk: finish reason and usage together, no space after `data:`.
        let line = r#"data:{"choices":[{"delta":{},"finish_reason":"length"}],"usage":{"prompt_tokens":31,"completion_tokens":128,"total_tokens":159}}"#;
        let Some(Ok(SseData::Chunk(c))) = parse_line(line) else {
            panic!("not a chunk")
        };
        assert!(c.finished);
        assert_eq!(
            c.usage,
            Some(Usage {
                prompt_tokens: 31,
                completion_tokens: 128
            })
        );
    }

    #[test]
    fn errors_done_and_other_lines() {
        let line = r#"data: {"choices":[],"error":{"message":"boom","type":"server_error"}}"#;
        let Some(Ok(SseData::Chunk(c))) = parse_line(line) else {
            panic!("not a chunk")
        };
        assert_eq!(c.error.as_deref(), Some("boom"));
        assert_eq!(parse_line("data: [DONE]"), Some(Ok(SseData::Done)));
        assert_eq!(parse_line(": keep-alive"), None);
        assert_eq!(parse_line("event: message"), None);
        assert_eq!(parse_line(""), None);
        assert!(matches!(parse_line("data: {oops"), Some(Err(_))));
    }
}
