//! POST /v1/chat/completions: messages → prompt → engine → a `chat.completion`, or a stream
//! of `chat.completion.chunk` events ending in `data: [DONE]`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use async_openai::types::chat::{
    ChatChoice, ChatChoiceStream, ChatCompletionResponseMessage, ChatCompletionStreamResponseDelta,
    CompletionUsage, CreateChatCompletionResponse, CreateChatCompletionStreamResponse,
    FinishReason as OpenAiFinish, Role,
};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::Stream;
use serde::Serialize;

use super::error::ApiError;
use super::request::{parse_json, ChatRequest};
use super::AppState;
use crate::engine::{
    Event, EventStream, FinishReason, GenerateRequest, ServedModel, SubmitError, Usage,
};
use crate::metrics::GenerationTimer;
use crate::routing::{self, tradition, Family, Mechanism, RoutingFields, Tradition};
use crate::template::TemplateError;

pub async fn completions_v1(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(handle(&state, body, Version::V1, Instant::now()).await)
}

/// The V2 contract (shared/ROUTING.md): routing by tier or family, tradition layers, and
/// routing metadata on the response.
pub async fn completions_v2(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(handle(&state, body, Version::V2, Instant::now()).await)
}

fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// Everything a response needs besides the generated text.
struct Answer {
    id: String,
    created: u32,
    model: String,
    /// /v2 only.
    meta: Option<RoutingMeta>,
}

/// The fields a /v2 response carries beside OpenAI's, on the body and on every chunk.
#[derive(Debug, Clone, Serialize)]
struct RoutingMeta {
    provider: String,
    model_family: &'static str,
    auto_routing: bool,
    routing_mechanism: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    routing_tier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    routing_confidence: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tradition: Option<&'static str>,
}

/// An OpenAI response or chunk with the /v2 fields beside it.
#[derive(Serialize)]
struct WithMeta<'a, T> {
    #[serde(flatten)]
    base: T,
    #[serde(flatten)]
    meta: Option<&'a RoutingMeta>,
}

async fn handle(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
    version: Version,
    arrived: Instant,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large(state.body_limit)
        } else {
            ApiError::invalid(rejection.body_text(), None)
        }
    })?;
    let request: ChatRequest = parse_json(&body)?;
    let settings = request.settings()?;
    let mut messages = request.template_messages()?;
    let tradition = request
        .tradition
        .as_deref()
        .map(Tradition::parse)
        .transpose()
        .map_err(|message| {
            ApiError::invalid(message, Some("tradition")).with_code("invalid_value")
        })?;

    let (served, meta) = match version {
        Version::V1 => (state.resolve(request.model.as_deref()).await?, None),
        Version::V2 => {
            let fields = RoutingFields {
                auto_routing: request.auto_routing,
                model: request.model.as_deref(),
                model_family: request.model_family.as_deref(),
            };
            let route = routing::route(
                &state.models.catalog,
                &fields,
                &messages,
                request.has_tools(),
            )
            .map_err(|e| ApiError::invalid(e.message, Some(&e.param)))?;
            let served = state.resolve(Some(&route.model)).await?;
            let meta = RoutingMeta {
                provider: state.provider.clone(),
                model_family: Family::OpenSource.display_name(),
                auto_routing: route.mechanism == Mechanism::Auto,
                routing_mechanism: route.mechanism.name(),
                routing_tier: route.tier,
                routing_confidence: route
                    .confidence
                    .map(|c| (f64::from(c) * 1000.0).round() / 1000.0),
                tradition: tradition.map(Tradition::name),
            };
            (served, Some(meta))
        }
    };
    // /v2 speaks from the general perspective unless told otherwise; /v1 only when asked.
    let layer = state.traditions.layer(tradition, version == Version::V2);
    tradition::apply_layer(&mut messages, layer);

    let prompt = served
        .frontend
        .template
        .render(&messages, None, true)
        .map_err(|e| match e {
            TemplateError::Raised(message) => ApiError::invalid(
                format!("The model's chat template rejected the messages: {message}"),
                Some("messages"),
            ),
            TemplateError::Invalid(message) => ApiError::internal(message),
        })?;
    let prompt = served
        .frontend
        .tokenizer
        .encode(&prompt)
        .map_err(|e| ApiError::internal(format!("tokenizing the prompt failed: {e}")))?;
    let max_tokens = fit_context(&served, prompt.len(), settings.max_tokens)?;

    let events = served
        .backend
        .submit(GenerateRequest {
            prompt,
            sampling: settings.sampling,
            max_tokens,
            stop: settings.stop,
            ignore_eos: settings.ignore_eos,
            deadline: state.request_timeout.map(|limit| arrived + limit),
        })
        .map_err(|e| match e {
            SubmitError::QueueFull(_) => ApiError::busy(e.to_string()),
            SubmitError::Stopped => ApiError::internal(e.to_string()),
        })?;
    let answer = Answer {
        id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0),
        model: served.entry.id.clone(),
        meta,
    };
    let progress = Progress {
        timer: GenerationTimer::new(&served.entry.id, arrived),
        end: state.end_streams.clone(),
    };
    if settings.stream {
        Ok(Sse::new(stream_chunks(
            answer,
            events,
            settings.include_usage,
            progress,
        ))
        .keep_alive(KeepAlive::default())
        .into_response())
    } else {
        collect(answer, events, progress).await
    }
}

