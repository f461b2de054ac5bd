//! POST /tokenize and /detokenize in llama.cpp's server's shapes, for any catalog model
//! (the `model` field; the default model when absent):
//! `{"content", "add_special", "parse_special", "with_pieces"}` → `{"tokens": [...]}`, each
//! token an id, or `{"id", "piece"}` with `with_pieces` (the piece as a string when its bytes
//! are UTF-8, else as the list of bytes); `{"tokens": [...]}` → `{"content"}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::generation::{self, checked_body};
use super::request::parse_json;
use super::AppState;
use crate::tokenizer::Tokenizer;

#[derive(Debug, Deserialize)]
struct TokenizeRequest {
    model: Option<String>,
    content: String,
    /// Add the model's BOS as a prompt would start (llama.cpp's default: no).
    #[serde(default)]
    add_special: bool,
    /// Read control-token texts (`<|im_start|>`) as the control tokens (llama.cpp's
    /// default: yes); false encodes them as plain text.
    #[serde(default = "yes")]
    parse_special: bool,
    #[serde(default)]
    with_pieces: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
struct DetokenizeRequest {
    model: Option<String>,
    tokens: Vec<i64>,
}

pub async fn tokenize(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle_tokenize(&state, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

pub async fn detokenize(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle_detokenize(&state, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn handle_tokenize(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = checked_body(state, body)?;
    let request: TokenizeRequest = parse_json(&body)?;
    let served = state.resolve(request.model.as_deref()).await?;
    generation::local(&served)?;
    // Tokenizing a body up to the limit takes a while: off the async threads.
    let tokens = state
        .cpu_work
        .run(move || tokenize_text(&generation::local(&served)?.tokenizer, &request))
        .await??;
    Ok(Json(json!({ "tokens": tokens })).into_response())
}

fn tokenize_text(tokenizer: &Tokenizer, request: &TokenizeRequest) -> Result<Value, ApiError> {
    let failed = |e: anyhow::Error| ApiError::internal(format!("tokenizing failed: {e}"));
    let mut ids = if request.parse_special {
        tokenizer.encode(&request.content).map_err(failed)?
    } else {
        let mut ids = tokenizer.encode("").map_err(failed)?;
        ids.extend(tokenizer.encode_text(&request.content).map_err(failed)?);
        ids
    };
    // `encode` adds BOS where the model asks for it; without add_special it goes again.
    // With it, a vocabulary that closes texts with an eos gets it too (BERT's `[CLS] ...
    // [SEP]`), as llama.cpp's tokenizer frames them.
    if request.add_special {
        ids.extend(tokenizer.closing_eos());
    } else {
        let bos = tokenizer.encode("").map_err(failed)?;
        if ids.starts_with(&bos) {
            ids.drain(..bos.len());
        }
    }
    if !request.with_pieces {
        return Ok(json!(ids));
    }
    Ok(ids
        .iter()
        .map(|&id| {
            let bytes = tokenizer.piece_bytes(id).unwrap_or_default();
            let piece = match String::from_utf8(bytes) {
                Ok(text) => json!(text),
                Err(e) => json!(e.into_bytes()),
            };
            json!({ "id": id, "piece": piece })
        })
        .collect())
}

async fn handle_detokenize(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = checked_body(state, body)?;
    let request: DetokenizeRequest = parse_json(&body)?;
    let served = state.resolve(request.model.as_deref()).await?;
    generation::local(&served)?;
    let content = state
        .cpu_work
        .run(move || detokenize_ids(&generation::local(&served)?.tokenizer, &request.tokens))
        .await??;
    Ok(Json(json!({ "content": content })).into_response())
}

fn detokenize_ids(tokenizer: &Tokenizer, tokens: &[i64]) -> Result<String, ApiError> {
    let vocabulary = tokenizer.vocab_size();
    let ids = tokens
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            u32::try_from(t)
                .ok()
                .filter(|&id| (id as usize) < vocabulary)
                .ok_or_else(|| {
                    ApiError::invalid(
                        format!(
                            "tokens[{i}] is {t}, outside this model's vocabulary of \
                             {vocabulary} tokens"
                        ),
                        Some(&format!("tokens[{i}]")),
                    )
                    .with_code("invalid_value")
                })
        })
        .collect::<Result<Vec<u32>, ApiError>>()?;
    tokenizer
        .decode_with_special(&ids)
        .map_err(|e| ApiError::internal(format!("detokenizing failed: {e}")))
}
