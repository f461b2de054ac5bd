//! POST /v1/chat/completions: messages → prompt → engine → a `chat.completion`, or a stream
//! of `chat.completion.chunk` events ending in `data: [DONE]`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use async_openai::types::chat::{
    ChatChoice, ChatChoiceLogprobs, ChatChoiceStream, ChatCompletionMessageToolCall,
    ChatCompletionMessageToolCallChunk, ChatCompletionMessageToolCalls,
    ChatCompletionResponseMessage, ChatCompletionStreamResponseDelta, ChatCompletionTokenLogprob,
    CompletionTokensDetails, CompletionUsage, CreateChatCompletionResponse,
    CreateChatCompletionStreamResponse, FinishReason as OpenAiFinish, FunctionCall,
    FunctionCallStream, FunctionType, Role, TopLogprobs,
};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::Stream;
use serde::Serialize;

use super::answer::{self, AnswerSplitter, Out};
pub(super) use super::caller::Caller;
use super::error::ApiError;
use super::fields::GenerationFields;
use super::generation::{self, fit_context, submit_choices, token_text};
use super::guarded::{self, OutputWatch};
use super::request::{parse_json, ChatRequest, ChatSettings};
use super::stream::{ChoiceOutput, Generation, Step};
use super::AppState;
use crate::engine::{Endpoint, EventStream, FinishReason, ServedModel, TokenLogprob, Usage};
use crate::reasoning::{self, Start};
use crate::routing::{self, tradition, Family, Mechanism, RoutingFields, Tradition};
use crate::safety::{self, Assessment, Guard, Verdict};
use crate::template::TemplateError;
use crate::tokenizer::Tokenizer;
use crate::tools::{self, CallFormat, PrepareError, ToolCall};

pub async fn completions_v1(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(handle(&state, caller, body, Version::V1, Instant::now()).await)
}

/// The V2 contract (shared/ROUTING.md): routing by tier or family, tradition layers, and
/// routing metadata on the response.
pub async fn completions_v2(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(handle(&state, caller, body, Version::V2, Instant::now()).await)
}

fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Version {
    V1,
    V2,
}

/// Everything a response needs besides the generated text.
pub(super) struct Answer {
    pub id: String,
    pub created: u32,
    pub model: String,
    /// /v2 only.
    pub meta: Option<RoutingMeta>,
    /// Read the answer for tool calls in this format (when tools are offered).
    pub calls: Option<CallFormat>,
    /// Where a thinking model's thinking starts; None for a model that does not think.
    pub reasoning: Option<Start>,
}

/// The fields a /v2 response carries beside OpenAI's, on the body and on every chunk.
#[derive(Debug, Clone, Serialize)]
pub(super) struct RoutingMeta {
    provider: String,
    model_family: String,
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
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
    version: Version,
    arrived: Instant,
) -> Result<Response, ApiError> {
    crate::faults::trip(&state.faults, crate::faults::FaultPoint::Handler);
    let body = generation::checked_body(state, body)?;
    // A body up to the limit takes a while to parse: off the async threads.
    let (request, fields, raw) = state
        .cpu_work
        .run(
            move || -> Result<(ChatRequest, GenerationFields, RawBody), ApiError> {
                Ok((parse_json(&body)?, parse_json(&body)?, parse_json(&body)?))
            },
        )
        .await??;
    let guard = guarded::guard_for(state, version == Version::V2);
    let goal = Goal::Generate;
    let started = begin(
        state,
        caller,
        &request,
        &raw,
        &fields,
        version,
        arrived,
        goal,
        guard.as_ref(),
    )
    .await?;
    if let Some(refusal) = started.safety.as_ref().and_then(|s| s.refusal.clone()) {
        return Ok(refused(&started, refusal));
    }
    let tokenizer = started.served.frontend.as_ref().map(|f| &f.tokenizer);
    let generation = Generation::new(state, &started.served.entry.id, arrived, started.streams);
    let n = generation.choices();
    if started.settings.stream {
        let include_usage = started.settings.include_usage;
        let watch = started.safety.map(|s| {
            let watch = OutputWatch::new(state, s.guard.clone(), caller.0, n);
            (watch, s)
        });
        Ok(Sse::new(stream_chunks(
            started.answer,
            started.served.clone(),
            generation,
            include_usage,
            watch,
        ))
        .keep_alive(KeepAlive::default())
        .into_response())
    } else {
        let outputs = generation.collect().await?;
        let asked_logprobs = started.settings.generation.sampling.logprobs.is_some();
        let judged = match &started.safety {
            Some(s) => {
                let mut judged = Vec::with_capacity(outputs.len());
                for output in &outputs {
                    let answer = format!("{}{}", output.reasoning, output.text);
                    judged.push(
                        guarded::judge_output(&state.models, &s.guard, caller.0, &answer).await,
                    );
                }
                Some(judged)
            }
            None => None,
        };
        let mut body = completion(&started.answer, tokenizer, asked_logprobs, outputs);
        if let (Some(s), Some(judged)) = (&started.safety, judged) {
            add_output_safety(&mut body, s, &judged);
        }
        Ok(Json(body).into_response())
    }
}

