//! POST /tokenize and /detokenize (llama.cpp's server's shapes) against the real server, on
//! the default model and on a second one named by `model`.

mod common;

use serde_json::{json, Value};

use common::{assert_openai_error, post_raw};

const QWEN: &str = "qwen2.5-coder-0.5b-instruct";

async fn tokens_of(body: Value) -> Vec<Value> {
    let (status, reply) = post_raw("/tokenize", &body.to_string()).await;
    assert_eq!(status, 200, "{reply}");
    reply["tokens"].as_array().expect("tokens").clone()
}

async fn detokenize(body: Value) -> String {
    let (status, reply) = post_raw("/detokenize", &body.to_string()).await;
    assert_eq!(status, 200, "{reply}");
    reply["content"].as_str().expect("content").to_string()
}

#[tokio::test]
async fn text_round_trips_through_tokens() {
    let text = "Hello world, naïve café! 12345";
    for model in [None, Some(QWEN)] {
        let mut body = json!({ "content": text });
        if let Some(m) = model {
            body["model"] = json!(m);
        }
        let tokens = tokens_of(body).await;
        assert!(tokens.len() > 5, "{tokens:?}");
        assert!(tokens.iter().all(Value::is_u64), "{tokens:?}");
        let mut back = json!({ "tokens": tokens });
        if let Some(m) = model {
            back["model"] = json!(m);
        }
        assert_eq!(detokenize(back).await, text, "model {model:?}");
    }
}

#[tokio::test]
async fn pieces_spell_out_the_text() {
    let text = "Hello world, naïve café";
    let tokens = tokens_of(json!({ "content": text, "with_pieces": true })).await;
    let mut bytes = Vec::new();
    for token in &tokens {
        assert!(token["id"].is_u64(), "{token}");
        match &token["piece"] {
            Value::String(s) => bytes.extend_from_slice(s.as_bytes()),
            // A piece that is part of a UTF-8 character comes as its bytes.
            Value::Array(b) => bytes.extend(b.iter().map(|v| v.as_u64().unwrap() as u8)),
            other => panic!("piece is {other}"),
        }
    }
    assert_eq!(String::from_utf8(bytes).unwrap(), text);
    // The second piece of "Hello world" starts with its space, as llama.cpp shows it.
    assert_eq!(tokens[1]["piece"], " world", "{tokens:?}");
}

#[tokio::test]
async fn control_tokens_are_parsed_unless_asked_not_to() {
    let text = "<|im_start|>user";
    let parsed = tokens_of(json!({ "content": text })).await;
    let plain = tokens_of(json!({ "content": text, "parse_special": false })).await;
    assert!(parsed.len() < plain.len(), "{parsed:?} vs {plain:?}");
    // Detokenizing writes control tokens out, as llama.cpp's server does.
    assert_eq!(detokenize(json!({ "tokens": parsed })).await, text);
    assert_eq!(detokenize(json!({ "tokens": plain })).await, text);
}

#[tokio::test]
async fn add_special_adds_only_what_the_model_adds() {
    // Neither model adds a BOS (their GGUFs say so), so add_special changes nothing; the
    // empty text is no tokens.
    let with = tokens_of(json!({ "content": "Hi", "add_special": true })).await;
    let without = tokens_of(json!({ "content": "Hi" })).await;
    assert_eq!(with, without);
    assert!(tokens_of(json!({ "content": "" })).await.is_empty());
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let (status, body) = post_raw("/tokenize", r#"{"text": "hi"}"#).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("content"),
        "{body}"
    );

    let (status, body) = post_raw("/detokenize", r#"{"tokens": [1, -3]}"#).await;
    assert_eq!(status, 400, "{body}");
    assert_openai_error(&body, "invalid_value");
    assert_eq!(body["error"]["param"], "tokens[1]");

    let (status, body) = post_raw("/detokenize", r#"{"tokens": [99999999]}"#).await;
    assert_eq!(status, 400, "{body}");
    assert_openai_error(&body, "invalid_value");

    let (status, body) = post_raw("/tokenize", r#"{"content": "hi", "model": "no-such"}"#).await;
    assert_eq!(status, 404, "{body}");
    assert_openai_error(&body, "model_not_found");
}