/// What watches a generation on its way out: its timings for /metrics, and the signal
/// that the shutdown grace is over.
struct Progress {
    timer: GenerationTimer,
    end: tokio_util::sync::CancellationToken,
}

impl Progress {
    /// The next engine event, timed; `None` when the server is ending the request.
    async fn next(&mut self, events: &mut EventStream) -> Option<Option<Event>> {
        let event = tokio::select! {
            biased;
            event = events.recv() => event,
            _ = self.end.cancelled() => return None,
        };
        match &event {
            Some(Event::Text(_)) => self.timer.text(),
            Some(Event::Done { usage, .. }) => self
                .timer
                .done(usage.prompt_tokens, usage.completion_tokens),
            _ => {}
        }
        Some(event)
    }
}

/// Why a request still running at the end of the shutdown grace stopped.
const SHUTTING_DOWN: &str = "the server is shutting down";

/// The completion budget: what the caller asked for, or all the context the prompt leaves.
fn fit_context(
    served: &ServedModel,
    prompt_tokens: usize,
    requested: Option<usize>,
) -> Result<usize, ApiError> {
    let context = served.frontend.context_length;
    let exceeded = |message: String| {
        ApiError::invalid(message, Some("messages")).with_code("context_length_exceeded")
    };
    if prompt_tokens >= context {
        return Err(exceeded(format!(
            "This model's maximum context length is {context} tokens. However, your messages \
             resulted in {prompt_tokens} tokens. Please reduce the length of the messages."
        )));
    }
    match requested {
        Some(n) if prompt_tokens + n > context => Err(exceeded(format!(
            "This model's maximum context length is {context} tokens. However, you requested \
             {} tokens ({prompt_tokens} in the messages, {n} in the completion). Please reduce \
             the length of the messages or completion.",
            prompt_tokens + n
        ))),
        Some(n) => Ok(n),
        None => Ok(context - prompt_tokens),
    }
}

fn finish_reason(f: FinishReason) -> OpenAiFinish {
    match f {
        FinishReason::Stop => OpenAiFinish::Stop,
        FinishReason::Length => OpenAiFinish::Length,
    }
}

fn usage(u: Usage) -> CompletionUsage {
    CompletionUsage {
        prompt_tokens: u.prompt_tokens as u32,
        completion_tokens: u.completion_tokens as u32,
        total_tokens: (u.prompt_tokens + u.completion_tokens) as u32,
        prompt_tokens_details: None,
        completion_tokens_details: None,
    }
}

#[allow(deprecated)] // function_call and system_fingerprint are deprecated but part of the types
async fn collect(
    answer: Answer,
    mut events: EventStream,
    mut progress: Progress,
) -> Result<Response, ApiError> {
    let mut text = String::new();
    loop {
        let Some(event) = progress.next(&mut events).await else {
            let mut error = ApiError::unavailable(SHUTTING_DOWN.into());
            error.param = None;
            return Err(error.with_code("server_shutting_down"));
        };
        let Some(event) = event else { break };
        match event {
            Event::Text(t) => text.push_str(&t),
            Event::Error(message) => return Err(ApiError::internal(message)),
            Event::Done { finish, usage: u } => {
                let message = ChatCompletionResponseMessage {
                    content: Some(text),
                    refusal: None,
                    tool_calls: None,
                    annotations: None,
                    role: Role::Assistant,
                    function_call: None,
                    audio: None,
                };
                let response = CreateChatCompletionResponse {
                    id: answer.id,
                    choices: vec![ChatChoice {
                        index: 0,
                        message,
                        finish_reason: Some(finish_reason(finish)),
                        logprobs: None,
                    }],
                    created: answer.created,
                    model: answer.model.clone(),
                    service_tier: None,
                    system_fingerprint: None,
                    object: "chat.completion".into(),
                    usage: Some(usage(u)),
                    metadata: None,
                    moderation: None,
                };
                return Ok(Json(WithMeta {
                    base: response,
                    meta: answer.meta.as_ref(),
                })
                .into_response());
            }
        }
    }
    Err(ApiError::internal(
        "the engine ended the request without an answer",
    ))
}

