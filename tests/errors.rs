//! Bad input gets an OpenAI-shaped error with the right status, never a panic or a hang.

mod common;

use common::{client, post_raw};
use serde_json::{json, Value};

/// Asserts the OpenAI error shape and returns the error object.
fn error_of(status: u16, body: &Value, want_status: u16) -> &Value {
    assert_eq!(status, want_status, "{body}");
    let e = &body["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(e["type"].is_string(), "{body}");
    assert!(
        e.get("param").is_some() && e.get("code").is_some(),
        "{body}"
    );
    e
}

async fn chat(body: Value) -> (u16, Value) {
    post_raw("/v1/chat/completions", &body.to_string()).await
}

fn hi() -> Value {
    json!([{"role": "user", "content": "Hi"}])
}

#[tokio::test]
async fn malformed_json() {
    let (status, body) = post_raw("/v1/chat/completions", "{\"messages\": [").await;
    let e = error_of(status, &body, 400);
    assert!(e["message"].as_str().unwrap().contains("parse"), "{body}");
}

#[tokio::test]
async fn wrong_types_name_the_field() {
    let (status, body) = chat(json!({"messages": hi(), "temperature": "hot"})).await;
    assert_eq!(error_of(status, &body, 400)["param"], "temperature");
    let (status, body) = chat(json!({"messages": "hello"})).await;
    assert_eq!(error_of(status, &body, 400)["param"], "messages");
    let (status, body) = chat(json!([1, 2])).await;
    error_of(status, &body, 400);
}

#[tokio::test]
async fn empty_messages() {
    let (status, body) = chat(json!({"messages": []})).await;
    assert_eq!(error_of(status, &body, 400)["param"], "messages");
}

#[tokio::test]
async fn missing_messages() {
    let (status, body) = chat(json!({"model": "smollm2-135m-instruct"})).await;
    let e = error_of(status, &body, 400);
    assert!(
        e["message"].as_str().unwrap().contains("messages"),
        "{body}"
    );
}

#[tokio::test]
async fn unknown_role() {
    let (status, body) = chat(json!({"messages": [{"role": "wizard", "content": "hi"}]})).await;
    let e = error_of(status, &body, 400);
    assert_eq!(e["param"], "messages[0].role");
    assert!(e["message"].as_str().unwrap().contains("wizard"));
}

#[tokio::test]
async fn out_of_range_sampling_values() {
    for (field, value) in [
        ("temperature", json!(2.5)),
        ("temperature", json!(-0.1)),
        ("top_p", json!(1.5)),
        ("max_tokens", json!(0)),
        ("max_completion_tokens", json!(-3)),
        ("n", json!(0)),
    ] {
        let mut request = json!({"messages": hi()});
        request[field] = value.clone();
        let (status, body) = chat(request).await;
        assert_eq!(
            error_of(status, &body, 400)["param"],
            field,
            "{field}={value}"
        );
    }
}

#[tokio::test]
async fn too_many_stop_sequences() {
    let (status, body) = chat(json!({"messages": hi(), "stop": ["a", "b", "c", "d", "e"]})).await;
    assert_eq!(error_of(status, &body, 400)["param"], "stop");
}

#[tokio::test]
async fn a_stop_sequence_past_the_length_cap() {
    let long = "x".repeat(wick::api::fields::MAX_STOP_BYTES + 1);
    let (status, body) = chat(json!({"messages": hi(), "stop": ["a", long]})).await;
    let error = error_of(status, &body, 400);
    assert_eq!(error["param"], "stop");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("at most 512 bytes"),
        "{body}"
    );
    // At the cap it is accepted.
    let at_cap = "x".repeat(wick::api::fields::MAX_STOP_BYTES);
    let (status, body) = chat(json!({"messages": hi(), "stop": at_cap, "max_tokens": 1})).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn unknown_model_is_404_through_the_sdk() {
    let request = async_openai::types::chat::CreateChatCompletionRequestArgs::default()
        .model("no-such-model")
        .messages([
            async_openai::types::chat::ChatCompletionRequestUserMessageArgs::default()
                .content("Hi")
                .build()
                .unwrap()
                .into(),
        ])
        .build()
        .unwrap();
    match client().chat().create(request).await {
        Err(async_openai::error::OpenAIError::ApiError(e)) => {
            assert_eq!(e.status_code.as_u16(), 404);
            assert_eq!(
                e.api_error.code.as_deref(),
                Some("model_not_found"),
                "{e:?}"
            );
            assert!(e.api_error.message.contains("no-such-model"));
        }
        other => panic!("expected an API error, got {other:?}"),
    }
    let (status, body) = chat(json!({"model": "no-such-model", "messages": hi()})).await;
    assert_eq!(error_of(status, &body, 404)["code"], "model_not_found");
}

#[tokio::test]
async fn prompt_longer_than_the_context() {
    // The test server's context is 2048 tokens.
    let long = "the quick brown fox jumps over the lazy dog ".repeat(400);
    let (status, body) = chat(json!({"messages": [{"role": "user", "content": long}]})).await;
    let e = error_of(status, &body, 400);
    assert_eq!(e["code"], "context_length_exceeded", "{body}");
    // A prompt that fits but leaves no room for the requested completion.
    let medium = "the quick brown fox ".repeat(300);
    let (status, body) =
        chat(json!({"messages": [{"role": "user", "content": medium}], "max_tokens": 2000})).await;
    assert_eq!(
        error_of(status, &body, 400)["code"],
        "context_length_exceeded"
    );
}

#[tokio::test]
async fn a_prompt_sure_not_to_fit_is_refused_before_tokenizing() {
    // 240 KB of one-byte words: under the test server's 256 KiB body limit, and far more
    // tokens than its 2048-token context. Refused from its length alone (the message gives
    // a lower bound, "at least"), on every endpoint that takes a prompt.
    let words = "a ".repeat(120_000);
    let (status, body) = chat(json!({"messages": [{"role": "user", "content": words}]})).await;
    let e = error_of(status, &body, 400);
    assert_eq!(e["code"], "context_length_exceeded", "{body}");
    assert_eq!(e["param"], "messages", "{body}");
    assert!(
        e["message"].as_str().unwrap().contains("at least"),
        "{body}"
    );
    let (status, body) = post_raw(
        "/v1/completions",
        &json!({"prompt": words, "max_tokens": 4}).to_string(),
    )
    .await;
    let e = error_of(status, &body, 400);
    assert_eq!(e["code"], "context_length_exceeded", "{body}");
    assert_eq!(e["param"], "prompt", "{body}");
    assert!(
        e["message"].as_str().unwrap().contains("at least"),
        "{body}"
    );
    let (status, body) = post_raw("/v1/responses", &json!({"input": words}).to_string()).await;
    let e = error_of(status, &body, 400);
    assert_eq!(e["code"], "context_length_exceeded", "{body}");
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    // The test server's limit is 256 KiB.
    let huge = "x".repeat(300 * 1024);
    let (status, body) = chat(json!({"messages": [{"role": "user", "content": huge}]})).await;
    error_of(status, &body, 413);
}

#[tokio::test]
async fn unsupported_content_parts() {
    let (status, body) = chat(json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x/y.png"}}
    ]}]}))
    .await;
    assert_eq!(
        error_of(status, &body, 400)["param"],
        "messages[0].content[0]"
    );
}

#[tokio::test]
async fn unknown_route_and_method() {
    let (status, body) = post_raw("/v1/nothing-here", "{}").await;
    error_of(status, &body, 404);
    let response = reqwest::Client::new()
        .delete(format!("{}/v1/chat/completions", common::base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    let body: Value = response.json().await.unwrap();
    error_of(405, &body, 405);
}

#[tokio::test]
async fn unknown_fields_are_ignored() {
    let (status, body) = chat(json!({
        "messages": hi(), "max_tokens": 2, "some_future_field": {"x": 1}, "user": "u1"
    }))
    .await;
    assert_eq!(status, 200, "{body}");
}
