//! The Responses API (`POST /v1/responses`, `GET` and `DELETE /v1/responses/{id}`) as a
//! translation layer over chat: the request's input items, instructions, tools and
//! `text.format` become a chat request that runs through the chat endpoint's own path
//! ([`super::chat::start`]), and the chat result becomes Responses output items and, when
//! streaming, Responses events. `store` keeps the result for retrieval and for
//! `previous_response_id`, which continues the stored conversation.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::Stream;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::answer::{self, AnswerSplitter, Out, SplitAnswer};
use super::chat::{self, chat_logprobs, Answer, Started, Version, REASONING_FIELD};
use super::error::ApiError;
use super::fields::GenerationFields;
use super::generation;
use super::request::{parse_json, ChatRequest};
use super::response_store::{Owner, StoredResponse};
use super::stream::{ChoiceOutput, Generation, Step};
use super::AppState;
use crate::engine::{FinishReason, ServedModel, TokenLogprob, Usage};
use crate::tokenizer::Tokenizer;
use crate::tools::ToolCall;

/// The fields read here; sampling fields are read by [`GenerationFields`], and anything else
/// is ignored as OpenAI's newer fields are.
#[derive(Debug, Deserialize)]
struct ResponsesRequest {
    input: Input,
    instructions: Option<String>,
    max_output_tokens: Option<i64>,
    tools: Option<Vec<Value>>,
    tool_choice: Option<Value>,
    text: Option<TextParam>,
    #[serde(default)]
    stream: bool,
    store: Option<bool>,
    previous_response_id: Option<String>,
    top_logprobs: Option<i64>,
    #[serde(default)]
    include: Vec<String>,
    metadata: Option<Value>,
    /// `reasoning.effort` becomes chat's `reasoning_effort`; `summary` is accepted and
    /// ignored (wick returns the thinking itself, not a summary of it).
    reasoning: Option<ReasoningParam>,
    /// Read here only to check their types; passed on to chat as they are.
    #[allow(dead_code)]
    reasoning_effort: Option<String>,
    #[allow(dead_code)]
    chat_template_kwargs: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
struct ReasoningParam {
    effort: Option<String>,
    #[allow(dead_code)] // read to check its type
    summary: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Input {
    Text(String),
    Items(Vec<InputItem>),
}

/// A message (`type` "message" or absent), a `function_call` the model made earlier, a
/// `function_call_output` answering one, or a `reasoning` item (an earlier answer's
/// thinking, kept with the assistant turn that follows it).
#[derive(Debug, Deserialize)]
struct InputItem {
    #[serde(rename = "type")]
    kind: Option<String>,
    role: Option<String>,
    content: Option<ItemContent>,
    call_id: Option<String>,
    name: Option<String>,
    arguments: Option<String>,
    output: Option<Value>,
    summary: Option<Vec<ContentPart>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ItemContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TextParam {
    format: Option<Value>,
}

/// Fields copied from a Responses body into the chat request unchanged: sampling and the
/// /v2 routing fields.
const PASSED_THROUGH: [&str; 15] = [
    "model",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "logit_bias",
    "auto_routing",
    "model_family",
    "tradition",
    "reasoning_effort",
    "chat_template_kwargs",
];

/// What the include list names to ask for output log-probabilities.
const INCLUDE_LOGPROBS: &str = "message.output_text.logprobs";

pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: chat::Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // The request's time counts from here (`--request-timeout`, the metrics).
    let arrived = Instant::now();
    let owner = state.api_keys.owner(&headers);
    handle(state, caller, owner, body, arrived)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// A stored response exists only for the key that created it (when keys are on).
pub async fn retrieve(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let owner = state.api_keys.owner(&headers);
    match state.responses.get(&id, owner.as_ref()) {
        Some(stored) => Json(stored.object).into_response(),
        None => not_found(&id).into_response(),
    }
}

pub async fn delete(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let owner = state.api_keys.owner(&headers);
    if state.responses.remove(&id, owner.as_ref()) {
        Json(json!({ "id": id, "object": "response", "deleted": true })).into_response()
    } else {
        not_found(&id).into_response()
    }
}

fn not_found(id: &str) -> ApiError {
    let mut e = ApiError::invalid(format!("No response found with id '{id}'."), Some("id"));
    e.status = StatusCode::NOT_FOUND;
    e.code = Some("not_found");
    e
}

async fn handle(
    state: Arc<AppState>,
    caller: chat::Caller,
    owner: Option<Owner>,
    body: Result<Bytes, BytesRejection>,
    arrived: Instant,
) -> Result<Response, ApiError> {
    let body = generation::checked_body(&state, body)?;
    let request: ResponsesRequest = parse_json(&body)?;
    // Type errors in the sampling fields are reported against the caller's own body.
    let _: GenerationFields = parse_json(&body)?;
    let raw: Map<String, Value> = parse_json(&body)?;

    let earlier = match &request.previous_response_id {
        Some(id) => {
            state
                .responses
                .get(id, owner.as_ref())
                .ok_or_else(|| {
                    ApiError::invalid(
                        format!("Previous response with id '{id}' not found."),
                        Some("previous_response_id"),
                    )
                    .with_code("previous_response_not_found")
                })?
                .conversation
        }
        None => Vec::new(),
    };
    let mut conversation = earlier;
    conversation.extend(input_messages(&request.input)?);

    let chat_body = chat_request(&request, &raw, &conversation);
    let chat_request: ChatRequest = from_chat_body(&chat_body)?;
    let fields: GenerationFields = from_chat_body(&chat_body)?;
    // /v2 routing when the body asks for it; plain model selection otherwise.
    let version = if raw.contains_key("auto_routing") || raw.contains_key("model_family") {
        Version::V2
    } else {
        Version::V1
    };
    let raw_chat = chat_body.as_object().cloned().unwrap_or_default();
    let started = chat::start(
        &state,
        caller,
        &chat_request,
        &raw_chat,
        &fields,
        version,
        arrived,
    )
    .await?;
    let echo = Echo::of(&request, &raw);
    let reply = Reply {
        id: format!("resp_{}", uuid::Uuid::new_v4().simple()),
        message_id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
        reasoning_id: format!("rs_{}", uuid::Uuid::new_v4().simple()),
        store: request.store.unwrap_or(true),
        owner,
        conversation,
        echo,
    };
    let Started {
        answer,
        served,
        streams,
        ..
    } = started;
    let generation = Generation::new(&state, &served.entry.id, arrived, streams);
    if request.stream {
        Ok(
            Sse::new(stream_events(state, reply, answer, served, generation))
                .keep_alive(KeepAlive::default())
                .into_response(),
        )
    } else {
        let output = generation
            .collect()
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::internal("the engine returned no choice"))?;
        let object = reply
            .finish(&answer, tokenizer_of(&served), &output, false, &state)
            .await;
        Ok(Json(object).into_response())
    }
}

/// A local model's tokenizer (log-probabilities, thinking's token count); None upstream.
fn tokenizer_of(served: &ServedModel) -> Option<&Tokenizer> {
    served.frontend.as_ref().map(|f| &f.tokenizer)
}

fn from_chat_body<T: serde::de::DeserializeOwned>(body: &Value) -> Result<T, ApiError> {
    serde_json::from_value(body.clone())
        .map_err(|e| ApiError::invalid(format!("Invalid request: {e}"), Some("input")))
}

/// The chat messages of the input (a bare string is one user message).
fn input_messages(input: &Input) -> Result<Vec<Value>, ApiError> {
    let items = match input {
        Input::Text(text) => return Ok(vec![json!({ "role": "user", "content": text })]),
        Input::Items(items) => items,
    };
    let mut messages: Vec<Value> = Vec::with_capacity(items.len());
    // A reasoning item's text, for the assistant turn that comes next.
    let mut thinking: Option<String> = None;
    for (i, item) in items.iter().enumerate() {
        let param = |field: &str| format!("input[{i}]{field}");
        let missing = |field: &str| {
            ApiError::invalid(
                format!("input[{i}] needs '{field}'"),
                Some(&param(&format!(".{field}"))),
            )
        };
        match item.kind.as_deref() {
            None | Some("message") => {
                let role = item.role.as_deref().ok_or_else(|| missing("role"))?;
                let content = match &item.content {
                    Some(ItemContent::Text(t)) => t.clone(),
                    Some(ItemContent::Parts(parts)) => parts_text(parts, i)?,
                    None => return Err(missing("content")),
                };
                let mut message = json!({ "role": role, "content": content });
                if role == "assistant" {
                    if let Some(thinking) = thinking.take() {
                        message[REASONING_FIELD] = thinking.into();
                    }
                }
                messages.push(message);
            }
            Some("function_call") => {
                let call = json!({
                    "id": item.call_id.as_deref().ok_or_else(|| missing("call_id"))?,
                    "type": "function",
                    "function": {
                        "name": item.name.as_deref().ok_or_else(|| missing("name"))?,
                        "arguments": item.arguments.as_deref().unwrap_or("{}"),
                    }
                });
                // Calls made in one turn belong to one assistant message.
                match messages.last_mut() {
                    Some(last) if last["role"] == "assistant" && last["tool_calls"].is_array() => {
                        if let Some(calls) = last["tool_calls"].as_array_mut() {
                            calls.push(call);
                        }
                    }
                    _ => {
                        let mut message =
                            json!({ "role": "assistant", "content": null, "tool_calls": [call] });
                        if let Some(thinking) = thinking.take() {
                            message[REASONING_FIELD] = thinking.into();
                        }
                        messages.push(message)
                    }
                }
            }
            Some("reasoning") => {
                // The thinking itself when given, else its summary.
                let text = match (&item.content, &item.summary) {
                    (Some(ItemContent::Parts(parts)), _) if !parts.is_empty() => {
                        parts_text(parts, i)?
                    }
                    (Some(ItemContent::Text(t)), _) => t.clone(),
                    (_, Some(summary)) => parts_text(summary, i)?,
                    _ => String::new(),
                };
                thinking = Some(text);
            }
            Some("function_call_output") => {
                let output = match &item.output {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => return Err(missing("output")),
                };
                messages.push(json!({
                    "role": "tool",
                    "tool_call_id": item.call_id.as_deref().ok_or_else(|| missing("call_id"))?,
                    "content": output,
                }));
            }
            Some(other) => {
                return Err(ApiError::invalid(
                    format!(
                        "input items of type '{other}' are not supported; send message, \
                         function_call, function_call_output or reasoning items"
                    ),
                    Some(&param(".type")),
                )
                .with_code("unsupported_value"))
            }
        }
    }
    if messages.is_empty() {
        return Err(
            ApiError::invalid("input must not be empty", Some("input")).with_code("empty_array")
        );
    }
    Ok(messages)
}

fn parts_text(parts: &[ContentPart], item: usize) -> Result<String, ApiError> {
    let mut text = String::new();
    for (j, part) in parts.iter().enumerate() {
        match (part.kind.as_str(), &part.text) {
            (
                "input_text" | "output_text" | "text" | "reasoning_text" | "summary_text",
                Some(t),
            ) => text.push_str(t),
            (kind, _) => {
                return Err(ApiError::invalid(
                    format!("content parts of type '{kind}' are not supported; send input_text"),
                    Some(&format!("input[{item}].content[{j}]")),
                ))
            }
        }
    }
    Ok(text)
}

/// The chat request body this Responses request stands for.
fn chat_request(
    request: &ResponsesRequest,
    raw: &Map<String, Value>,
    conversation: &[Value],
) -> Value {
    let mut messages = Vec::with_capacity(conversation.len() + 1);
    if let Some(instructions) = &request.instructions {
        messages.push(json!({ "role": "system", "content": instructions }));
    }
    messages.extend_from_slice(conversation);
    let mut chat = Map::new();
    chat.insert("messages".into(), Value::Array(messages));
    for key in PASSED_THROUGH {
        if let Some(v) = raw.get(key) {
            chat.insert(key.into(), v.clone());
        }
    }
    if let Some(max) = request.max_output_tokens {
        chat.insert("max_tokens".into(), json!(max));
    }
    if let Some(effort) = request.reasoning.as_ref().and_then(|r| r.effort.as_ref()) {
        chat.entry("reasoning_effort").or_insert(json!(effort));
    }
    if request.top_logprobs.is_some() || request.include.iter().any(|i| i == INCLUDE_LOGPROBS) {
        chat.insert("logprobs".into(), json!(true));
        chat.insert(
            "top_logprobs".into(),
            json!(request.top_logprobs.unwrap_or(0)),
        );
    }
    // Tools and formats in chat's shape, for the chat path to enforce (issue 4's work reads
    // `tools`, `tool_choice` and `response_format` there).
    if let Some(tools) = &request.tools {
        let tools: Vec<Value> = tools.iter().map(chat_tool).collect();
        chat.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = &request.tool_choice {
        chat.insert("tool_choice".into(), chat_tool_choice(choice));
    }
    if let Some(format) = request.text.as_ref().and_then(|t| t.format.as_ref()) {
        if let Some(format) = chat_response_format(format) {
            chat.insert("response_format".into(), format);
        }
    }
    Value::Object(chat)
}

/// `{"type":"function","name",...}` → `{"type":"function","function":{"name",...}}`.
fn chat_tool(tool: &Value) -> Value {
    if tool["type"] != "function" || tool.get("function").is_some() {
        return tool.clone();
    }
    let mut function = tool.as_object().cloned().unwrap_or_default();
    function.remove("type");
    json!({ "type": "function", "function": function })
}

fn chat_tool_choice(choice: &Value) -> Value {
    match choice.get("name") {
        Some(name) if choice["type"] == "function" => {
            json!({ "type": "function", "function": { "name": name } })
        }
        _ => choice.clone(),
    }
}

/// `text.format` → chat's `response_format` (plain text needs none).
fn chat_response_format(format: &Value) -> Option<Value> {
    match format["type"].as_str() {
        Some("json_schema") => {
            let mut schema = format.as_object().cloned().unwrap_or_default();
            schema.remove("type");
            Some(json!({ "type": "json_schema", "json_schema": schema }))
        }
        Some("text") | None => None,
        Some(_) => Some(format.clone()),
    }
}

/// Request fields a response object repeats back.
struct Echo {
    fields: Map<String, Value>,
}

impl Echo {
    fn of(request: &ResponsesRequest, raw: &Map<String, Value>) -> Self {
        let mut fields = Map::new();
        let text = raw
            .get("text")
            .cloned()
            .unwrap_or(json!({ "format": { "type": "text" } }));
        fields.insert("text".into(), text);
        fields.insert("instructions".into(), json!(request.instructions));
        fields.insert("max_output_tokens".into(), json!(request.max_output_tokens));
        fields.insert(
            "previous_response_id".into(),
            json!(request.previous_response_id),
        );
        fields.insert(
            "tools".into(),
            json!(request.tools.clone().unwrap_or_default()),
        );
        fields.insert(
            "tool_choice".into(),
            request.tool_choice.clone().unwrap_or(json!("auto")),
        );
        fields.insert("parallel_tool_calls".into(), json!(true));
        fields.insert(
            "metadata".into(),
            request.metadata.clone().unwrap_or(json!({})),
        );
        for key in ["temperature", "top_p", "top_logprobs"] {
            fields.insert(key.into(), raw.get(key).cloned().unwrap_or(Value::Null));
        }
        Self { fields }
    }
}

/// Everything about one response besides the generated text.
struct Reply {
    id: String,
    message_id: String,
    /// The reasoning item's, when a thinking model thought.
    reasoning_id: String,
    store: bool,
    /// The key it is stored for.
    owner: Option<Owner>,
    /// The conversation so far (without instructions), kept with the response when stored.
    conversation: Vec<Value>,
    echo: Echo,
}

impl Reply {
    /// The response object in a given state; `usage` with the tokens the thinking took.
    fn object(
        &self,
        answer: &Answer,
        status: &str,
        output: Vec<Value>,
        usage: Option<(Usage, usize)>,
        extra: Option<(&str, Value)>,
    ) -> Value {
        let mut object = Map::new();
        object.insert("id".into(), json!(self.id));
        object.insert("object".into(), json!("response"));
        object.insert("created_at".into(), json!(answer.created));
        object.insert("status".into(), json!(status));
        object.insert("model".into(), json!(answer.model));
        object.insert("output".into(), Value::Array(output));
        object.insert("store".into(), json!(self.store));
        object.insert("error".into(), Value::Null);
        object.insert("incomplete_details".into(), Value::Null);
        object.extend(self.echo.fields.clone());
        object.insert(
            "usage".into(),
            usage
                .map(|(u, reasoning_tokens)| {
                    json!({
                        "input_tokens": u.prompt_tokens,
                        "input_tokens_details": { "cached_tokens": 0 },
                        "output_tokens": u.completion_tokens,
                        "output_tokens_details": { "reasoning_tokens": reasoning_tokens },
                        "total_tokens": u.prompt_tokens + u.completion_tokens,
                    })
                })
                .unwrap_or(Value::Null),
        );
        if let Some((key, value)) = extra {
            object.insert(key.into(), value);
        }
        if let Some(meta) = &answer.meta {
            if let Ok(Value::Object(meta)) = serde_json::to_value(meta) {
                object.extend(meta);
            }
        }
        Value::Object(object)
    }

    /// The assistant message item; tool calls become `function_call` items after it.
    fn message_item(&self, status: &str, content: Vec<Value>) -> Value {
        json!({
            "type": "message",
            "id": self.message_id,
            "status": status,
            "role": "assistant",
            "content": content,
        })
    }

    /// The reasoning item: the thinking as one `reasoning_text` part (wick has no summary
    /// to give).
    fn reasoning_item(&self, status: &str, text: Option<&str>) -> Value {
        let content = match text {
            Some(text) => json!([{ "type": "reasoning_text", "text": text }]),
            None => json!([]),
        };
        json!({
            "type": "reasoning",
            "id": self.reasoning_id,
            "summary": [],
            "content": content,
            "status": status,
        })
    }

    /// The finished response object; stored when asked. A thinking model's thinking comes
    /// first, as a reasoning item. The message item is left out when the answer is only
    /// calls, unless a stream has already announced it (`streamed`).
    async fn finish(
        &self,
        answer: &Answer,
        tokenizer: Option<&Tokenizer>,
        output: &ChoiceOutput,
        streamed: bool,
        state: &Arc<AppState>,
    ) -> Value {
        let SplitAnswer {
            reasoning,
            content,
            calls,
            split,
        } = answer::read_output(answer.reasoning, answer.calls, output);
        let text = content.unwrap_or_default();
        let (status, extra) = status_of(output.finish);
        let mut items = Vec::new();
        let reasoning_tokens = match (&split, tokenizer) {
            (Some(split), Some(tokenizer)) => {
                split.tokens(tokenizer, output.usage.completion_tokens)
            }
            _ => 0,
        };
        if let (Some(thinking), Some(split)) = (&reasoning, &split) {
            // Thinking the output ended in is as complete as the response.
            let status = if split.closed { "completed" } else { status };
            items.push(self.reasoning_item(status, Some(thinking)));
        }
        if streamed || !text.is_empty() || calls.is_empty() {
            let part = text_part(&text, responses_logprobs(tokenizer, &output.logprobs));
            items.push(self.message_item(status, vec![part]));
        }
        items.extend(calls.iter().map(|c| function_call_item(c, "completed")));
        let usage = Some((output.usage, reasoning_tokens));
        let object = self.object(answer, status, items, usage, extra);
        if self.store {
            let mut conversation = self.conversation.clone();
            let mut message = json!({ "role": "assistant", "content": text });
            if let Some(thinking) = reasoning {
                message[REASONING_FIELD] = thinking.into();
            }
            if !calls.is_empty() {
                message["tool_calls"] = calls
                    .iter()
                    .map(|c| {
                        json!({
                            "id": c.id, "type": "function",
                            "function": { "name": c.name, "arguments": c.arguments },
                        })
                    })
                    .collect();
            }
            conversation.push(message);
            let stored = StoredResponse {
                object: object.clone(),
                conversation,
                owner: self.owner,
            };
            // Sizing it serializes it: off the async threads (src/api/cpu_work.rs). Awaited,
            // so the response is there once the client has it.
            let (id, store) = (self.id.clone(), state.clone());
            if let Err(e) = state
                .cpu_work
                .run(move || store.responses.insert(id, stored))
                .await
            {
                tracing::error!(error = e.message, "storing a response failed");
            }
        }
        object
    }
}

/// A call the model made, as a Responses output item (`call_id` is what a
/// `function_call_output` item answers).
fn function_call_item(call: &ToolCall, status: &str) -> Value {
    json!({
        "type": "function_call",
        "id": format!("fc_{}", call.id.trim_start_matches("call_")),
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments,
        "status": status,
    })
}

fn status_of(finish: FinishReason) -> (&'static str, Option<(&'static str, Value)>) {
    match finish {
        FinishReason::Stop | FinishReason::StopSequence(_) => ("completed", None),
        FinishReason::Length => (
            "incomplete",
            Some((
                "incomplete_details",
                json!({ "reason": "max_output_tokens" }),
            )),
        ),
    }
}

fn text_part(text: &str, logprobs: Value) -> Value {
    json!({ "type": "output_text", "text": text, "annotations": [], "logprobs": logprobs })
}

/// Responses' logprobs shape (chat's entries: token, logprob, bytes, top_logprobs).
fn responses_logprobs(tokenizer: Option<&Tokenizer>, logprobs: &[TokenLogprob]) -> Value {
    let Some(tokenizer) = tokenizer else {
        return json!([]);
    };
    let content = chat_logprobs(tokenizer, logprobs)
        .content
        .unwrap_or_default();
    serde_json::to_value(content).unwrap_or(json!([]))
}

/// The documented event sequence: `response.created`, `response.in_progress`, then each
/// output item in order: `response.output_item.added`, its content (for a message:
/// `response.content_part.added`, `response.output_text.delta` per piece of text,
/// `response.output_text.done`, `response.content_part.done`), `response.output_item.done`;
/// then `response.completed` (or `response.incomplete` when `max_output_tokens` ran out,
/// `response.failed` on an engine error or when the shutdown grace ends). A thinking model's thinking is the first item, a
/// reasoning item whose text streams as `response.reasoning_text.delta` and `.done`; its
/// message item is announced when the answer starts (a model that does not think announces
/// it at once). Calls come last, as `function_call` items.
fn stream_events(
    state: Arc<AppState>,
    reply: Reply,
    answer: Answer,
    served: Arc<ServedModel>,
    mut generation: Generation,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    async_stream::stream! {
        let tokenizer = tokenizer_of(&served);
        let mut seq = 0u64;
        let mut event = |kind: &str, mut body: Value| {
            body["type"] = json!(kind);
            body["sequence_number"] = json!(seq);
            seq += 1;
            SseEvent::default()
                .event(kind)
                .data(serde_json::to_string(&body).unwrap_or_default())
        };
        let pending = reply.object(&answer, "in_progress", Vec::new(), None, None);
        yield Ok(event("response.created", json!({ "response": pending })));
        yield Ok(event("response.in_progress", json!({ "response": pending })));
        // Where an item's content events point.
        let at = |item_id: &str, output_index: usize, extra: Value| {
            let mut body = json!({ "item_id": item_id, "output_index": output_index, "content_index": 0 });
            if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
                b.extend(e);
            }
            body
        };
        let reasoning_part = |text: &str| json!({ "type": "reasoning_text", "text": text });
        // The message's output index once announced; the thinking, while its item is open.
        let mut message_index: Option<usize> = None;
        let mut thinking: Option<String> = None;
        let mut thought = false;
        if answer.reasoning.is_none() {
            message_index = Some(0);
            yield Ok(event("response.output_item.added", json!({
                "output_index": 0,
                "item": reply.message_item("in_progress", Vec::new()),
            })));
            yield Ok(event("response.content_part.added", at(&reply.message_id, 0, json!({ "part": text_part("", json!([])) }))));
        }
        // All generated text (calls included, for the stored answer) and the text shown.
        let mut text = String::new();
        let mut shown = String::new();
        let mut logprobs: Vec<TokenLogprob> = Vec::new();
        let mut sent_logprobs = 0;
        // Thinking is split off first; with tools offered, call markup is held back and
        // comes out as function_call items.
        let mut splitter = AnswerSplitter::new(answer.reasoning, answer.calls);
        let mut calls: Vec<ToolCall> = Vec::new();
        // What a remote engine returned apart from its text.
        let (mut apart_reasoning, mut apart_calls) = (String::new(), Vec::new());
        while let Some(step) = generation.next().await {
            // The choice's end, once it has come.
            let mut done = None;
            let outs = match step {
                Step::Text { text: t, logprobs: l, .. } => {
                    text.push_str(&t);
                    logprobs.extend(l);
                    splitter.push(&t)
                }
                Step::Finished { finish, usage, logprobs: l, .. } => {
                    logprobs.extend(l);
                    done = Some((finish, usage));
                    splitter.finish()
                }
                Step::Reasoning { text: t, .. } => {
                    apart_reasoning.push_str(&t);
                    vec![Out::Reasoning(t)]
                }
                Step::Call { call, .. } => {
                    apart_calls.push(call.clone());
                    vec![Out::Call(call)]
                }
                Step::Failed { failure, .. } => {
                    let failed = reply.object(&answer, "failed", Vec::new(), None, Some(("error", json!({ "code": "server_error", "message": failure.message() }))));
                    yield Ok(event("response.failed", json!({ "response": failed })));
                    return;
                }
            };
            for out in outs {
                if let Out::Reasoning(delta) = out {
                    if !thought {
                        thought = true;
                        thinking = Some(String::new());
                        yield Ok(event("response.output_item.added", json!({
                            "output_index": 0,
                            "item": reply.reasoning_item("in_progress", None),
                        })));
                        yield Ok(event("response.content_part.added", at(&reply.reasoning_id, 0, json!({ "part": reasoning_part("") }))));
                    }
                    if let Some(t) = thinking.as_mut() {
                        t.push_str(&delta);
                    }
                    yield Ok(event("response.reasoning_text.delta", at(&reply.reasoning_id, 0, json!({ "delta": delta }))));
                    continue;
                }
                // The answer has started: the thinking is over.
                if let Some(t) = thinking.take() {
                    yield Ok(event("response.reasoning_text.done", at(&reply.reasoning_id, 0, json!({ "text": t }))));
                    yield Ok(event("response.content_part.done", at(&reply.reasoning_id, 0, json!({ "part": reasoning_part(&t) }))));
                    yield Ok(event("response.output_item.done", json!({ "output_index": 0, "item": reply.reasoning_item("completed", Some(&t)) })));
                }
                if message_index.is_none() {
                    let index = usize::from(thought);
                    message_index = Some(index);
                    yield Ok(event("response.output_item.added", json!({
                        "output_index": index,
                        "item": reply.message_item("in_progress", Vec::new()),
                    })));
                    yield Ok(event("response.content_part.added", at(&reply.message_id, index, json!({ "part": text_part("", json!([])) }))));
                }
                match out {
                    Out::Text(delta) => {
                        shown.push_str(&delta);
                        let new = responses_logprobs(tokenizer, &logprobs[sent_logprobs..]);
                        sent_logprobs = logprobs.len();
                        yield Ok(event("response.output_text.delta", at(&reply.message_id, message_index.unwrap_or(0), json!({ "delta": delta, "logprobs": new }))));
                    }
                    Out::Call(call) => calls.push(call),
                    Out::Reasoning(_) => {}
                }
            }
            if let Some((finish, usage)) = done {
                let output = ChoiceOutput {
                    text,
                    reasoning: std::mem::take(&mut apart_reasoning),
                    calls: std::mem::take(&mut apart_calls),
                    logprobs,
                    finish,
                    usage,
                };
                let object = reply.finish(&answer, tokenizer, &output, true, &state).await;
                // Thinking the output ended in closes with the response.
                if let Some(t) = thinking.take() {
                    yield Ok(event("response.reasoning_text.done", at(&reply.reasoning_id, 0, json!({ "text": t }))));
                    yield Ok(event("response.content_part.done", at(&reply.reasoning_id, 0, json!({ "part": reasoning_part(&t) }))));
                    yield Ok(event("response.output_item.done", json!({ "output_index": 0, "item": object["output"][0] })));
                }
                // Every stream ends with a message item, empty if need be.
                let index = match message_index {
                    Some(index) => index,
                    None => {
                        let index = usize::from(thought);
                        yield Ok(event("response.output_item.added", json!({
                            "output_index": index,
                            "item": reply.message_item("in_progress", Vec::new()),
                        })));
                        yield Ok(event("response.content_part.added", at(&reply.message_id, index, json!({ "part": text_part("", json!([])) }))));
                        index
                    }
                };
                let part = text_part(&shown, responses_logprobs(tokenizer, &output.logprobs));
                yield Ok(event("response.output_text.done", at(&reply.message_id, index, json!({ "text": shown, "logprobs": part["logprobs"] }))));
                yield Ok(event("response.content_part.done", at(&reply.message_id, index, json!({ "part": part }))));
                yield Ok(event("response.output_item.done", json!({ "output_index": index, "item": object["output"][index] })));
                for (i, call) in calls.iter().enumerate() {
                    let index = index + 1 + i;
                    let mut item = function_call_item(call, "in_progress");
                    item["arguments"] = json!("");
                    let item_id = item["id"].clone();
                    yield Ok(event("response.output_item.added", json!({ "output_index": index, "item": item })));
                    yield Ok(event("response.function_call_arguments.delta", json!({ "item_id": item_id, "output_index": index, "delta": call.arguments })));
                    yield Ok(event("response.function_call_arguments.done", json!({ "item_id": item_id, "output_index": index, "arguments": call.arguments })));
                    yield Ok(event("response.output_item.done", json!({ "output_index": index, "item": object["output"][index] })));
                }
                let last = if object["status"] == "completed" { "response.completed" } else { "response.incomplete" };
                yield Ok(event(last, json!({ "response": object })));
                return;
            }
        }
    }
}