#[allow(deprecated)] // system_fingerprint is deprecated but part of the type
fn chunk(
    answer: &Answer,
    delta: ChatCompletionStreamResponseDelta,
    finish: Option<OpenAiFinish>,
) -> CreateChatCompletionStreamResponse {
    CreateChatCompletionStreamResponse {
        id: answer.id.clone(),
        choices: vec![ChatChoiceStream {
            index: 0,
            delta,
            finish_reason: finish,
            logprobs: None,
        }],
        created: answer.created,
        model: answer.model.clone(),
        service_tier: None,
        system_fingerprint: None,
        object: "chat.completion.chunk".into(),
        usage: None,
        obfuscation: None,
        moderation: None,
    }
}

#[allow(deprecated)] // function_call is deprecated but part of the type
fn delta(role: Option<Role>, content: Option<String>) -> ChatCompletionStreamResponseDelta {
    ChatCompletionStreamResponseDelta {
        content,
        function_call: None,
        tool_calls: None,
        role,
        refusal: None,
        audio: None,
    }
}

fn sse_json<T: serde::Serialize>(value: &T) -> SseEvent {
    SseEvent::default().data(serde_json::to_string(value).unwrap_or_default())
}

/// A chunk as sent: with the /v2 fields on every chunk.
fn chunk_event(answer: &Answer, chunk: CreateChatCompletionStreamResponse) -> SseEvent {
    sse_json(&WithMeta {
        base: chunk,
        meta: answer.meta.as_ref(),
    })
}

/// The chunk sent when generation fails after the stream has started: the status line is
/// gone, so the failure travels as a last chunk with `finish_reason: "error"`.
fn error_chunk(answer: &Answer, message: String) -> SseEvent {
    let error = ApiError::internal(message);
    sse_json(&WithMeta {
        base: serde_json::json!({
        "id": answer.id,
        "object": "chat.completion.chunk",
        "created": answer.created,
        "model": answer.model,
        "choices": [{ "index": 0, "delta": {}, "finish_reason": "error" }],
        "error": error.body(),
        }),
        meta: answer.meta.as_ref(),
    })
}

/// OpenAI's chunk sequence: the role first, then content deltas, then the finish reason,
/// then (when asked) a usage chunk with no choices, then `[DONE]`. Dropping this stream
/// (a client that disconnects) drops `events`, which cancels the request in the engine.
fn stream_chunks(
    answer: Answer,
    mut events: EventStream,
    include_usage: bool,
    mut progress: Progress,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    async_stream::stream! {
        yield Ok(chunk_event(&answer, chunk(&answer, delta(Some(Role::Assistant), Some(String::new())), None)));
        let mut ended = false;
        loop {
            let Some(event) = progress.next(&mut events).await else {
                yield Ok(error_chunk(&answer, SHUTTING_DOWN.into()));
                ended = true;
                break;
            };
            let Some(event) = event else { break };
            match event {
                Event::Text(text) => {
                    yield Ok(chunk_event(&answer, chunk(&answer, delta(None, Some(text)), None)));
                }
                Event::Done { finish, usage: u } => {
                    yield Ok(chunk_event(&answer, chunk(&answer, delta(None, None), Some(finish_reason(finish)))));
                    if include_usage {
                        let mut last = chunk(&answer, delta(None, None), None);
                        last.choices.clear();
                        last.usage = Some(usage(u));
                        yield Ok(chunk_event(&answer, last));
                    }
                    ended = true;
                    break;
                }
                Event::Error(message) => {
                    yield Ok(error_chunk(&answer, message));
                    ended = true;
                    break;
                }
            }
        }
        if !ended {
            yield Ok(error_chunk(&answer, "the engine ended the request without an answer".into()));
        }
        yield Ok(SseEvent::default().data("[DONE]"));
    }
}
