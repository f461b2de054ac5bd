//! What every endpoint does once it has a prompt: fit the budget to the context and submit
//! one engine request per choice. What comes back goes out through [`super::stream`].

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;

use super::error::ApiError;
use super::fields::GenerationSettings;
use super::AppState;
use crate::engine::constraint::Constraint;
use crate::engine::{
    Endpoint, EventStream, GenerateRequest, ServedModel, SubmitError, Usage, WholeRequest,
};
use crate::model::ModelFrontend;
use crate::tokenizer::Tokenizer;

/// The request body, or the error for one too large or unreadable.
pub fn checked_body(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large(state.body_limit)
        } else if stalled(&rejection) {
            ApiError::body_timeout()
        } else {
            ApiError::invalid(rejection.body_text(), None)
        }
    })
}

/// The body stopped arriving: the connection's timeout between body frames
/// (src/service/serve.rs) ended it.
fn stalled(rejection: &BytesRejection) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(error) = cause {
        if error.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// The completion budget: what the caller asked for, or all the context the prompt leaves.
/// `param` names the field holding the prompt (`messages`, `prompt`, `input`).
pub fn fit_context(
    served: &ServedModel,
    prompt_tokens: usize,
    requested: Option<usize>,
    param: &str,
) -> Result<usize, ApiError> {
    let context = local(served)?.context_length;
    let exceeded = |message: String| {
        ApiError::invalid(message, Some(param)).with_code("context_length_exceeded")
    };
    if prompt_tokens >= context {
        return Err(exceeded(format!(
            "This model's maximum context length is {context} tokens. However, your {param} \
             resulted in {prompt_tokens} tokens. Please reduce the length of the {param}."
        )));
    }
    match requested {
        Some(n) if prompt_tokens + n > context => Err(exceeded(format!(
            "This model's maximum context length is {context} tokens. However, you requested \
             {} tokens ({prompt_tokens} in the {param}, {n} in the completion). Please reduce \
             the length of the {param} or completion.",
            prompt_tokens + n
        ))),
        Some(n) => Ok(n),
        None => Ok(context - prompt_tokens),
    }
}

/// Refuse a prompt text that is sure to exceed the context before it is tokenized: a
/// body-limit prompt of one-byte words costs the tokenizer hundreds of MiB, which the
/// allocator keeps after the request is refused (issue 18's soak).
pub fn fits_before_tokenizing(
    served: &ServedModel,
    text: &str,
    param: &str,
) -> Result<(), ApiError> {
    let frontend = local(served)?;
    let context = frontend.context_length;
    let fewest = frontend.tokenizer.fewest_tokens(text);
    if fewest >= context {
        return Err(ApiError::invalid(
            format!(
                "This model's maximum context length is {context} tokens. However, your \
                 {param} ({} bytes) would result in at least {fewest} tokens. Please reduce \
                 the length of the {param}.",
                text.len()
            ),
            Some(param),
        )
        .with_code("context_length_exceeded"));
    }
    Ok(())
}

/// Who a request's choices count for in the queue, and when they must end
/// (`--request-timeout`, counted from arrival).
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    pub client: crate::engine::ClientId,
    pub deadline: Option<std::time::Instant>,
}

