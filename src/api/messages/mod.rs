//! The Anthropic Messages API (`POST /v1/messages`, `POST /v1/messages/count_tokens`) as a
//! translation layer over chat, as the Responses API is: the request becomes a chat request
//! ([`convert`]) that runs through the chat endpoint's own path ([`super::chat::start`]:
//! routing, template, tools and their grammar, limits, the queue), and its output goes out
//! through the one streaming driver ([`super::stream::Generation`]: metrics, deadlines,
//! shutdown grace), shaped as Anthropic's message object or its event stream ([`events`]).
//! Errors are in Anthropic's shape (src/api/error.rs).

mod convert;
mod events;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::answer::{self, SplitAnswer};
use super::chat::{self, Answer, Caller, RawBody, Started, Version};
use super::error::ApiError;
use super::fields::GenerationFields;
use super::generation;
use super::request::{parse_json, ChatRequest};
use super::stream::{ChoiceOutput, Generation};
use super::AppState;
use crate::engine::FinishReason;
use crate::tools::ToolCall;
use convert::MessagesRequest;

pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // The request's time counts from here (`--request-timeout`, the metrics).
    let arrived = Instant::now();
    handle(state, caller, body, arrived)
        .await
        .unwrap_or_else(ApiError::into_anthropic)
}

pub async fn count_tokens(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    count(&state, caller, body)
        .await
        .unwrap_or_else(ApiError::into_anthropic)
}

/// The request, its chat translation and its sampling fields, read off the async threads
/// (a body up to the limit takes a while to parse).
async fn read(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<(MessagesRequest, ChatRequest, GenerationFields, RawBody), ApiError> {
    let body = generation::checked_body(state, body)?;
    state
        .cpu_work
        .run(move || {
            let request: MessagesRequest = parse_json(&body)?;
            let raw: Map<String, Value> = parse_json(&body)?;
            // Type errors in the sampling fields are reported against the caller's own body.
            let _: GenerationFields = parse_json(&body)?;
            let chat_body = convert::chat_body(&request, &raw)?;
            let from_chat = |e: serde_json::Error| {
                ApiError::invalid(format!("Invalid request: {e}"), Some("messages"))
            };
            let chat_request: ChatRequest =
                serde_json::from_value(chat_body.clone()).map_err(from_chat)?;
            let fields: GenerationFields =
                serde_json::from_value(chat_body.clone()).map_err(from_chat)?;
            // What an upstream is handed: the chat request, not the Anthropic one.
            let raw_chat = chat_body.as_object().cloned().unwrap_or_default();
            Ok((request, chat_request, fields, raw_chat))
        })
        .await?
}

async fn handle(
    state: Arc<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
    arrived: Instant,
) -> Result<Response, ApiError> {
    let (request, chat_request, fields, raw_chat) = read(&state, body).await?;
    if request.max_tokens.is_none() {
        return Err(ApiError::invalid(
            "max_tokens: Field required",
            Some("max_tokens"),
        ));
    }
    let started = chat::start(
        &state,
        caller,
        &chat_request,
        &raw_chat,
        &fields,
        Version::V1,
        arrived,
    )
    .await?;
    let Started {
        answer,
        served,
        streams,
        prompt_tokens,
        ..
    } = started;
    let reply = Reply {
        id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
        stops: request.stop_sequences.unwrap_or_default(),
    };
    let generation = Generation::new(&state, &served.entry.id, arrived, streams);
    if request.stream {
        Ok(Sse::new(events::stream(
            reply,
            answer,
            prompt_tokens.unwrap_or(0),
            generation,
        ))
        .keep_alive(KeepAlive::default())
        .into_response())
    } else {
        let output = generation
            .collect()
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::internal("the engine returned no choice"))?;
        Ok(Json(reply.message(&answer, &output)).into_response())
    }
}

/// The prompt's tokens as /v1/messages would count them: the same translation, template
/// and tools, tokenized, nothing generated.
async fn count(
    state: &AppState,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (_, chat_request, fields, raw_chat) = read(state, body).await?;
    let tokens = chat::count_prompt(state, caller, &chat_request, &raw_chat, &fields).await?;
    Ok(Json(json!({ "input_tokens": tokens })).into_response())
}

/// Everything about one message besides the generated text.
pub(super) struct Reply {
    id: String,
    /// The request's `stop_sequences`, to name the one that ended the message.
    stops: Vec<String>,
}

impl Reply {
    /// `stop_reason` and `stop_sequence` of an answer that ended with `finish`.
    fn stop(&self, finish: FinishReason, made_calls: bool) -> (&'static str, Value) {
        match finish {
            FinishReason::Length => ("max_tokens", Value::Null),
            FinishReason::StopSequence(i) => ("stop_sequence", json!(self.stops.get(i).cloned())),
            FinishReason::Stop if made_calls => ("tool_use", Value::Null),
            FinishReason::Stop => ("end_turn", Value::Null),
        }
    }

    /// The message object, before its content (a stream's `message_start` carries it
    /// empty).
    fn object(&self, answer: &Answer, content: Vec<Value>, usage: Value) -> Value {
        json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": answer.model,
            "content": content,
            "stop_reason": null,
            "stop_sequence": null,
            "usage": usage,
        })
    }

    /// The whole message once the answer has finished: thinking, text, then calls.
    fn message(&self, answer: &Answer, output: &ChoiceOutput) -> Value {
        let SplitAnswer {
            reasoning,
            content,
            calls,
            ..
        } = answer::read_output(answer.reasoning, answer.calls, output);
        let mut blocks = Vec::new();
        if let Some(thinking) = reasoning {
            blocks.push(thinking_block(&thinking));
        }
        let text = content.unwrap_or_default();
        if !text.is_empty() || calls.is_empty() {
            blocks.push(json!({ "type": "text", "text": text }));
        }
        blocks.extend(calls.iter().map(|c| tool_use_block(c, true)));
        let usage = json!({
            "input_tokens": output.usage.prompt_tokens,
            "output_tokens": output.usage.completion_tokens,
        });
        let mut object = self.object(answer, blocks, usage);
        let (reason, sequence) = self.stop(output.finish, !calls.is_empty());
        object["stop_reason"] = json!(reason);
        object["stop_sequence"] = sequence;
        object
    }
}

/// Thinking wick produced: Anthropic's clients expect a `signature`; wick signs nothing.
fn thinking_block(thinking: &str) -> Value {
    json!({ "type": "thinking", "thinking": thinking, "signature": "" })
}

/// A call as a `tool_use` block; its `input` empty when `with_input` is false (a stream
/// sends it as `input_json_delta`).
fn tool_use_block(call: &ToolCall, with_input: bool) -> Value {
    let input = if with_input {
        call_input(call)
    } else {
        json!({})
    };
    json!({ "type": "tool_use", "id": tool_use_id(call), "name": call.name, "input": input })
}

/// Anthropic's ids for calls start `toolu_`; the id is what a `tool_result` answers.
fn tool_use_id(call: &ToolCall) -> String {
    format!("toolu_{}", call.id.trim_start_matches("call_"))
}

/// A call's arguments as the JSON object Anthropic's `input` is. The grammar makes them
/// one; anything else is kept as a string rather than lost.
fn call_input(call: &ToolCall) -> Value {
    serde_json::from_str(&call.arguments).unwrap_or_else(|_| json!(call.arguments))
}