/// The safety state of a guarded chat request: its input's assessment, and the refusal that
/// replaces the answer when the input was refused.
pub(super) struct StartedSafety {
    pub guard: Arc<Guard>,
    pub input: Assessment,
    pub refusal: Option<String>,
    /// The refusal table the request's tradition reads (src/safety/policy.rs).
    pub refusal_table: Option<&'static str>,
}

impl StartedSafety {
    /// The text replacing a refused output.
    fn output_refusal(&self, output: &Assessment) -> String {
        self.guard
            .policy
            .refusal_text(output.cause, self.refusal_table)
            .to_string()
    }
}

/// A whole answer's output verdicts: each refused choice's message replaced by the refusal
/// text with `finish_reason: "content_filter"`, and `safety` with the input's assessment and
/// the strongest output one.
fn add_output_safety(body: &mut serde_json::Value, s: &StartedSafety, judged: &[Assessment]) {
    for (index, output) in judged.iter().enumerate() {
        if output.verdict == Verdict::Refuse {
            let message = &mut body["choices"][index]["message"];
            message["content"] = s.output_refusal(output).into();
            if let Some(m) = message.as_object_mut() {
                m.remove("tool_calls");
                m.remove(REASONING_FIELD);
            }
            body["choices"][index]["finish_reason"] = "content_filter".into();
            body["choices"][index]["logprobs"] = serde_json::Value::Null;
        }
    }
    let strongest = judged.iter().max_by_key(|a| a.verdict);
    body["safety"] = safety::metadata(Some(&s.input), strongest);
}

