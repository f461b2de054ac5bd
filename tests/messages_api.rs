//! The Anthropic Messages API (/v1/messages, /v1/messages/count_tokens) against the real
//! server over raw HTTP, checked against Anthropic's documented shapes: a plain message, the
//! streamed event sequence, stop sequences, forced tool calls (plain and streamed) and a
//! tool round trip, token counting, `x-api-key`, and errors in Anthropic's shape. The
//! official `anthropic` Python SDK runs against it in tests/anthropic_sdk.rs.

mod common;

use serde_json::{json, Value};

use common::base_url;

const QWEN: &str = "qwen2.5-coder-0.5b-instruct";

async fn post(base: &str, path: &str, headers: &[(&str, &str)], body: &Value) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("anthropic-version", "2023-06-01")
        .json(body);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body read");
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("status {status}: body is not JSON: {text}"));
    (status, json)
}

async fn message(body: Value) -> Value {
    let (status, reply) = post(&base_url(), "/v1/messages", &[], &body).await;
    assert_eq!(status, 200, "{reply}");
    reply
}

/// The (event name, data) pairs of a streamed message.
async fn stream(body: Value) -> Vec<(String, Value)> {
    let mut body = body;
    body["stream"] = json!(true);
    let response = reqwest::Client::new()
        .post(format!("{}/v1/messages", base_url()))
        .json(&body)
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("body read");
    let mut events = Vec::new();
    for frame in text.split("\n\n").filter(|f| !f.trim().is_empty()) {
        let mut name = None;
        let mut data = String::new();
        for line in frame.lines() {
            if let Some(n) = line.strip_prefix("event: ").or(line.strip_prefix("event:")) {
                name = Some(n.trim().to_string());
            } else if let Some(d) = line.strip_prefix("data: ").or(line.strip_prefix("data:")) {
                data.push_str(d);
            }
        }
        let Some(name) = name else { continue }; // keep-alive comments
        let data: Value = serde_json::from_str(&data).expect("event data is JSON");
        assert_eq!(data["type"], name.as_str(), "{data}");
        events.push((name, data));
    }
    events
}

fn assert_anthropic_error(body: &Value, kind: &str) {
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], kind, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

fn hello(max_tokens: u32) -> Value {
    json!({
        "max_tokens": max_tokens,
        "temperature": 0,
        "system": "You are terse.",
        "messages": [{ "role": "user", "content": "Say hello." }],
    })
}

#[tokio::test]
async fn a_plain_message_has_anthropics_shape() {
    let reply = message(hello(8)).await;
    assert!(reply["id"].as_str().unwrap().starts_with("msg_"), "{reply}");
    assert_eq!(reply["type"], "message");
    assert_eq!(reply["role"], "assistant");
    assert_eq!(reply["model"], "smollm2-135m-instruct");
    let content = reply["content"].as_array().unwrap();
    assert_eq!(content.len(), 1, "{reply}");
    assert_eq!(content[0]["type"], "text");
    assert!(!content[0]["text"].as_str().unwrap().is_empty(), "{reply}");
    assert!(
        ["end_turn", "max_tokens"].contains(&reply["stop_reason"].as_str().unwrap()),
        "{reply}"
    );
    assert_eq!(reply["stop_sequence"], Value::Null);
    let usage = &reply["usage"];
    assert!(usage["input_tokens"].as_u64().unwrap() > 5, "{reply}");
    let out = usage["output_tokens"].as_u64().unwrap();
    assert!((1..=8).contains(&out), "{reply}");
    if reply["stop_reason"] == "max_tokens" {
        assert_eq!(out, 8);
    }

    // System as blocks and content as blocks read the same.
    let mut blocks = hello(8);
    blocks["system"] = json!([{ "type": "text", "text": "You are terse.", "cache_control": { "type": "ephemeral" } }]);
    blocks["messages"][0]["content"] = json!([{ "type": "text", "text": "Say hello." }]);
    blocks["metadata"] = json!({ "user_id": "someone" });
    assert_eq!(message(blocks).await["content"], reply["content"]);
}

