//! POST /v1/completions: the legacy text API. The prompt is raw text (or token ids), given to
//! the model with no chat template; one choice per prompt and `n`, in order. `suffix` is
//! served by fill-in-the-middle on models whose vocabulary has FIM tokens.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use async_openai::types::chat::{
    Choice, CompletionFinishReason, CompletionUsage, Logprobs, Prompt,
};
use async_openai::types::completions::CreateCompletionResponse;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::Stream;
use serde::Deserialize;

use super::chat::{sse_json, RawBody};
use super::error::ApiError;
use super::fields::GenerationFields;
use super::generation::{self, fit_context, submit_choices, token_text};
use super::request::{parse_json, StreamOptions};
use super::stream::{Generation, Step};
use super::AppState;
use crate::engine::{Endpoint, EventStream, FinishReason, ServedModel, TokenLogprob, Usage};
use crate::tokenizer::Tokenizer;

/// OpenAI's default budget for this endpoint (chat's default is "what the context leaves").
const DEFAULT_MAX_TOKENS: usize = 16;
/// OpenAI allows 5 alternatives here; we allow chat's 20.
const MAX_LOGPROBS: i64 = 20;
/// The fill-in-the-middle tokens of Qwen2.5-Coder, StarCoder2 and others.
const FIM_TOKENS: [&str; 3] = ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"];

#[derive(Debug, Deserialize)]
struct CompletionRequest {
    model: Option<String>,
    prompt: Prompt,
    suffix: Option<String>,
    #[serde(default)]
    echo: bool,
    /// How many alternatives per token to report (0 still reports the chosen token's).
    logprobs: Option<i64>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    /// llama.cpp's extension, as in chat.
    #[serde(default)]
    ignore_eos: bool,
}

/// One prompt: the ids the model sees and the text `echo` returns.
struct PromptInput {
    ids: Vec<u32>,
    text: String,
}

