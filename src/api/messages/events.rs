//! Anthropic's event stream for one message: `message_start` (the message, empty, with the
//! prompt's tokens), `ping`, then each content block in order: `content_block_start`, its
//! deltas (`thinking_delta`, `text_delta`, or for a call one `input_json_delta` with its
//! arguments), `content_block_stop`; then `message_delta` with `stop_reason`,
//! `stop_sequence` and the output tokens, and `message_stop`. A failure after the stream
//! has started (an engine error, the end of the shutdown grace) is an `error` event in
//! Anthropic's shape, and nothing follows it. Dropping the stream (a client that goes
//! away) drops the generation, which cancels it in the engine.

use std::convert::Infallible;

use axum::response::sse::Event as SseEvent;
use futures::Stream;
use serde_json::{json, Value};

use super::super::answer::{AnswerSplitter, Out};
use super::super::chat::Answer;
use super::super::stream::{Generation, Step};
use super::{thinking_block, tool_use_block, Reply};

fn event(kind: &str, mut body: Value) -> SseEvent {
    body["type"] = json!(kind);
    SseEvent::default()
        .event(kind)
        .data(serde_json::to_string(&body).unwrap_or_default())
}

/// The kind of the content block that is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Thinking,
    Text,
}

/// Numbers the blocks and opens and closes them in order.
#[derive(Default)]
struct Blocks {
    /// The open block's kind, if one is open.
    open: Option<Open>,
    /// Blocks started so far (the next block's index).
    started: usize,
}

impl Blocks {
    fn close(&mut self, events: &mut Vec<SseEvent>) {
        if self.open.take().is_some() {
            events.push(event(
                "content_block_stop",
                json!({ "index": self.started - 1 }),
            ));
        }
    }

    /// Start a block (closing the open one) and return its index.
    fn start(&mut self, block: Value, events: &mut Vec<SseEvent>) -> usize {
        self.close(events);
        let index = self.started;
        self.started += 1;
        events.push(event(
            "content_block_start",
            json!({ "index": index, "content_block": block }),
        ));
        index
    }

    /// A delta of a thinking or text block, opening one of that kind when need be.
    fn delta(&mut self, kind: Open, delta: Value, events: &mut Vec<SseEvent>) {
        if self.open != Some(kind) {
            let block = match kind {
                Open::Thinking => thinking_block(""),
                Open::Text => json!({ "type": "text", "text": "" }),
            };
            self.start(block, events);
            self.open = Some(kind);
        }
        events.push(event(
            "content_block_delta",
            json!({ "index": self.started - 1, "delta": delta }),
        ));
    }
}

pub(super) fn stream(
    reply: Reply,
    answer: Answer,
    prompt_tokens: usize,
    mut generation: Generation,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    async_stream::stream! {
        let usage = json!({ "input_tokens": prompt_tokens, "output_tokens": 0 });
        let message = reply.object(&answer, Vec::new(), usage);
        yield Ok(event("message_start", json!({ "message": message })));
        yield Ok(event("ping", json!({})));
        let mut splitter = AnswerSplitter::new(answer.reasoning, answer.calls);
        let mut blocks = Blocks::default();
        let mut made_calls = false;
        while let Some(step) = generation.next().await {
            let (outs, done) = match step {
                Step::Text { text, .. } => (splitter.push(&text), None),
                // A remote engine's thinking and calls come apart from its text.
                Step::Reasoning { text, .. } => (vec![Out::Reasoning(text)], None),
                Step::Call { call, .. } => (vec![Out::Call(call)], None),
                Step::Finished { finish, usage, .. } => (splitter.finish(), Some((finish, usage))),
                Step::Failed { failure, .. } => {
                    let error = failure.into_error();
                    yield Ok(event("error", error.anthropic_body()));
                    return;
                }
            };
            let mut events = Vec::new();
            for out in outs {
                match out {
                    Out::Reasoning(t) => blocks.delta(
                        Open::Thinking,
                        json!({ "type": "thinking_delta", "thinking": t }),
                        &mut events,
                    ),
                    Out::Text(t) if t.is_empty() => {}
                    Out::Text(t) => blocks.delta(
                        Open::Text,
                        json!({ "type": "text_delta", "text": t }),
                        &mut events,
                    ),
                    Out::Call(call) => {
                        made_calls = true;
                        let index = blocks.start(tool_use_block(&call, false), &mut events);
                        events.push(event("content_block_delta", json!({
                            "index": index,
                            "delta": { "type": "input_json_delta", "partial_json": call.arguments },
                        })));
                        events.push(event("content_block_stop", json!({ "index": index })));
                    }
                }
            }
            for e in events {
                yield Ok(e);
            }
            if let Some((finish, usage)) = done {
                let mut events = Vec::new();
                // A message always has a block: an empty text one when nothing else came.
                if blocks.started == 0 {
                    blocks.start(json!({ "type": "text", "text": "" }), &mut events);
                    blocks.open = Some(Open::Text);
                }
                blocks.close(&mut events);
                for e in events {
                    yield Ok(e);
                }
                let (reason, sequence) = reply.stop(finish, made_calls);
                yield Ok(event("message_delta", json!({
                    "delta": { "stop_reason": reason, "stop_sequence": sequence },
                    "usage": { "output_tokens": usage.completion_tokens },
                })));
                yield Ok(event("message_stop", json!({})));
                return;
            }
        }
    }
}