/// The answer to a request whose input the policy refused: the refusal text as the
/// assistant's message with `finish_reason: "content_filter"`, as JSON or as a stream. The
/// model saw nothing, so the usage is zero.
fn refused(started: &Started, refusal: String) -> Response {
    let answer = &started.answer;
    let n = started.settings.generation.n;
    let safety_meta = safety::metadata(started.safety.as_ref().map(|s| &s.input), None);
    let with_meta = |base: serde_json::Value| {
        let mut v = serde_json::to_value(WithMeta {
            base,
            meta: answer.meta.as_ref(),
        })
        .unwrap_or_default();
        v["safety"] = safety_meta.clone();
        v
    };
    if !started.settings.stream {
        let choices: Vec<serde_json::Value> = (0..n)
            .map(|index| {
                serde_json::json!({
                    "index": index,
                    "message": { "role": "assistant", "content": refusal, "refusal": null },
                    "logprobs": null,
                    "finish_reason": "content_filter",
                })
            })
            .collect();
        let body = with_meta(serde_json::json!({
            "id": answer.id,
            "object": "chat.completion",
            "created": answer.created,
            "model": answer.model,
            "choices": choices,
            "usage": { "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0 },
        }));
        return Json(body).into_response();
    }
    let chunk_json = |index: usize, delta: serde_json::Value, finish: Option<&str>| {
        with_meta(serde_json::json!({
            "id": answer.id,
            "object": "chat.completion.chunk",
            "created": answer.created,
            "model": answer.model,
            "choices": [{ "index": index, "delta": delta, "logprobs": null, "finish_reason": finish }],
        }))
    };
    let mut events = Vec::new();
    for index in 0..n {
        let role = serde_json::json!({ "role": "assistant", "content": "" });
        events.push(sse_json(&chunk_json(index, role, None)));
        let text = serde_json::json!({ "content": refusal });
        events.push(sse_json(&chunk_json(index, text, None)));
        let end = serde_json::json!({});
        events.push(sse_json(&chunk_json(index, end, Some("content_filter"))));
    }
    if started.settings.include_usage {
        let mut last = chunk_json(0, serde_json::json!({}), None);
        last["choices"] = serde_json::json!([]);
        last["usage"] =
            serde_json::json!({ "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0 });
        events.push(sse_json(&last));
    }
    events.push(SseEvent::default().data("[DONE]"));
    let stream = futures::stream::iter(events.into_iter().map(Ok::<_, Infallible>));
    Sse::new(stream).into_response()
}

/// A request body as JSON, for what goes upstream as the caller sent it.
pub(super) type RawBody = serde_json::Map<String, serde_json::Value>;

/// A chat request submitted to the engine, one stream per choice. The Responses API builds
/// on this too (it translates its requests into chat requests).
pub(super) struct Started {
    pub answer: Answer,
    pub settings: ChatSettings,
    pub served: Arc<ServedModel>,
    pub streams: Vec<EventStream>,
    /// Tokens in the prompt; None for a model an upstream runs (it tokenizes its own).
    pub prompt_tokens: Option<usize>,
    /// The guard's assessment of the input, when a guard judges this request.
    pub safety: Option<StartedSafety>,
}

/// How far [`begin`] takes a chat request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Goal {
    /// Submit it.
    Generate,
    /// Stop once its prompt is tokenized (no streams).
    Count,
}

/// Check a chat request, route it, render and tokenize its prompt, and submit its choices;
/// or, for a model an upstream runs, hand it over whole (`raw`, the body as sent, with the
/// tradition layer added).
pub(super) async fn start(
    state: &AppState,
    caller: Caller,
    request: &ChatRequest,
    raw: &RawBody,
    fields: &GenerationFields,
    version: Version,
    arrived: Instant,
) -> Result<Started, ApiError> {
    let goal = Goal::Generate;
    begin(
        state, caller, request, raw, fields, version, arrived, goal, None,
    )
    .await
}

/// The tokens of the prompt [`start`] would submit for this request (same routing,
/// template and tools), submitting nothing: what Anthropic's count_tokens answers.
pub(super) async fn count_prompt(
    state: &AppState,
    caller: Caller,
    request: &ChatRequest,
    raw: &RawBody,
    fields: &GenerationFields,
) -> Result<usize, ApiError> {
    let (version, now) = (Version::V1, Instant::now());
    let started = begin(
        state,
        caller,
        request,
        raw,
        fields,
        version,
        now,
        Goal::Count,
        None,
    )
    .await?;
    started.prompt_tokens.ok_or_else(|| {
        ApiError::invalid(
            format!(
                "model '{}' is served upstream: its prompt tokens cannot be counted here",
                started.served.entry.id
            ),
            Some("model"),
        )
    })
}

#[allow(clippy::too_many_arguments)] // start's arguments, how far to go, and the guard
async fn begin(
    state: &AppState,
    caller: Caller,
    request: &ChatRequest,
    raw: &RawBody,
    fields: &GenerationFields,
    version: Version,
    arrived: Instant,
    goal: Goal,
    guard: Option<&Arc<Guard>>,
) -> Result<Started, ApiError> {
    let settings = request.settings(fields)?;
    // Checking tool schemas can be heavy (src/api/cpu_work.rs).
    let tools = (
        request.tools.clone(),
        request.tool_choice.clone(),
        request.response_format.clone(),
        request.parallel_tool_calls,
    );
    let tool_spec = state
        .cpu_work
        .run(move || {
            crate::tools::ToolSpec::parse(
                tools.0.as_ref(),
                tools.1.as_ref(),
                tools.2.as_ref(),
                tools.3,
            )
            .map_err(|e| ApiError::invalid(e.message, Some(&e.param)))
        })
        .await??;
    let mut vars = request.template_vars()?;
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
            let extras = routing::Extras {
                has_tools: request.has_tools(),
                has_schema: request.has_schema(),
            };
            let route = routing::route(
                &state.models.catalog,
                &state.router,
                &fields,
                &messages,
                extras,
                state.auto_routing_local_only,
            )
            .map_err(|e| ApiError::invalid(e.message, Some(&e.param)))?;
            let served = state.resolve(Some(&route.model)).await?;
            let meta = RoutingMeta {
                provider: state.provider.clone(),
                model_family: family_name(&served.entry.family),
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
    // The guard reads the conversation as the client sent it, before anything is rendered
    // or submitted: a refused input never reaches the model.
    let safety = match guard.filter(|_| goal == Goal::Generate) {
        Some(guard) => {
            let input = guarded::judge_input(state, guard, caller.0, &messages).await?;
            let refusal_table = safety::policy::refusal_table(tradition, version == Version::V2);
            let refusal = (input.verdict == Verdict::Refuse).then(|| {
                guard
                    .policy
                    .refusal_text(input.cause, refusal_table)
                    .to_string()
            });
            Some(StartedSafety {
                guard: guard.clone(),
                input,
                refusal,
                refusal_table,
            })
        }
        None => None,
    };
    let origin = generation::Origin {
        client: caller.0,
        deadline: state.request_timeout.map(|limit| arrived + limit),
    };
    let answer = |served: &ServedModel,
                  meta: Option<RoutingMeta>,
                  calls: Option<CallFormat>,
                  reasoning: Option<Start>| Answer {
        id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        created: generation::unix_now(),
        model: served.entry.id.clone(),
        meta,
        calls,
        reasoning,
    };
    let refused = safety.as_ref().is_some_and(|s| s.refusal.is_some());
    let whole = served.backend.takes_whole_requests();
    // Nothing to submit: a refused input, or counting an upstream's prompt (it tokenizes
    // its own).
    if refused || (whole && goal == Goal::Count) {
        return Ok(Started {
            answer: answer(&served, meta, None, None),
            settings,
            served,
            streams: Vec::new(),
            prompt_tokens: None,
            safety,
        });
    }
    if whole {
        // The upstream renders the prompt and reads its own calls and thinking.
        let n = settings.generation.n;
        let streams = generation::forward(&served, Endpoint::Chat, raw, layer, n, origin).await?;
        return Ok(Started {
            answer: answer(&served, meta, None, None),
            settings,
            served,
            streams,
            prompt_tokens: None,
            safety,
        });
    }
    let frontend = generation::local(&served)?;
    tradition::apply_layer(&mut messages, layer);

    let thinks = reasoning::thinks(&frontend.template, &frontend.tokenizer);
    if thinks {
        request.set_thinking(&mut vars);
    }
    // Rendering, tokenizing and compiling the grammar (the first use per model builds the
    // compiler) run off the async threads (src/api/cpu_work.rs).
    let (model, faults) = (served.clone(), state.faults.clone());
    let (prepared, prompt) = state
        .cpu_work
        .run(move || {
            crate::faults::heavy_work(&faults);
            prepare_prompt(&model, &tool_spec, messages, &vars, thinks)
        })
        .await??;
    if goal == Goal::Count {
        return Ok(Started {
            answer: answer(&served, meta, prepared.calls, prepared.reasoning),
            settings,
            served,
            streams: Vec::new(),
            prompt_tokens: Some(prompt.len()),
            safety: None,
        });
    }
    let max_tokens = fit_context(
        &served,
        prompt.len(),
        settings.generation.max_tokens,
        "messages",
    )?;
    let streams = submit_choices(
        &served,
        &prompt,
        &settings.generation,
        max_tokens,
        settings.ignore_eos,
        prepared.constraint.as_ref(),
        origin,
    )?;
    Ok(Started {
        answer: answer(&served, meta, prepared.calls, prepared.reasoning),
        settings,
        served,
        streams,
        prompt_tokens: Some(prompt.len()),
        safety,
    })
}

/// The prompt of a chat request for `served`: the template rendered with the tools'
/// instructions, the grammar its answer must follow, and the tokens.
fn prepare_prompt(
    served: &ServedModel,
    tool_spec: &crate::tools::ToolSpec,
    messages: Vec<crate::template::ChatMessage>,
    vars: &crate::template::TemplateVars,
    thinks: bool,
) -> Result<(tools::Prepared, Vec<u32>), ApiError> {
    let frontend = generation::local(served)?;
    let prepared = tools::prepare(
        tool_spec,
        messages,
        &frontend.template,
        vars,
        thinks,
        &frontend.tokenizer,
        &served.grammar,
    )
    .map_err(|e| match e {
        PrepareError::Template(TemplateError::Raised(message)) => ApiError::invalid(
            format!("The model's chat template rejected the messages: {message}"),
            Some("messages"),
        ),
        PrepareError::Template(TemplateError::Invalid(message)) => ApiError::internal(message),
        PrepareError::Fields(e) => ApiError::invalid(e.message, Some(&e.param)),
    })?;
    generation::fits_before_tokenizing(served, &prepared.prompt, "messages")?;
    let prompt = frontend
        .tokenizer
        .encode_prompt(&prepared.prompt)
        .map_err(|e| ApiError::internal(format!("tokenizing the prompt failed: {e}")))?;
    Ok((prepared, prompt))
}

/// The `model_family` of /v2 metadata for a catalog family, as the contract spells it
/// ("OpenAI", "Open Source"); a family outside the contract as the catalog writes it.
fn family_name(catalog_family: &str) -> String {
    Family::of(catalog_family).map_or_else(
        || catalog_family.to_string(),
        |f| f.display_name().to_string(),
    )
}

/// OpenAI's finish reason: an answer that ended on its own after making calls ends with
/// `tool_calls`.
fn finish_reason(f: FinishReason, made_calls: bool) -> OpenAiFinish {
    match f {
        FinishReason::Stop | FinishReason::StopSequence(_) if made_calls => OpenAiFinish::ToolCalls,
        FinishReason::Stop | FinishReason::StopSequence(_) => OpenAiFinish::Stop,
        FinishReason::Length => OpenAiFinish::Length,
    }
}

/// OpenAI's usage; `reasoning_tokens` (given for thinking models) goes in
/// `completion_tokens_details`.
fn usage(u: Usage, reasoning_tokens: Option<usize>) -> CompletionUsage {
    CompletionUsage {
        prompt_tokens: u.prompt_tokens as u32,
        completion_tokens: u.completion_tokens as u32,
        total_tokens: (u.prompt_tokens + u.completion_tokens) as u32,
        prompt_tokens_details: None,
        completion_tokens_details: reasoning_tokens.map(|n| CompletionTokensDetails {
            accepted_prediction_tokens: Some(0),
            audio_tokens: Some(0),
            reasoning_tokens: Some(n as u32),
            rejected_prediction_tokens: Some(0),
            text_tokens: None,
        }),
    }
}

/// Chat's logprobs shape: `content[]` with each token's text, bytes and alternatives.
pub(super) fn chat_logprobs(
    tokenizer: &Tokenizer,
    logprobs: &[TokenLogprob],
) -> ChatChoiceLogprobs {
    let entry = |id: u32, logprob: f32| {
        let token = token_text(tokenizer, id);
        (token.as_bytes().to_vec(), token, logprob)
    };
    let content = logprobs
        .iter()
        .map(|l| {
            let (bytes, token, logprob) = entry(l.token, l.logprob);
            ChatCompletionTokenLogprob {
                token,
                logprob,
                bytes: Some(bytes),
                top_logprobs: l
                    .top
                    .iter()
                    .map(|&(id, logprob)| {
                        let (bytes, token, logprob) = entry(id, logprob);
                        TopLogprobs {
                            token,
                            logprob,
                            bytes: Some(bytes),
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    ChatChoiceLogprobs {
        content: Some(content),
        refusal: None,
    }
}

/// A parsed call in the message's shape.
fn message_call(call: ToolCall) -> ChatCompletionMessageToolCalls {
    ChatCompletionMessageToolCalls::Function(ChatCompletionMessageToolCall {
        id: call.id,
        function: FunctionCall {
            name: call.name,
            arguments: call.arguments,
        },
    })
}

/// The whole `chat.completion` once every choice has finished. A thinking model's
/// thinking goes in each message's `reasoning_content` (a field OpenAI's types lack, so it
/// is added to the JSON), and the tokens it took in `completion_tokens_details`.
#[allow(deprecated)] // function_call and system_fingerprint are deprecated but part of the types
fn completion(
    answer: &Answer,
    tokenizer: Option<&Tokenizer>,
    asked_logprobs: bool,
    outputs: Vec<ChoiceOutput>,
) -> serde_json::Value {
    let total = generation::total_usage(outputs.iter().map(|o| o.usage), outputs.len());
    let mut reasoning_tokens = 0;
    let mut thoughts = Vec::with_capacity(outputs.len());
    let choices = outputs
        .into_iter()
        .enumerate()
        .map(|(index, output)| {
            let read = answer::read_output(answer.reasoning, answer.calls, &output);
            if let (Some(split), Some(tokenizer)) = (&read.split, tokenizer) {
                reasoning_tokens += split.tokens(tokenizer, output.usage.completion_tokens);
            }
            thoughts.push(read.reasoning);
            let made_calls = !read.calls.is_empty();
            ChatChoice {
                index: index as u32,
                logprobs: tokenizer
                    .filter(|_| asked_logprobs)
                    .map(|t| chat_logprobs(t, &output.logprobs)),
                message: ChatCompletionResponseMessage {
                    content: read.content,
                    refusal: None,
                    tool_calls: made_calls
                        .then(|| read.calls.into_iter().map(message_call).collect()),
                    annotations: None,
                    role: Role::Assistant,
                    function_call: None,
                    audio: None,
                },
                finish_reason: Some(finish_reason(output.finish, made_calls)),
            }
        })
        .collect();
    let body = WithMeta {
        base: CreateChatCompletionResponse {
            id: answer.id.clone(),
            choices,
            created: answer.created,
            model: answer.model.clone(),
            service_tier: None,
            system_fingerprint: None,
            object: "chat.completion".into(),
            usage: Some(usage(total, answer.reasoning.map(|_| reasoning_tokens))),
            metadata: None,
            moderation: None,
        },
        meta: answer.meta.as_ref(),
    };
    let mut body = serde_json::to_value(&body).unwrap_or_default();
    for (index, thought) in thoughts.into_iter().enumerate() {
        if let Some(thought) = thought {
            body["choices"][index]["message"][REASONING_FIELD] = thought.into();
        }
    }
    body
}

/// The field that carries thinking, in messages and deltas: llama.cpp's server's name
/// (vLLM's `reasoning` is accepted on input too).
pub(super) const REASONING_FIELD: &str = "reasoning_content";

#[allow(deprecated)] // system_fingerprint is deprecated but part of the type
fn chunk(
    answer: &Answer,
    index: usize,
    delta: ChatCompletionStreamResponseDelta,
    finish: Option<OpenAiFinish>,
    logprobs: Option<ChatChoiceLogprobs>,
) -> CreateChatCompletionStreamResponse {
    CreateChatCompletionStreamResponse {
        id: answer.id.clone(),
        choices: vec![ChatChoiceStream {
            index: index as u32,
            delta,
            finish_reason: finish,
            logprobs,
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

/// The deltas of one call, as OpenAI streams them: its index, id, type and name first, then
/// its arguments.
fn call_deltas(index: u32, call: ToolCall) -> [ChatCompletionStreamResponseDelta; 2] {
    let with_call = |chunk: ChatCompletionMessageToolCallChunk| {
        let mut d = delta(None, None);
        d.tool_calls = Some(vec![chunk]);
        d
    };
    [
        with_call(ChatCompletionMessageToolCallChunk {
            index,
            id: Some(call.id),
            r#type: Some(FunctionType::Function),
            function: Some(FunctionCallStream {
                name: Some(call.name),
                arguments: Some(String::new()),
            }),
        }),
        with_call(ChatCompletionMessageToolCallChunk {
            index,
            id: None,
            r#type: None,
            function: Some(FunctionCallStream {
                name: None,
                arguments: Some(call.arguments),
            }),
        }),
    ]
}

pub(super) fn sse_json<T: serde::Serialize>(value: &T) -> SseEvent {
    SseEvent::default().data(serde_json::to_string(value).unwrap_or_default())
}

/// A chunk as sent: with the /v2 fields on every chunk.
fn chunk_event(answer: &Answer, chunk: CreateChatCompletionStreamResponse) -> SseEvent {
    sse_json(&WithMeta {
        base: chunk,
        meta: answer.meta.as_ref(),
    })
}

/// A chunk with the request's `safety` verdicts beside the /v2 fields.
fn chunk_with_safety(
    answer: &Answer,
    chunk: CreateChatCompletionStreamResponse,
    safety: &serde_json::Value,
) -> SseEvent {
    let mut body = serde_json::to_value(&WithMeta {
        base: chunk,
        meta: answer.meta.as_ref(),
    })
    .unwrap_or_default();
    body["safety"] = safety.clone();
    sse_json(&body)
}

/// A chunk of thinking: `delta.reasoning_content`, which OpenAI's types lack.
fn reasoning_event(
    answer: &Answer,
    index: usize,
    text: String,
    logprobs: Option<ChatChoiceLogprobs>,
) -> SseEvent {
    let chunk = chunk(answer, index, delta(None, None), None, logprobs);
    let mut body = serde_json::to_value(&WithMeta {
        base: chunk,
        meta: answer.meta.as_ref(),
    })
    .unwrap_or_default();
    body["choices"][0]["delta"][REASONING_FIELD] = text.into();
    sse_json(&body)
}

/// The chunk sent when generation fails after the stream has started: the status line is
/// gone, so the failure travels as a last chunk with `finish_reason: "error"`.
fn error_chunk(answer: &Answer, index: usize, message: String) -> SseEvent {
    let error = ApiError::internal(message);
    sse_json(&WithMeta {
        base: serde_json::json!({
        "id": answer.id,
        "object": "chat.completion.chunk",
        "created": answer.created,
        "model": answer.model,
        "choices": [{ "index": index, "delta": {}, "finish_reason": "error" }],
        "error": error.body(),
        }),
        meta: answer.meta.as_ref(),
    })
}

/// OpenAI's chunk sequence: the role first (for each choice), then thinking deltas
/// (`reasoning_content`, thinking models only), then content deltas, then each
/// choice's finish reason, then (when asked) a usage chunk with no choices, then `[DONE]`.
/// Log-probabilities ride on the chunk of the text their tokens produced. A failure (an
/// engine error, the end of the shutdown grace) is a last chunk with `finish_reason:
/// "error"`. Dropping this stream (a client that disconnects) drops `generation`, which
/// cancels the request in the engine.
fn stream_chunks(
    answer: Answer,
    served: Arc<ServedModel>,
    mut generation: Generation,
    include_usage: bool,
    mut watch: Option<(OutputWatch, StartedSafety)>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    /// What the stream waits on: the next step, or a window verdict of the output guard.
    enum Next {
        Step(Option<Step>),
        Cut(Option<(usize, Assessment)>),
    }
    async_stream::stream! {
        let tokenizer = served.frontend.as_ref().map(|f| &f.tokenizer);
        let n = generation.choices();
        for index in 0..n {
            yield Ok(chunk_event(&answer, chunk(&answer, index, delta(Some(Role::Assistant), Some(String::new())), None, None)));
        }
        // Log-probabilities of text the splitter still holds, per choice.
        let mut pending: Vec<Vec<TokenLogprob>> = vec![Vec::new(); n];
        // Each choice's text is read for thinking and calls on its own, and its calls
        // numbered from 0.
        let mut splitters: Vec<AnswerSplitter> =
            (0..n).map(|_| AnswerSplitter::new(answer.reasoning, answer.calls)).collect();
        let mut reasoning_tokens = 0;
        let mut calls_sent = vec![0u32; n];
        let mut failed = false;
        let mut finished = vec![false; n];
        loop {
            let next = match watch.as_mut() {
                Some((w, _)) if w.busy() => tokio::select! {
                    biased;
                    verdict = w.next_verdict() => Next::Cut(verdict),
                    step = generation.next() => Next::Step(step),
                },
                _ => Next::Step(generation.next().await),
            };
            let step = match next {
                Next::Step(Some(step)) => step,
                Next::Step(None) => break,
                Next::Cut(None) => continue,
                // A window the policy refuses ends every unfinished choice at once
                // (dropping `generation` below cancels them in the engine).
                Next::Cut(Some((_, output))) => {
                    if let Some((_, s)) = &watch {
                        let safety = safety::metadata(Some(&s.input), Some(&output));
                        for index in (0..n).filter(|&i| !finished[i]) {
                            let end = chunk(&answer, index, delta(None, None), Some(OpenAiFinish::ContentFilter), None);
                            yield Ok(chunk_with_safety(&answer, end, &safety));
                        }
                    }
                    failed = true;
                    break;
                }
            };
            match step {
                Step::Text { index, text, logprobs } => {
                    if let Some((w, _)) = watch.as_mut() {
                        w.push(index, &text);
                    }
                    pending[index].extend(logprobs);
                    let outs = splitters[index].push(&text);
                    for event in out_events(&answer, tokenizer, index, outs, &mut pending[index], &mut calls_sent[index]) {
                        yield Ok(event);
                    }
                }
                Step::Finished { index, finish, usage, logprobs } => {
                    pending[index].extend(logprobs);
                    let outs = splitters[index].finish();
                    for event in out_events(&answer, tokenizer, index, outs, &mut pending[index], &mut calls_sent[index]) {
                        yield Ok(event);
                    }
                    let logprobs = take_logprobs(tokenizer, &mut pending[index]);
                    let mut reason = finish_reason(finish, calls_sent[index] > 0);
                    finished[index] = true;
                    // The whole answer is judged before its last chunk, which carries the
                    // verdicts.
                    match watch.as_mut() {
                        Some((w, s)) => {
                            let output = w.finish(index).await;
                            if output.verdict == Verdict::Refuse {
                                reason = OpenAiFinish::ContentFilter;
                            }
                            let safety = safety::metadata(Some(&s.input), Some(&output));
                            let end = chunk(&answer, index, delta(None, None), Some(reason), logprobs);
                            yield Ok(chunk_with_safety(&answer, end, &safety));
                        }
                        None => {
                            yield Ok(chunk_event(&answer, chunk(&answer, index, delta(None, None), Some(reason), logprobs)));
                        }
                    }
                    if let (Some(split), Some(tokenizer)) = (splitters[index].split(), tokenizer) {
                        reasoning_tokens += split.tokens(tokenizer, usage.completion_tokens);
                    }
                }
                // A remote engine's thinking and calls come apart from its text.
                Step::Reasoning { index, text } => {
                    if let Some((w, _)) = watch.as_mut() {
                        w.push(index, &text);
                    }
                    for event in out_events(&answer, tokenizer, index, vec![Out::Reasoning(text)], &mut pending[index], &mut calls_sent[index]) {
                        yield Ok(event);
                    }
                }
                Step::Call { index, call } => {
                    for event in out_events(&answer, tokenizer, index, vec![Out::Call(call)], &mut pending[index], &mut calls_sent[index]) {
                        yield Ok(event);
                    }
                }
                Step::Failed { index, failure } => {
                    yield Ok(error_chunk(&answer, index, failure.message().to_string()));
                    failed = true;
                }
            }
        }
        if !failed && include_usage {
            let mut last = chunk(&answer, 0, delta(None, None), None, None);
            last.choices.clear();
            let thought = answer.reasoning.map(|_| reasoning_tokens);
            last.usage = Some(usage(generation.total_usage(n), thought));
            yield Ok(chunk_event(&answer, last));
        }
        yield Ok(SseEvent::default().data("[DONE]"));
    }
}

/// The chunks of what one choice's splitter let out: thinking and text with the
/// log-probabilities held for them, calls as OpenAI streams them (numbered per choice).
fn out_events(
    answer: &Answer,
    tokenizer: Option<&Tokenizer>,
    index: usize,
    outs: Vec<Out>,
    pending: &mut Vec<TokenLogprob>,
    calls_sent: &mut u32,
) -> Vec<SseEvent> {
    let mut events = Vec::with_capacity(outs.len());
    for out in outs {
        match out {
            Out::Reasoning(text) => {
                let logprobs = take_logprobs(tokenizer, pending);
                events.push(reasoning_event(answer, index, text, logprobs));
            }
            Out::Text(text) => {
                let logprobs = take_logprobs(tokenizer, pending);
                events.push(chunk_event(
                    answer,
                    chunk(answer, index, delta(None, Some(text)), None, logprobs),
                ));
            }
            Out::Call(call) => {
                for d in call_deltas(*calls_sent, call) {
                    events.push(chunk_event(answer, chunk(answer, index, d, None, None)));
                }
                *calls_sent += 1;
            }
        }
    }
    events
}

/// The buffered log-probabilities of one choice in chat's shape (None when there are none).
fn take_logprobs(
    tokenizer: Option<&Tokenizer>,
    pending: &mut Vec<TokenLogprob>,
) -> Option<ChatChoiceLogprobs> {
    let tokenizer = tokenizer.filter(|_| !pending.is_empty())?;
    let logprobs = chat_logprobs(tokenizer, pending);
    pending.clear();
    Some(logprobs)
}
