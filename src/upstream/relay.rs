//! An upstream's answer on its way in: its SSE body → `data:` payloads → each choice's
//! [`Event`]s, the same events the local engine sends (text, thinking, whole tool calls,
//! then one `Done` or `Error` per choice), so everything after the seam treats both alike.
//! Nothing is buffered beyond a line, except a tool call's arguments until the call is
//! complete (wick sends a local model's calls whole too).

use std::collections::{BTreeMap, VecDeque};

use axum::body::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

use crate::bench::sse::LineBuffer;
use crate::engine::{Endpoint, Event, FinishReason, Usage};
use crate::tools::ToolCall;

/// The `data:` payloads of an SSE body, one at a time.
pub struct SseReader {
    body: BoxStream<'static, Result<Bytes, reqwest::Error>>,
    lines: LineBuffer,
    queued: VecDeque<String>,
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            body: response.bytes_stream().boxed(),
            lines: LineBuffer::default(),
            queued: VecDeque::new(),
        }
    }

    /// The next `data:` payload; `None` once the body has ended.
    pub async fn next_data(&mut self) -> Result<Option<String>, reqwest::Error> {
        loop {
            while let Some(line) = self.queued.pop_front() {
                if let Some(data) = line.strip_prefix("data:") {
                    return Ok(Some(data.trim_start().to_string()));
                }
            }
            match self.body.next().await {
                Some(Ok(bytes)) => self.queued.extend(self.lines.push(&bytes)),
                Some(Err(e)) => return Err(e),
                None => return Ok(None),
            }
        }
    }
}

/// What one payload meant for the stream as a whole.
#[derive(Debug, PartialEq)]
pub enum Fed {
    More,
    /// `data: [DONE]`.
    End,
    /// The upstream reported an error (its message), or sent something that is not a chunk.
    Failed(String),
}

#[derive(Default)]
struct Choice {
    finish: Option<FinishReason>,
    /// Calls by their index in the upstream's deltas: id, name, arguments so far.
    calls: BTreeMap<u64, (Option<String>, String, String)>,
    ended: bool,
}

/// Sorts an upstream's chunks into each choice's events.
pub struct Demux {
    endpoint: Endpoint,
    senders: Vec<UnboundedSender<Event>>,
    choices: Vec<Choice>,
    usage: Option<Usage>,
}

impl Demux {
    pub fn new(endpoint: Endpoint, senders: Vec<UnboundedSender<Event>>) -> Self {
        let choices = senders.iter().map(|_| Choice::default()).collect();
        Self {
            endpoint,
            senders,
            choices,
            usage: None,
        }
    }

    /// Whether the client has gone: every choice's receiver dropped.
    pub async fn closed(&self) {
        futures::future::join_all(self.senders.iter().map(|s| s.closed())).await;
    }

    fn send(&self, index: usize, event: Event) {
        // A receiver that has gone is a client that left; the relay notices on its own.
        let _ = self.senders[index].send(event);
    }