#[tokio::test]
async fn a_streamed_message_follows_the_event_sequence() {
    let plain = message(hello(12)).await;
    let events = stream(hello(12)).await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[..2], ["message_start", "ping"], "{names:?}");
    assert_eq!(names[2], "content_block_start", "{names:?}");
    let n = names.len();
    assert_eq!(
        names[n - 3..],
        ["content_block_stop", "message_delta", "message_stop"],
        "{names:?}"
    );
    assert!(
        names[3..n - 3].iter().all(|n| *n == "content_block_delta"),
        "{names:?}"
    );

    let start = &events[0].1["message"];
    assert_eq!(start["content"], json!([]));
    assert_eq!(start["stop_reason"], Value::Null);
    assert_eq!(
        start["usage"]["input_tokens"],
        plain["usage"]["input_tokens"]
    );
    assert_eq!(
        events[2].1["content_block"],
        json!({ "type": "text", "text": "" })
    );
    let text: String = events[3..n - 3]
        .iter()
        .map(|(_, d)| {
            assert_eq!(d["index"], 0);
            assert_eq!(d["delta"]["type"], "text_delta");
            d["delta"]["text"].as_str().unwrap().to_string()
        })
        .collect();
    // Greedy sampling: the stream says what the plain answer said.
    assert_eq!(text, plain["content"][0]["text"].as_str().unwrap());
    let delta = &events[n - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], plain["stop_reason"]);
    assert_eq!(
        delta["usage"]["output_tokens"],
        plain["usage"]["output_tokens"]
    );
}

#[tokio::test]
async fn a_stop_sequence_ends_the_message_and_is_named() {
    let plain = message(hello(16)).await;
    let text = plain["content"][0]["text"].as_str().unwrap().to_string();
    // A word from the middle of the greedy answer.
    let word = text
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("a longer answer: {text}"))
        .to_string();
    let mut body = hello(16);
    body["stop_sequences"] = json!(["never-said-zzz", word]);
    let reply = message(body.clone()).await;
    assert_eq!(reply["stop_reason"], "stop_sequence", "{reply}");
    assert_eq!(reply["stop_sequence"], word.as_str(), "{reply}");
    let before = reply["content"][0]["text"].as_str().unwrap();
    assert!(
        text.starts_with(before) && !before.contains(&word),
        "{before:?} / {text:?}"
    );

    let events = stream(body).await;
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "stop_sequence");
    assert_eq!(delta["delta"]["stop_sequence"], word.as_str());
}

fn weather_tool() -> Value {
    json!({
        "name": "get_weather",
        "description": "The current weather in a city.",
        "input_schema": {
            "type": "object",
            "properties": { "city": { "type": "string" } },
            "required": ["city"],
        },
    })
}

fn weather_question(choice: Value) -> Value {
    json!({
        "model": QWEN,
        "max_tokens": 64,
        "temperature": 0,
        "messages": [{ "role": "user", "content": "What is the weather in Paris?" }],
        "tools": [weather_tool()],
        "tool_choice": choice,
    })
}

#[tokio::test]
async fn a_forced_tool_call_is_a_tool_use_block() {
    for choice in [
        json!({ "type": "tool", "name": "get_weather" }),
        json!({ "type": "any" }),
    ] {
        let reply = message(weather_question(choice.clone())).await;
        assert_eq!(reply["stop_reason"], "tool_use", "{choice}: {reply}");
        let call = reply["content"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["type"] == "tool_use")
            .unwrap_or_else(|| panic!("no tool_use block: {reply}"));
        assert!(call["id"].as_str().unwrap().starts_with("toolu_"), "{call}");
        assert_eq!(call["name"], "get_weather");
        assert!(call["input"]["city"].is_string(), "{call}");
    }
    // `none` offers the tools and makes no call.
    let reply = message(weather_question(json!({ "type": "none" }))).await;
    assert_ne!(reply["stop_reason"], "tool_use", "{reply}");
    assert!(reply["content"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["type"] == "text"));
}

#[tokio::test]
async fn a_streamed_tool_call_sends_its_input_as_json_deltas() {
    let events = stream(weather_question(
        json!({ "type": "tool", "name": "get_weather" }),
    ))
    .await;
    let start = events
        .iter()
        .find(|(n, d)| n == "content_block_start" && d["content_block"]["type"] == "tool_use")
        .unwrap_or_else(|| panic!("no tool_use block: {events:?}"));
    let index = start.1["index"].clone();
    assert_eq!(start.1["content_block"]["name"], "get_weather");
    assert_eq!(start.1["content_block"]["input"], json!({}));
    let json_text: String = events
        .iter()
        .filter(|(n, d)| n == "content_block_delta" && d["index"] == index)
        .map(|(_, d)| {
            assert_eq!(d["delta"]["type"], "input_json_delta");
            d["delta"]["partial_json"].as_str().unwrap().to_string()
        })
        .collect();
    let input: Value = serde_json::from_str(&json_text).expect("the deltas make JSON");
    assert!(input["city"].is_string(), "{input}");
    assert!(events
        .iter()
        .any(|(n, d)| n == "content_block_stop" && d["index"] == index));
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
}

