//! POST /v1/embeddings in OpenAI's shape, for embedding models (src/model/bert.rs):
//! `{"model", "input", "encoding_format", "dimensions", "user"}` →
//! `{"object": "list", "data": [{"object": "embedding", "index", "embedding"}], "model",
//! "usage": {"prompt_tokens", "total_tokens"}}`.
//!
//! `input` is a string, a list of strings, a list of token ids, or a list of lists of token
//! ids (what OpenAI's SDKs send, langchain-openai's `OpenAIEmbeddings` among them). A text is
//! framed as the model wants it (`[CLS] text [SEP]` for BERT) and its content is plain text;
//! token ids are taken as they are, and must be of the model's vocabulary. Every input of a
//! request goes to the model in one batch. Vectors have length 1; `encoding_format: base64`
//! gives each as the base64 of its little-endian f32 values, as OpenAI does. `dimensions`
//! shortens vectors only for a model trained for it (Matryoshka); the embedding models of
//! wick's catalog are not, so any value but their own width is refused with a 400.
//!
//! A chat model asked for embeddings answers 400 (`model_not_supported`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::caller::Caller;
use super::error::ApiError;
use super::generation::{self, checked_body, submit_error};
use super::request::parse_json;
use super::AppState;
use crate::model::ModelFrontend;

/// Most inputs one request may hold (OpenAI's own limit).
pub const MAX_INPUTS: usize = 2048;

#[derive(Debug, Deserialize)]
struct EmbeddingsRequest {
    model: Option<String>,
    input: Value,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<i64>,
    /// Accepted and unused, as OpenAI's end-user id is.
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<String>,
}

/// One input as the client gave it.
#[derive(Debug)]
enum Input {
    Text(String),
    Tokens(Vec<i64>),
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(&state, caller, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn handle(
    state: &AppState,
    Caller(client): Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = checked_body(state, body)?;
    let request: EmbeddingsRequest = parse_json(&body)?;
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                format!("encoding_format must be 'float' or 'base64', not '{other}'"),
                Some("encoding_format"),
            )
            .with_code("invalid_value"))
        }
    };
    let inputs = read_inputs(&request.input)?;
    // Whether the inputs are items of a list (`input[i]`), or `input` is one text or one
    // list of ids.
    let listed =
        matches!(&request.input, Value::Array(items) if !items.iter().all(Value::is_number));
    let served = state.resolve(request.model.as_deref()).await?;
    if !served.backend.makes_embeddings() {
        return Err(ApiError::invalid(
            format!(
                "model '{}' is a chat model and does not make embeddings; ask an embedding \
                 model (GET /v1/models lists them with \"embedding\": true), or have the \
                 server's operator turn pooled embeddings on for it (`pooled_embeddings` \
                 in the catalog, `--pooled-embeddings last`)",
                served.entry.id
            ),
            Some("model"),
        )
        .with_code("model_not_supported"));
    }
    let width = served.backend.embedding_dimensions();
    if let Some(d) = request.dimensions {
        if d != width as i64 {
            return Err(ApiError::invalid(
                format!(
                    "model '{}' gives vectors of {width} dimensions and is not trained to \
                     shorten them: `dimensions` may only be {width}",
                    served.entry.id
                ),
                Some("dimensions"),
            )
            .with_code("invalid_value"));
        }
    }
    generation::local(&served)?;
    // Tokenizing up to a body's worth of text takes a while: off the async threads.
    let tokenizing = served.clone();
    let ids = state
        .cpu_work
        .run(move || tokenize(generation::local(&tokenizing)?, inputs, listed))
        .await??;
    let prompt_tokens: usize = ids.iter().map(Vec::len).sum();
    let vectors = served
        .backend
        .embed(client, ids)
        .await
        .map_err(submit_error)?;
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if base64 {
                json!(base64_f32(v))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": served.entry.id,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }))
    .into_response())
}