/// Submit `settings.n` engine requests for one prompt; choice i samples with seed + i, so
/// the choices differ and stay reproducible. They batch together in the engine.
pub fn submit_choices(
    served: &ServedModel,
    prompt: &[u32],
    settings: &GenerationSettings,
    max_tokens: usize,
    ignore_eos: bool,
    constraint: Option<&Constraint>,
    origin: Origin,
) -> Result<Vec<EventStream>, ApiError> {
    let Origin { client, deadline } = origin;
    settings.check_vocab(local(served)?.tokenizer.vocab_size())?;
    // Every choice waits in the queue as a request of its own; more than one client may
    // hold there can never be served, so that is the client's error to fix, not a 429 to
    // retry forever.
    let capacity = served.backend.queue_capacity();
    let share = crate::engine::client_share(capacity);
    if settings.n > share {
        return Err(ApiError::invalid(
            format!(
                "n = {} choices can never be queued: this server queues at most {share} \
                 requests of one client at once (--queue {capacity})",
                settings.n
            ),
            Some("n"),
        ));
    }
    let requests = (0..settings.n)
        .map(|i| {
            let mut sampling = settings.sampling.clone();
            sampling.seed = sampling.seed.map(|s| s.wrapping_add(i as u64));
            GenerateRequest {
                prompt: prompt.to_vec(),
                sampling,
                max_tokens,
                stop: settings.stop.clone(),
                ignore_eos,
                // Each choice walks the grammar on its own.
                constraint: constraint.cloned(),
                deadline,
            }
        })
        .collect();
    served
        .backend
        .submit_for(client, requests)
        .map_err(submit_error)
}

/// The tokenizer, template and context of a model run here. Only the local path asks, after
/// `backend.takes_whole_requests()` sent upstream models elsewhere.
pub fn local(served: &ServedModel) -> Result<&ModelFrontend, ApiError> {
    served.frontend.as_deref().ok_or_else(|| {
        ApiError::internal(format!(
            "model '{}' is served upstream and has no local tokenizer",
            served.entry.id
        ))
    })
}

/// The error response of a request a backend did not take.
pub fn submit_error(e: SubmitError) -> ApiError {
    match e {
        SubmitError::QueueFull(_) => ApiError::busy(e.to_string()),
        SubmitError::Unsupported(message) => {
            ApiError::invalid(message, Some("model")).with_code("model_not_supported")
        }
        SubmitError::Stopped | SubmitError::WrongLevel => ApiError::internal(e.to_string()),
        SubmitError::Upstream {
            status,
            code,
            message,
        } => ApiError::upstream(status, code, message),
    }
}

/// Fields only wick reads: an upstream gets the request without them.
const WICK_ONLY: [&str; 3] = ["auto_routing", "model_family", "tradition"];

/// Hand a checked and routed request whole to a backend that renders its own prompts (an
/// upstream, src/upstream/): the caller's body as sent, less wick's own fields, with the
/// tradition `layer` in its system message (chat). One stream per choice comes back, as
/// from [`submit_choices`], once the backend has accepted the request.
pub async fn forward(
    served: &ServedModel,
    endpoint: Endpoint,
    raw: &serde_json::Map<String, serde_json::Value>,
    layer: Option<&str>,
    choices: usize,
    origin: Origin,
) -> Result<Vec<EventStream>, ApiError> {
    let mut body = raw.clone();
    for field in WICK_ONLY {
        body.remove(field);
    }
    // llama.cpp's and vLLM's extension; a strict upstream (OpenAI) refuses fields it does
    // not know, so it goes only when it asks for something.
    if body.get("ignore_eos") != Some(&serde_json::Value::Bool(true)) {
        body.remove("ignore_eos");
    }
    if let Some(serde_json::Value::Array(messages)) = body.get_mut("messages") {
        crate::routing::tradition::apply_layer_json(messages, layer);
    }
    let request = WholeRequest {
        endpoint,
        body,
        choices,
        deadline: origin.deadline,
    };
    served
        .backend
        .submit_whole(origin.client, request)
        .await
        .map_err(submit_error)
}

/// The usage of a request whose choices are grouped `per_prompt` to a prompt: each prompt
/// counts once, every choice's completion counts.
pub fn total_usage(usages: impl IntoIterator<Item = Usage>, per_prompt: usize) -> Usage {
    let mut total = Usage::default();
    for (i, u) in usages.into_iter().enumerate() {
        if i % per_prompt.max(1) == 0 {
            total.prompt_tokens += u.prompt_tokens;
        }
        total.completion_tokens += u.completion_tokens;
    }
    total
}

/// The text of one token as the log-probability fields show it (special tokens as empty).
pub fn token_text(tokenizer: &Tokenizer, id: u32) -> String {
    tokenizer.decode(&[id]).unwrap_or_default()
}

pub fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}