#[tokio::test]
async fn a_tool_result_goes_back_to_the_model() {
    let first = message(weather_question(
        json!({ "type": "tool", "name": "get_weather" }),
    ))
    .await;
    let call = first["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "tool_use")
        .unwrap()
        .clone();
    let conversation = |result: &str| {
        json!({
            "model": QWEN,
            "max_tokens": 40,
            "temperature": 0,
            "tools": [weather_tool()],
            "tool_choice": { "type": "none" },
            "messages": [
                { "role": "user", "content": "What is the weather in Paris?" },
                { "role": "assistant", "content": first["content"] },
                { "role": "user", "content": [
                    { "type": "tool_result", "tool_use_id": call["id"], "content": result },
                ]},
            ],
        })
    };
    let reply = message(conversation("Sunny, 31 degrees Celsius")).await;
    assert_ne!(reply["stop_reason"], "tool_use", "{reply}");
    assert_eq!(reply["content"][0]["type"], "text", "{reply}");
    assert!(
        !reply["content"][0]["text"]
            .as_str()
            .unwrap()
            .trim()
            .is_empty(),
        "{reply}"
    );
    // The call and its result reached the prompt (what greedy Qwen2.5-Coder-0.5B makes of
    // them is its own affair: it sometimes repeats the call): a longer result is a longer
    // prompt, by about as many tokens.
    let count = |body: Value| async move {
        let (status, counted) = post(&base_url(), "/v1/messages/count_tokens", &[], &body).await;
        assert_eq!(status, 200, "{counted}");
        counted["input_tokens"].as_u64().unwrap()
    };
    let short = count(conversation("Sunny")).await;
    let long = count(conversation(
        "Sunny with a light breeze from the west all afternoon",
    ))
    .await;
    assert!(long >= short + 8, "{short} → {long}");
    assert_eq!(short, {
        let r = message(conversation("Sunny")).await;
        r["usage"]["input_tokens"].as_u64().unwrap()
    });
}

#[tokio::test]
async fn count_tokens_counts_the_prompt_the_message_would_have() {
    let body = weather_question(json!({ "type": "auto" }));
    let (status, counted) = post(&base_url(), "/v1/messages/count_tokens", &[], &body).await;
    assert_eq!(status, 200, "{counted}");
    let reply = message(body).await;
    assert_eq!(
        counted["input_tokens"], reply["usage"]["input_tokens"],
        "{counted}"
    );
    // No max_tokens needed to count.
    let (status, counted) = post(
        &base_url(),
        "/v1/messages/count_tokens",
        &[],
        &json!({ "messages": [{ "role": "user", "content": "Hi" }] }),
    )
    .await;
    assert_eq!(status, 200, "{counted}");
    assert!(counted["input_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn bad_requests_get_anthropic_errors() {
    let base = base_url();
    let cases = [
        (
            json!({ "messages": [{ "role": "user", "content": "Hi" }] }),
            400,
            "max_tokens",
        ),
        (
            json!({ "max_tokens": 0, "messages": [{ "role": "user", "content": "Hi" }] }),
            400,
            "max_tokens",
        ),
        (json!({ "max_tokens": 5, "messages": [] }), 400, "messages"),
        (
            json!({ "max_tokens": 5, "messages": [{ "role": "system", "content": "Hi" }] }),
            400,
            "system",
        ),
        (
            json!({ "max_tokens": 5, "messages": [{ "role": "user", "content": [
            { "type": "image", "source": { "type": "base64", "media_type": "image/png", "data": "" } }
        ] }] }),
            400,
            "image",
        ),
        (
            json!({ "max_tokens": 5, "messages": [{ "role": "user", "content": [
            { "type": "tool_use", "id": "x", "name": "f", "input": {} }
        ] }] }),
            400,
            "tool_use",
        ),
        (
            json!({ "max_tokens": 5, "tools": [{ "type": "bash_20250124", "name": "bash" }],
            "messages": [{ "role": "user", "content": "Hi" }] }),
            400,
            "bash_20250124",
        ),
        (
            json!({ "max_tokens": 5, "tools": [weather_tool()], "tool_choice": { "type": "tool", "name": "nope" },
            "messages": [{ "role": "user", "content": "Hi" }] }),
            400,
            "nope",
        ),
        (
            json!({ "max_tokens": 5, "temperature": "hot", "messages": [{ "role": "user", "content": "Hi" }] }),
            400,
            "temperature",
        ),
        (
            json!({ "model": "claude-no-such", "max_tokens": 5, "messages": [{ "role": "user", "content": "Hi" }] }),
            404,
            "claude-no-such",
        ),
    ];
    for (body, status, mentions) in cases {
        let (got, reply) = post(&base, "/v1/messages", &[], &body).await;
        assert_eq!(got, status, "{body}: {reply}");
        let kind = if status == 404 {
            "not_found_error"
        } else {
            "invalid_request_error"
        };
        assert_anthropic_error(&reply, kind);
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains(mentions), "{body}: {message}");
    }
    // Malformed JSON.
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/messages"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_anthropic_error(&r.json().await.unwrap(), "invalid_request_error");
}

#[tokio::test]
async fn keys_are_taken_as_x_api_key_or_bearer() {
    let mut args = wick::config::ServeArgs::local_ephemeral();
    args.ctx_size = Some(1024);
    args.service.api_keys = vec!["key-one".into()];
    let base = format!("http://{}", common::start_server(args));
    for headers in [
        vec![],
        vec![("x-api-key", "wrong")],
        vec![("authorization", "Bearer wrong")],
    ] {
        let (status, reply) = post(&base, "/v1/messages", &headers, &hello(2)).await;
        assert_eq!(status, 401, "{headers:?}: {reply}");
        assert_anthropic_error(&reply, "authentication_error");
        let (status, reply) = post(&base, "/v1/messages/count_tokens", &headers, &hello(2)).await;
        assert_eq!(status, 401, "{headers:?}: {reply}");
        assert_anthropic_error(&reply, "authentication_error");
    }
    for headers in [
        [("x-api-key", "key-one")],
        [("authorization", "Bearer key-one")],
    ] {
        let (status, reply) = post(&base, "/v1/messages", &headers, &hello(2)).await;
        assert_eq!(status, 200, "{headers:?}: {reply}");
    }
    // The OpenAI endpoints take x-api-key too.
    let r = reqwest::Client::new()
        .get(format!("{base}/v1/models"))
        .header("x-api-key", "key-one")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// A thinking model's thinking is a `thinking` block (streamed as `thinking_delta`), and
/// `thinking: {"type": "disabled"}` switches it off; an earlier turn's thinking block is
/// taken back. The model is tests/common/thinking.rs's: SmolLM2 under Qwen3.5's template,
/// which opens the thinking in the prompt, so a short answer is all thinking.
#[tokio::test]
async fn a_thinking_models_thinking_is_a_thinking_block() {
    let base = format!("http://{}", common::thinking::server());
    let body = json!({
        "model": common::thinking::OPENS,
        "max_tokens": 6,
        "temperature": 0,
        "messages": [
            { "role": "user", "content": "Hi" },
            { "role": "assistant", "content": [
                { "type": "thinking", "thinking": "They greet me.", "signature": "" },
                { "type": "text", "text": "Hello!" },
            ]},
            { "role": "user", "content": "Say hello again." },
        ],
    });
    let (status, reply) = post(&base, "/v1/messages", &[], &body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["content"][0]["type"], "thinking", "{reply}");
    assert!(
        !reply["content"][0]["thinking"].as_str().unwrap().is_empty(),
        "{reply}"
    );
    assert_eq!(reply["content"][0]["signature"], "");
    assert_eq!(reply["stop_reason"], "max_tokens");

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let text = reqwest::Client::new()
        .post(format!("{base}/v1/messages"))
        .json(&streamed)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains(r#""type":"thinking""#), "{text}");
    assert!(text.contains(r#""type":"thinking_delta""#), "{text}");

    let mut off = body;
    off["thinking"] = json!({ "type": "disabled" });
    let (status, reply) = post(&base, "/v1/messages", &[], &off).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["content"][0]["type"], "text", "{reply}");
}