pub async fn completions(
    State(state): State<Arc<AppState>>,
    caller: super::chat::Caller,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // The request's time counts from here (`--request-timeout`, the metrics).
    let arrived = Instant::now();
    handle(&state, caller, body, arrived)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn handle(
    state: &AppState,
    caller: super::chat::Caller,
    body: Result<Bytes, BytesRejection>,
    arrived: Instant,
) -> Result<Response, ApiError> {
    let body = generation::checked_body(state, body)?;
    // Parsing a large body and tokenizing its prompts run off the async threads
    // (src/api/cpu_work.rs).
    let (request, fields, raw) = state
        .cpu_work
        .run(
            move || -> Result<(CompletionRequest, GenerationFields, RawBody), ApiError> {
                Ok((parse_json(&body)?, parse_json(&body)?, parse_json(&body)?))
            },
        )
        .await??;
    let logprobs = match request.logprobs {
        Some(l) if !(0..=MAX_LOGPROBS).contains(&l) => {
            return Err(ApiError::invalid(
                format!("logprobs must be between 0 and {MAX_LOGPROBS}, got {l}"),
                Some("logprobs"),
            )
            .with_code("invalid_value"))
        }
        l => l.map(|l| l as usize),
    };
    let settings = fields.settings(logprobs)?;
    let served = state.resolve(request.model.as_deref()).await?;
    let origin = generation::Origin {
        client: caller.0,
        deadline: state.request_timeout.map(|limit| arrived + limit),
    };
    if served.backend.takes_whole_requests() {
        // The upstream tokenizes the prompts, echoes and fills in the middle itself.
        let choices = prompt_count(&request.prompt) * settings.n;
        let streams =
            generation::forward(&served, Endpoint::Completions, &raw, None, choices, origin)
                .await?;
        let echoes = vec![String::new(); choices];
        return respond(
            state, &request, &served, settings.n, logprobs, streams, echoes, arrived,
        )
        .await;
    }
    let (request, model) = (Arc::new(request), served.clone());
    let asked = request.clone();
    let prompts = state
        .cpu_work
        .run(move || prompt_inputs(&asked, &model))
        .await??;

    let mut streams = Vec::with_capacity(prompts.len() * settings.n);
    for prompt in &prompts {
        let max_tokens = fit_context(
            &served,
            prompt.ids.len(),
            Some(settings.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
            "prompt",
        )?;
        streams.extend(submit_choices(
            &served,
            &prompt.ids,
            &settings,
            max_tokens,
            request.ignore_eos,
            None,
            origin,
        )?);
    }
    // What each choice's text starts with: its prompt when echoing.
    let echoes: Vec<String> = prompts
        .iter()
        .flat_map(|p| std::iter::repeat_n(p.text.clone(), settings.n))
        .map(|t| if request.echo { t } else { String::new() })
        .collect();
    respond(
        state, &request, &served, settings.n, logprobs, streams, echoes, arrived,
    )
    .await
}

/// How many prompts a request holds (its choices are this times `n`).
fn prompt_count(prompt: &Prompt) -> usize {
    match prompt {
        Prompt::String(_) | Prompt::IntegerArray(_) => 1,
        Prompt::StringArray(list) => list.len(),
        Prompt::ArrayOfIntegerArray(lists) => lists.len(),
    }
}

/// The response of submitted choices (`echoes`: what each choice's text starts with), whole
/// or as a stream.
#[allow(clippy::too_many_arguments)]
async fn respond(
    state: &AppState,
    request: &CompletionRequest,
    served: &Arc<ServedModel>,
    n: usize,
    logprobs: Option<usize>,
    streams: Vec<EventStream>,
    echoes: Vec<String>,
    arrived: Instant,
) -> Result<Response, ApiError> {
    let meta = Meta {
        id: format!("cmpl-{}", uuid::Uuid::new_v4().simple()),
        created: generation::unix_now(),
        model: served.entry.id.clone(),
        per_prompt: n,
        logprobs: logprobs.is_some(),
    };
    let generation = Generation::new(state, &served.entry.id, arrived, streams);
    if request.stream {
        let include_usage = request
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage);
        return Ok(Sse::new(stream_chunks(
            meta,
            served.clone(),
            generation,
            echoes,
            include_usage,
        ))
        .keep_alive(KeepAlive::default())
        .into_response());
    }
    let outputs = generation.collect().await?;
    let tokenizer = served.frontend.as_ref().map(|f| &f.tokenizer);
    let total = generation::total_usage(outputs.iter().map(|o| o.usage), meta.per_prompt);
    let choices = outputs
        .into_iter()
        .zip(echoes)
        .enumerate()
        .map(|(index, (output, echo))| {
            let logprobs = tokenizer
                .filter(|_| meta.logprobs)
                .map(|t| legacy_logprobs(t, &output.logprobs, echo.len()));
            Choice {
                text: echo + &output.text,
                index: index as u32,
                logprobs,
                finish_reason: Some(finish_reason(output.finish)),
            }
        })
        .collect();
    Ok(Json(meta.response(choices, Some(total))).into_response())
}

/// The prompts of a request, tokenized, with the FIM wrapping when a suffix is given.
fn prompt_inputs(
    request: &CompletionRequest,
    served: &ServedModel,
) -> Result<Vec<PromptInput>, ApiError> {
    let tokenizer = &generation::local(served)?.tokenizer;
    let encode = |text: &str| {
        generation::fits_before_tokenizing(served, text, "prompt")?;
        tokenizer
            .encode(text)
            .map_err(|e| ApiError::internal(format!("tokenizing the prompt failed: {e}")))
    };
    let from_ids = |ids: &Vec<u32>| -> Result<PromptInput, ApiError> {
        let vocab = tokenizer.vocab_size();
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(ApiError::invalid(
                format!("prompt token {bad} is outside this model's vocabulary of {vocab}"),
                Some("prompt"),
            )
            .with_code("invalid_value"));
        }
        Ok(PromptInput {
            ids: ids.clone(),
            text: tokenizer.decode(ids).unwrap_or_default(),
        })
    };
    let from_text = |text: &String| -> Result<PromptInput, ApiError> {
        Ok(PromptInput {
            ids: encode(text)?,
            text: text.clone(),
        })
    };
    let mut prompts = match &request.prompt {
        Prompt::String(t) => vec![from_text(t)?],
        Prompt::StringArray(ts) => ts.iter().map(from_text).collect::<Result<_, _>>()?,
        Prompt::IntegerArray(ids) => vec![from_ids(ids)?],
        Prompt::ArrayOfIntegerArray(lists) => {
            lists.iter().map(from_ids).collect::<Result<_, _>>()?
        }
    };
    if prompts.is_empty() || prompts.iter().any(|p| p.ids.is_empty()) {
        return Err(
            ApiError::invalid("prompt must not be empty", Some("prompt")).with_code("empty_array"),
        );
    }
    if let Some(suffix) = request.suffix.as_deref().filter(|s| !s.is_empty()) {
        let Some([prefix_id, suffix_id, middle_id]) = fim_ids(tokenizer) else {
            return Err(ApiError::invalid(
                "suffix needs a fill-in-the-middle model; this model's vocabulary has no FIM \
                 tokens (Qwen2.5-Coder models have them)",
                Some("suffix"),
            )
            .with_code("unsupported_value"));
        };
        let suffix_ids = encode(suffix)?;
        for p in &mut prompts {
            let mut ids = vec![prefix_id];
            ids.extend_from_slice(&p.ids);
            ids.push(suffix_id);
            ids.extend_from_slice(&suffix_ids);
            ids.push(middle_id);
            p.ids = ids;
        }
    }
    Ok(prompts)
}

fn fim_ids(tokenizer: &Tokenizer) -> Option<[u32; 3]> {
    let [p, s, m] = FIM_TOKENS.map(|t| tokenizer.token_to_id(t));
    Some([p?, s?, m?])
}

/// What every response and chunk of one request shares.
struct Meta {
    id: String,
    created: u32,
    model: String,
    /// Choices per prompt (`n`).
    per_prompt: usize,
    logprobs: bool,
}

