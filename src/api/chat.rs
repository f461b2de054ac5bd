//! POST /v1/chat/completions: messages → prompt → engine → a `chat.completion`, or a stream
//! of `chat.completion.chunk` events ending in `data: [DONE]`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

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

use super::error::ApiError;
use super::request::{parse_json, ChatRequest};
use super::{AppState, ServedModel};
use crate::engine::{Event, EventStream, FinishReason, GenerateRequest, SubmitError, Usage};
use crate::template::TemplateError;

pub async fn completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match handle(&state, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// Everything a response needs besides the generated text.
struct Answer {
    id: String,
    created: u32,
    model: String,
}

async fn handle(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
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
    let messages = request.template_messages()?;
    let served = state.resolve(request.model.as_deref())?;

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
    let max_tokens = fit_context(served, prompt.len(), settings.max_tokens)?;

    let events = served
        .backend
        .submit(GenerateRequest {
            prompt,
            sampling: settings.sampling,
            max_tokens,
            stop: settings.stop,
            ignore_eos: settings.ignore_eos,
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
    };
    if settings.stream {
        Ok(
            Sse::new(stream_chunks(answer, events, settings.include_usage))
                .keep_alive(KeepAlive::default())
                .into_response(),
        )
    } else {
        collect(answer, events).await
    }
}

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
async fn collect(answer: Answer, mut events: EventStream) -> Result<Response, ApiError> {
    let mut text = String::new();
    while let Some(event) = events.recv().await {
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
                    model: answer.model,
                    service_tier: None,
                    system_fingerprint: None,
                    object: "chat.completion".into(),
                    usage: Some(usage(u)),
                    metadata: None,
                    moderation: None,
                };
                return Ok(Json(response).into_response());
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

/// The chunk sent when generation fails after the stream has started: the status line is
/// gone, so the failure travels as a last chunk with `finish_reason: "error"`.
fn error_chunk(answer: &Answer, message: String) -> SseEvent {
    let error = ApiError::internal(message);
    sse_json(&serde_json::json!({
        "id": answer.id,
        "object": "chat.completion.chunk",
        "created": answer.created,
        "model": answer.model,
        "choices": [{ "index": 0, "delta": {}, "finish_reason": "error" }],
        "error": error.body(),
    }))
}

/// OpenAI's chunk sequence: the role first, then content deltas, then the finish reason,
/// then (when asked) a usage chunk with no choices, then `[DONE]`. Dropping this stream
/// (a client that disconnects) drops `events`, which cancels the request in the engine.
fn stream_chunks(
    answer: Answer,
    mut events: EventStream,
    include_usage: bool,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    async_stream::stream! {
        yield Ok(sse_json(&chunk(&answer, delta(Some(Role::Assistant), Some(String::new())), None)));
        let mut ended = false;
        while let Some(event) = events.recv().await {
            match event {
                Event::Text(text) => {
                    yield Ok(sse_json(&chunk(&answer, delta(None, Some(text)), None)));
                }
                Event::Done { finish, usage: u } => {
                    yield Ok(sse_json(&chunk(&answer, delta(None, None), Some(finish_reason(finish)))));
                    if include_usage {
                        let mut last = chunk(&answer, delta(None, None), None);
                        last.choices.clear();
                        last.usage = Some(usage(u));
                        yield Ok(sse_json(&last));
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