/// The inputs of `input`, checked for shape (not yet for the model).
fn read_inputs(input: &Value) -> Result<Vec<Input>, ApiError> {
    let invalid = |message: String, param: &str| {
        ApiError::invalid(message, Some(param)).with_code("invalid_value")
    };
    let token = |v: &Value, at: String| {
        v.as_i64()
            .ok_or_else(|| invalid(format!("{at} is not a token id (an integer)"), &at))
    };
    let inputs = match input {
        Value::String(s) => vec![Input::Text(s.clone())],
        Value::Array(items) if items.is_empty() => {
            return Err(invalid("input must not be an empty list".into(), "input"))
        }
        Value::Array(items) if items.iter().all(Value::is_number) => vec![Input::Tokens(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| token(v, format!("input[{i}]")))
                .collect::<Result<_, _>>()?,
        )],
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(Input::Text(s.clone())),
                Value::Array(ids) => Ok(Input::Tokens(
                    ids.iter()
                        .enumerate()
                        .map(|(j, v)| token(v, format!("input[{i}][{j}]")))
                        .collect::<Result<_, _>>()?,
                )),
                _ => Err(invalid(
                    format!("input[{i}] must be a string or a list of token ids"),
                    &format!("input[{i}]"),
                )),
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(invalid(
                "input must be a string, a list of strings, a list of token ids or a list of \
                 lists of token ids"
                    .into(),
                "input",
            ))
        }
    };
    if inputs.len() > MAX_INPUTS {
        return Err(invalid(
            format!(
                "input has {} items; at most {MAX_INPUTS} are allowed",
                inputs.len()
            ),
            "input",
        ));
    }
    for (i, item) in inputs.iter().enumerate() {
        let empty = match item {
            Input::Text(s) => s.is_empty(),
            Input::Tokens(ids) => ids.is_empty(),
        };
        if empty {
            let at = match input {
                Value::String(_) => "input".to_string(),
                _ => format!("input[{i}]"),
            };
            return Err(invalid(
                format!("{at} is empty: there is nothing to embed"),
                &at,
            ));
        }
    }
    Ok(inputs)
}

/// Token ids of every input, each within the model's context and vocabulary.
fn tokenize(
    frontend: &ModelFrontend,
    inputs: Vec<Input>,
    listed: bool,
) -> Result<Vec<Vec<u32>>, ApiError> {
    let context = frontend.context_length;
    let vocabulary = frontend.tokenizer.vocab_size();
    let at = |i: usize| match listed {
        true => format!("input[{i}]"),
        false => "input".to_string(),
    };
    inputs
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let ids = match item {
                Input::Text(text) => {
                    // A text that cannot fit is refused before it is tokenized.
                    let least = frontend.tokenizer.fewest_tokens(&text);
                    if least > context {
                        return Err(too_long(&at(i), least, context));
                    }
                    frontend
                        .tokenizer
                        .encode_for_embedding(&text)
                        .map_err(|e| ApiError::internal(format!("tokenizing failed: {e}")))?
                }
                Input::Tokens(ids) => ids
                    .iter()
                    .enumerate()
                    .map(|(j, &t)| {
                        u32::try_from(t)
                            .ok()
                            .filter(|&id| (id as usize) < vocabulary)
                            .ok_or_else(|| {
                                let param = format!("{}[{j}]", at(i));
                                ApiError::invalid(
                                    format!(
                                        "{param} is {t}, outside this model's vocabulary of \
                                         {vocabulary} tokens"
                                    ),
                                    Some(&param),
                                )
                                .with_code("invalid_value")
                            })
                    })
                    .collect::<Result<Vec<u32>, ApiError>>()?,
            };
            if ids.len() > context {
                return Err(too_long(&at(i), ids.len(), context));
            }
            Ok(ids)
        })
        .collect()
}

fn too_long(param: &str, tokens: usize, context: usize) -> ApiError {
    ApiError::invalid(
        format!(
            "This model's maximum context length is {context} tokens, however {param} has \
             {tokens} tokens. Please reduce the length of the input."
        ),
        Some(param),
    )
    .with_code("context_length_exceeded")
}

/// The base64 (standard alphabet, padded) of the vector's little-endian f32 bytes, which is
/// what OpenAI's SDKs decode for `encoding_format: base64`.
pub fn base64_f32(v: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        let chars = chunk.len() + 1;
        for k in 0..4 {
            if k < chars {
                out.push(ALPHABET[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_the_standard_padded_alphabet() {
        // 1.0f32 is 00 00 80 3f little-endian; 2.5 is 00 00 20 40.
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, 2.5]), "AACAPwAAIEA=");
        assert_eq!(base64_f32(&[1.0, 2.5, -0.0]), "AACAPwAAIEAAAACA");
        assert_eq!(base64_f32(&[]), "");
    }

    #[test]
    fn inputs_of_every_shape_are_read() {
        let read = |v: Value| read_inputs(&v).map(|i| format!("{i:?}"));
        assert_eq!(read(json!("hi")).unwrap(), r#"[Text("hi")]"#);
        assert_eq!(
            read(json!(["a", "b"])).unwrap(),
            r#"[Text("a"), Text("b")]"#
        );
        assert_eq!(read(json!([1, 2])).unwrap(), "[Tokens([1, 2])]");
        assert_eq!(
            read(json!([[1], [2, 3]])).unwrap(),
            "[Tokens([1]), Tokens([2, 3])]"
        );
        for bad in [
            json!(""),
            json!([]),
            json!([""]),
            json!([[]]),
            json!(3),
            json!([1.5]),
            json!([{}]),
        ] {
            let e = read_inputs(&bad).expect_err(&bad.to_string());
            assert_eq!(e.status, 400);
            assert!(e.param.as_deref().unwrap().starts_with("input"), "{bad}");
        }
    }
}