impl Meta {
    #[allow(deprecated)] // system_fingerprint is deprecated but part of the type
    fn response(&self, choices: Vec<Choice>, usage: Option<Usage>) -> CreateCompletionResponse {
        CreateCompletionResponse {
            id: self.id.clone(),
            choices,
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: None,
            object: "text_completion".into(),
            usage: usage.map(|u| CompletionUsage {
                prompt_tokens: u.prompt_tokens as u32,
                completion_tokens: u.completion_tokens as u32,
                total_tokens: (u.prompt_tokens + u.completion_tokens) as u32,
                prompt_tokens_details: None,
                completion_tokens_details: None,
            }),
        }
    }

    fn chunk(
        &self,
        index: usize,
        text: String,
        logprobs: Option<Logprobs>,
        finish: Option<FinishReason>,
    ) -> SseEvent {
        sse_json(&self.response(
            vec![Choice {
                text,
                index: index as u32,
                logprobs,
                finish_reason: finish.map(finish_reason),
            }],
            None,
        ))
    }
}

impl Meta {
    /// The chunk sent when generation fails after the stream has started: the status line
    /// is gone, so the failure travels as a last chunk with `finish_reason: "error"`.
    fn error_chunk(&self, index: usize, message: &str) -> SseEvent {
        let error = ApiError::internal(message);
        sse_json(&serde_json::json!({
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [{ "text": "", "index": index, "logprobs": null, "finish_reason": "error" }],
            "error": error.body(),
        }))
    }
}

fn finish_reason(f: FinishReason) -> CompletionFinishReason {
    match f {
        FinishReason::Stop | FinishReason::StopSequence(_) => CompletionFinishReason::Stop,
        FinishReason::Length => CompletionFinishReason::Length,
    }
}

/// The legacy logprobs shape: parallel lists of tokens, their log-probabilities, maps of the
/// alternatives, and each token's offset in the choice's text (which starts at `offset`).
fn legacy_logprobs(tokenizer: &Tokenizer, logprobs: &[TokenLogprob], offset: usize) -> Logprobs {
    let mut out = Logprobs {
        tokens: Vec::with_capacity(logprobs.len()),
        token_logprobs: Vec::with_capacity(logprobs.len()),
        top_logprobs: Vec::with_capacity(logprobs.len()),
        text_offset: Vec::with_capacity(logprobs.len()),
    };
    let mut at = offset;
    for l in logprobs {
        let token = token_text(tokenizer, l.token);
        out.text_offset.push(at as u32);
        at += token.len();
        let top: HashMap<String, f32> = l
            .top
            .iter()
            .map(|&(id, lp)| (token_text(tokenizer, id), lp))
            .collect();
        out.top_logprobs
            .push(serde_json::to_value(top).unwrap_or_default());
        out.token_logprobs.push(Some(l.logprob));
        out.tokens.push(token);
    }
    out
}

/// `text_completion` chunks: the echoed prompt first (when asked), then text deltas with the
/// log-probabilities of the tokens that made them, each choice's finish reason, the usage
/// chunk when asked, then `[DONE]`. A failure (an engine error, the end of the shutdown
/// grace) is a last chunk with `finish_reason: "error"` and the error, as in chat.
fn stream_chunks(
    meta: Meta,
    served: Arc<ServedModel>,
    mut generation: Generation,
    echoes: Vec<String>,
    include_usage: bool,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    async_stream::stream! {
        let tokenizer = served.frontend.as_ref().map(|f| &f.tokenizer);
        // Bytes of text sent so far per choice, for text_offset.
        let mut sent: Vec<usize> = echoes.iter().map(String::len).collect();
        for (index, echo) in echoes.into_iter().enumerate() {
            if !echo.is_empty() {
                yield Ok(meta.chunk(index, echo, None, None));
            }
        }
        let mut failed = false;
        while let Some(step) = generation.next().await {
            match step {
                Step::Text { index, text, logprobs } => {
                    let logprobs = tokenizer.filter(|_| meta.logprobs).map(|t| legacy_logprobs(t, &logprobs, sent[index]));
                    sent[index] += text.len();
                    yield Ok(meta.chunk(index, text, logprobs, None));
                }
                Step::Finished { index, finish, logprobs, .. } => {
                    let logprobs = tokenizer.filter(|_| meta.logprobs).map(|t| legacy_logprobs(t, &logprobs, sent[index]));
                    yield Ok(meta.chunk(index, String::new(), logprobs, Some(finish)));
                }
                // Completions have neither thinking nor calls.
                Step::Reasoning { .. } | Step::Call { .. } => {}
                Step::Failed { index, failure } => {
                    yield Ok(meta.error_chunk(index, failure.message()));
                    failed = true;
                }
            }
        }
        if !failed && include_usage {
            let total = generation.total_usage(meta.per_prompt);
            yield Ok(sse_json(&meta.response(Vec::new(), Some(total))));
        }
        yield Ok(SseEvent::default().data("[DONE]"));
    }
}