    pub fn feed(&mut self, payload: &str) -> Fed {
        if payload == "[DONE]" {
            return Fed::End;
        }
        let chunk: Value = match serde_json::from_str(payload) {
            Ok(v) => v,
            Err(_) => return Fed::Failed("the upstream sent an event that is not JSON".into()),
        };
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| error.to_string());
            return Fed::Failed(message);
        }
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            let count = |field: &str| u.get(field).and_then(Value::as_u64).unwrap_or(0) as usize;
            self.usage = Some(Usage {
                prompt_tokens: count("prompt_tokens"),
                completion_tokens: count("completion_tokens"),
            });
        }
        for choice in chunk["choices"].as_array().into_iter().flatten() {
            let index = choice["index"].as_u64().unwrap_or(0) as usize;
            if index >= self.choices.len() || self.choices[index].finish.is_some() {
                continue;
            }
            match self.endpoint {
                Endpoint::Chat => self.chat_delta(index, &choice["delta"]),
                Endpoint::Completions => {
                    if let Some(text) = choice["text"].as_str().filter(|t| !t.is_empty()) {
                        self.send(index, Event::Text(text.to_string()));
                    }
                }
            }
            if let Some(reason) = choice["finish_reason"].as_str() {
                self.choices[index].finish = Some(match reason {
                    "length" => FinishReason::Length,
                    // stop, tool_calls, content_filter: it ended on its own.
                    _ => FinishReason::Stop,
                });
                self.flush_calls(index);
            }
        }
        Fed::More
    }

    fn chat_delta(&mut self, index: usize, delta: &Value) {
        // llama.cpp's name for thinking, then vLLM's.
        let thinking = ["reasoning_content", "reasoning"]
            .iter()
            .find_map(|f| delta[*f].as_str().filter(|t| !t.is_empty()));
        if let Some(text) = thinking {
            self.send(index, Event::Reasoning(text.to_string()));
        }
        if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            self.send(index, Event::Text(text.to_string()));
        }
        let calls = &mut self.choices[index].calls;
        for (position, call) in delta["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let at = call["index"].as_u64().unwrap_or(position as u64);
            let entry = calls.entry(at).or_default();
            if let Some(id) = call["id"].as_str().filter(|i| !i.is_empty()) {
                entry.0 = Some(id.to_string());
            }
            if let Some(name) = call["function"]["name"].as_str() {
                entry.1.push_str(name);
            }
            if let Some(arguments) = call["function"]["arguments"].as_str() {
                entry.2.push_str(arguments);
            }
        }
    }

    /// A finished choice's calls, whole, in the upstream's order.
    fn flush_calls(&mut self, index: usize) {
        let calls = std::mem::take(&mut self.choices[index].calls);
        for (id, name, arguments) in calls.into_values() {
            let id = id.unwrap_or_else(|| format!("call_{}", uuid::Uuid::new_v4().simple()));
            let arguments = if arguments.trim().is_empty() {
                "{}".to_string()
            } else {
                arguments
            };
            self.send(
                index,
                Event::Call(ToolCall {
                    id,
                    name,
                    arguments,
                }),
            );
        }
    }

    /// Whether every choice has its finish reason.
    pub fn all_finished(&self) -> bool {
        self.choices.iter().all(|c| c.finish.is_some())
    }

    /// The stream is over: each choice ends with its finish reason (`Length` for one the
    /// deadline cut), the request's usage counted once, on the first choice.
    pub fn end(&mut self, unfinished: FinishReason) {
        let usage = self.usage.unwrap_or_default();
        for index in 0..self.choices.len() {
            if self.choices[index].ended {
                continue;
            }
            if self.choices[index].finish.is_none() {
                self.flush_calls(index);
            }
            self.choices[index].ended = true;
            let finish = self.choices[index].finish.unwrap_or(unfinished);
            let usage = if index == 0 { usage } else { Usage::default() };
            self.send(index, Event::Done { finish, usage });
        }
    }

    /// The stream broke: every choice still open ends with `message`.
    pub fn fail(&mut self, message: &str) {
        for index in 0..self.choices.len() {
            if !std::mem::replace(&mut self.choices[index].ended, true) {
                self.send(index, Event::Error(message.to_string()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc::unbounded_channel;

    fn demux(
        endpoint: Endpoint,
        n: usize,
    ) -> (Demux, Vec<tokio::sync::mpsc::UnboundedReceiver<Event>>) {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..n).map(|_| unbounded_channel()).unzip();
        (Demux::new(endpoint, senders), receivers)
    }

    fn drain(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Event>) -> Vec<Event> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    #[test]
    fn chat_chunks_become_events_per_choice() {
        let (mut d, mut rx) = demux(Endpoint::Chat, 2);
        for payload in [
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"choices":[{"index":1,"delta":{"content":"B"}},{"index":0,"delta":{"reasoning_content":"hm","content":"A"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]},"finish_reason":"tool_calls"}]}"#,
            r#"{"choices":[{"index":1,"delta":{},"finish_reason":"length"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":5,"total_tokens":12}}"#,
        ] {
            assert_eq!(d.feed(payload), Fed::More);
        }
        assert!(d.all_finished());
        assert_eq!(d.feed("[DONE]"), Fed::End);
        d.end(FinishReason::Stop);
        let usage = Usage {
            prompt_tokens: 7,
            completion_tokens: 5,
        };
        assert_eq!(
            drain(&mut rx[0]),
            vec![
                Event::Reasoning("hm".into()),
                Event::Text("A".into()),
                Event::Call(ToolCall {
                    id: "call_1".into(),
                    name: "f".into(),
                    arguments: "{\"a\":1}".into()
                }),
                Event::Done {
                    finish: FinishReason::Stop,
                    usage
                },
            ]
        );
        assert_eq!(
            drain(&mut rx[1]),
            vec![
                Event::Text("B".into()),
                Event::Done {
                    finish: FinishReason::Length,
                    usage: Usage::default()
                },
            ]
        );
    }

    #[test]
    fn completions_text_errors_and_breaks() {
        let (mut d, mut rx) = demux(Endpoint::Completions, 1);
        assert_eq!(
            d.feed(r#"{"choices":[{"index":0,"text":"Once"}]}"#),
            Fed::More
        );
        assert_eq!(
            d.feed(r#"{"choices":[],"error":{"message":"boom","type":"server_error"}}"#),
            Fed::Failed("boom".into())
        );
        assert!(matches!(d.feed("{oops"), Fed::Failed(_)));
        d.fail("broke");
        d.end(FinishReason::Stop); // nothing more once a choice has ended
        assert_eq!(
            drain(&mut rx[0]),
            vec![Event::Text("Once".into()), Event::Error("broke".into())]
        );
    }

    #[test]
    fn a_cut_stream_ends_unfinished_choices_with_length() {
        let (mut d, mut rx) = demux(Endpoint::Chat, 1);
        d.feed(r#"{"choices":[{"index":0,"delta":{"content":"so far"}}]}"#);
        assert!(!d.all_finished());
        d.end(FinishReason::Length);
        assert_eq!(
            drain(&mut rx[0]).last(),
            Some(&Event::Done {
                finish: FinishReason::Length,
                usage: Usage::default()
            })
        );
    }
}
