//! The V2 contract of shared/ROUTING.md, row by row, against the real server and the three
//! real models of the catalog: each routing mechanism, each error, each tradition, the
//! metadata on responses and on every stream chunk, and the /ai/... paths.

mod common;

use serde_json::{json, Value};

use common::{base_url, post_raw};

const TIER_1: &str = "smollm2-135m-instruct";
const TIER_2: &str = "qwen2.5-coder-0.5b-instruct";
const TIER_3: &str = "qwen2.5-coder-1.5b-instruct";

/// A successful completion from `{server}{prefix}/chat/completions`, as JSON (the V2 fields
/// are not in the OpenAI SDK's types, so these tests speak raw JSON over HTTP).
async fn complete_at(prefix: &str, body: Value) -> Value {
    let (status, r) = post_raw(&format!("{prefix}/chat/completions"), &body.to_string()).await;
    assert_eq!(status, 200, "{r}");
    r
}

async fn v2(body: Value) -> Value {
    complete_at("/v2", body).await
}

/// The chunks of a streamed /v2 completion, in order, checking the SSE framing: every event
/// is `data: {json}` and the last is `data: [DONE]`.
async fn v2_stream(body: Value) -> Vec<Value> {
    let response = reqwest::Client::new()
        .post(format!("{}/v2/chat/completions", base_url()))
        .json(&body)
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = response.text().await.expect("the whole stream");
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not data: {e:?}"))
        })
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{text}");
    events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("a JSON chunk"))
        .collect()
}

fn ask(text: &str) -> Value {
    json!([{ "role": "user", "content": text }])
}

/// The OpenAI error shape with this status; returns the error object.
fn error_of(status: u16, body: &Value, want: u16) -> Value {
    assert_eq!(status, want, "{body}");
    let e = body["error"].clone();
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(e["type"].is_string() && e.get("param").is_some() && e.get("code").is_some());
    e
}

fn text_of(response: &Value) -> &str {
    response["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
}

/// The metadata every /v2 answer carries, whatever the mechanism.
fn assert_common_meta(r: &Value, mechanism: &str) {
    assert_eq!(r["provider"], "wick", "{r}");
    assert_eq!(r["model_family"], "Open Source", "{r}");
    assert_eq!(r["routing_mechanism"], mechanism, "{r}");
    assert_eq!(r["auto_routing"], mechanism == "auto_routing", "{r}");
}

fn assert_analysed(r: &Value) {
    let tier = r["routing_tier"].as_str().expect("routing_tier");
    assert!(
        ["tier_1", "tier_2", "tier_3", "tier_4"].contains(&tier),
        "{r}"
    );
    let c = r["routing_confidence"]
        .as_f64()
        .expect("routing_confidence");
    assert!((0.0..=1.0).contains(&c), "{r}");
}

#[tokio::test]
async fn auto_routing_answers_with_metadata() {
    let r = v2(json!({
        "auto_routing": true, "messages": ask("Hello!"), "max_tokens": 8, "temperature": 0
    }))
    .await;
    assert_common_meta(&r, "auto_routing");
    assert_analysed(&r);
    assert!(r.get("tradition").is_none(), "no tradition was named: {r}");
    assert!(!text_of(&r).is_empty(), "{r}");
    assert_eq!(r["object"], "chat.completion");
}

/// The default router is the learned one (data/routing/router.json): the 135M model fails
/// word problems, so one goes above tier 1, and never below where a greeting goes.
#[tokio::test]
async fn the_learned_router_sends_a_word_problem_above_tier_1() {
    let tier = |r: &Value| r["routing_tier"].as_str().unwrap().to_string();
    let problem = v2(json!({
        "auto_routing": true,
        "messages": ask("A store sells pencils at 3 for $1.20 and pens at $2.50 each. Maria buys \
                         12 pencils and 4 pens and pays with a $20 bill. How much change does \
                         she get?"),
        "max_tokens": 1
    }))
    .await;
    assert_ne!(tier(&problem), "tier_1", "{problem}");
    assert_ne!(problem["model"], TIER_1, "{problem}");
    let greeting =
        v2(json!({ "auto_routing": true, "messages": ask("Hi there!"), "max_tokens": 1 })).await;
    assert!(tier(&greeting) <= tier(&problem), "{greeting} vs {problem}");
}

/// `--router analyser`: the hand-tuned keyword cues (src/routing/analyser.rs).
#[tokio::test]
async fn the_analyser_routes_a_greeting_to_tier_1_and_short_code_to_tier_2() {
    let mut args = wick::config::ServeArgs::local_ephemeral();
    args.router = wick::config::RouterKind::Analyser;
    let addr = common::start_server(args);
    let route = |text: &str| {
        let body = json!({"auto_routing": true, "messages": ask(text), "max_tokens": 1});
        async move {
            let r: Value = reqwest::Client::new()
                .post(format!("http://{addr}/v2/chat/completions"))
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            r
        }
    };
    let r = route("Hi there!").await;
    assert_eq!(r["model"], TIER_1, "{r}");
    assert_eq!(r["routing_tier"], "tier_1", "{r}");
    let r = route("Write a Python function that returns the sum of a list of numbers.").await;
    assert_eq!(r["model"], TIER_2, "{r}");
    assert_eq!(r["routing_tier"], "tier_2", "{r}");
}

#[tokio::test]
async fn a_hard_reasoning_question_routes_to_tier_3() {
    let r = v2(json!({
        "model_family": "open source",
        "messages": ask(
            "A train leaves at 3pm going 60 mph and another leaves the same station at 4pm going \
             80 mph on the same track. Explain step by step when and where the second train \
             catches up, and prove your answer is correct."
        ),
        "max_tokens": 4
    }))
    .await;
    assert_common_meta(&r, "model_family");
    assert_eq!(r["model"], TIER_3, "{r}");
    assert_eq!(r["routing_tier"], "tier_3", "{r}");
}

#[tokio::test]
async fn every_spelling_of_the_family_is_accepted() {
    for family in ["open source", "open_source", "Open-Source"] {
        let r = v2(json!({
            "model_family": family, "messages": ask("Hi"), "max_tokens": 2
        }))
        .await;
        assert_common_meta(&r, "model_family");
        assert_analysed(&r);
    }
}

#[tokio::test]
async fn direct_selection_serves_that_model_without_analysis() {
    let r = v2(json!({
        "model": TIER_2, "auto_routing": false, "messages": ask("Hi"), "max_tokens": 3,
        "temperature": 0
    }))
    .await;
    assert_common_meta(&r, "direct_model_selection");
    assert_eq!(r["model"], TIER_2);
    assert!(
        r.get("routing_tier").is_none() && r.get("routing_confidence").is_none(),
        "{r}"
    );
}

#[tokio::test]
async fn mechanism_errors_follow_the_contract() {
    let cases = [
        (json!({}), "auto_routing, model, model_family"),
        (
            json!({"auto_routing": false}),
            "auto_routing, model, model_family",
        ),
        (
            json!({"auto_routing": true, "model": TIER_1}),
            "auto_routing, model",
        ),
        (
            json!({"model": TIER_1, "model_family": "open source"}),
            "model, model_family",
        ),
        (
            json!({"auto_routing": true, "model": TIER_1, "model_family": "open source"}),
            "auto_routing, model, model_family",
        ),
    ];
    for (mut body, param) in cases {
        body["messages"] = ask("Hi");
        let (status, r) = post_raw("/v2/chat/completions", &body.to_string()).await;
        let e = error_of(status, &r, 400);
        assert_eq!(e["type"], "invalid_request_error", "{r}");
        assert_eq!(e["param"], param, "{body} → {r}");
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("exactly one of auto_routing, model, model_family"),
            "{r}"
        );
    }
}

#[tokio::test]
async fn families_held_elsewhere_say_which_are_served() {
    for family in ["openai", "anthropic", "google", "nonsense"] {
        let body = json!({ "model_family": family, "messages": ask("Hi") });
        let (status, r) = post_raw("/v2/chat/completions", &body.to_string()).await;
        let e = error_of(status, &r, 400);
        assert_eq!(e["param"], "model_family");
        let m = e["message"].as_str().unwrap();
        assert!(m.contains(family) && m.contains("open source"), "{m}");
    }
}

#[tokio::test]
async fn unknown_models_are_404_on_both_versions() {
    for path in ["/v1/chat/completions", "/v2/chat/completions"] {
        let body = json!({ "model": "gpt-17", "messages": ask("Hi") });
        let (status, r) = post_raw(path, &body.to_string()).await;
        let e = error_of(status, &r, 404);
        assert_eq!(e["code"], "model_not_found", "{path}: {r}");
    }
}

#[tokio::test]
async fn bad_tradition_lists_the_accepted_values() {
    for path in ["/v1/chat/completions", "/v2/chat/completions"] {
        let body = json!({ "auto_routing": true, "tradition": "orthodox", "messages": ask("Hi") });
        let (status, r) = post_raw(path, &body.to_string()).await;
        let e = error_of(status, &r, 400);
        assert_eq!(e["param"], "tradition");
        let m = e["message"].as_str().unwrap();
        for v in ["evangelical", "catholic", "mainline", "not_faith_specific"] {
            assert!(m.contains(v), "{m}");
        }
    }
}

/// The prompt tokens a request costs tell which system prompt the server built: compare
/// with the same conversation rendered and counted here.
async fn prompt_tokens(path: &str, extra: Value, messages: Value) -> u64 {
    let mut body = json!({ "model": TIER_1, "messages": messages, "max_tokens": 1 });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, r) = post_raw(path, &body.to_string()).await;
    assert_eq!(status, 200, "{r}");
    r["usage"]["prompt_tokens"].as_u64().unwrap()
}

#[tokio::test]
async fn each_tradition_is_echoed_and_shapes_the_prompt() {
    use wick::routing::tradition::apply_layer;
    use wick::routing::{Tradition, TraditionLayers};
    use wick::template::ChatMessage;

    let layers = TraditionLayers::builtin();
    let path = common::model_file("SmolLM2-135M-Instruct.Q4_1.gguf");
    let mut f = std::fs::File::open(path).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
    let tok = wick::tokenizer::Tokenizer::from_gguf(&content).unwrap();
    let source = content.metadata["tokenizer.chat_template"]
        .to_string()
        .unwrap();
    let template = wick::template::ChatTemplate::new(source, None, None).unwrap();
    let own_system = "Answer in one sentence.";
    let expected = |tradition: Option<Tradition>, v2: bool| {
        let mut m = vec![
            ChatMessage::new("system", own_system),
            ChatMessage::new("user", "What is baptism?"),
        ];
        apply_layer(&mut m, layers.layer(tradition, v2));
        tok.encode(&template.render(&m, None, true).unwrap())
            .unwrap()
            .len() as u64
    };
    let messages = json!([
        { "role": "system", "content": own_system },
        { "role": "user", "content": "What is baptism?" }
    ]);
    let mut seen = Vec::new();
    for name in ["evangelical", "catholic", "mainline", "not_faith_specific"] {
        let t = Tradition::parse(name).unwrap();
        for (path, v2) in [
            ("/v2/chat/completions", true),
            ("/v1/chat/completions", false),
        ] {
            let got = prompt_tokens(path, json!({ "tradition": name }), messages.clone()).await;
            assert_eq!(got, expected(Some(t), v2), "{name} on {path}");
            seen.push(got);
        }
        let r = v2(json!({
            "model": TIER_1, "tradition": name, "messages": messages.clone(), "max_tokens": 1
        }))
        .await;
        assert_eq!(r["tradition"], name, "{r}");
    }
    // Omitted: the general layer on /v2, nothing on /v1.
    let got = prompt_tokens("/v2/chat/completions", json!({}), messages.clone()).await;
    assert_eq!(got, expected(None, true));
    let got = prompt_tokens("/v1/chat/completions", json!({}), messages.clone()).await;
    assert_eq!(got, expected(None, false));
    seen.sort();
    seen.dedup();
    assert!(
        seen.len() >= 3,
        "the layers should differ in length: {seen:?}"
    );
}

#[tokio::test]
async fn every_stream_chunk_carries_the_metadata() {
    let stream = v2_stream(json!({
        "auto_routing": true, "tradition": "mainline", "messages": ask("Say hello."),
        "max_tokens": 6, "stream": true, "stream_options": { "include_usage": true }
    }))
    .await;
    let mut chunks = 0;
    let mut text = String::new();
    let mut usage = false;
    for chunk in stream {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_common_meta(&chunk, "auto_routing");
        assert_analysed(&chunk);
        assert_eq!(chunk["tradition"], "mainline", "{chunk}");
        text.push_str(
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or(""),
        );
        usage |= chunk["usage"]["completion_tokens"].as_u64().is_some();
        chunks += 1;
    }
    assert!(
        chunks >= 3 && usage && !text.is_empty(),
        "{chunks} chunks, text {text:?}"
    );
}

#[tokio::test]
async fn the_ai_prefixes_answer_like_v1_and_v2() {
    let r = complete_at(
        "/ai/v2",
        json!({ "auto_routing": true, "messages": ask("Hi"), "max_tokens": 2 }),
    )
    .await;
    assert_common_meta(&r, "auto_routing");
    let r = complete_at("/ai/v1", json!({ "messages": ask("Hi"), "max_tokens": 2 })).await;
    assert_eq!(r["model"], TIER_1, "the default model: {r}");
    assert!(
        r.get("routing_mechanism").is_none(),
        "/v1 has no routing metadata: {r}"
    );

    // An unchanged OpenAI SDK pointed at the /ai/v1 base works as on /v1.
    use async_openai::types::chat::{
        ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequestArgs,
    };
    let sdk = async_openai::Client::with_config(
        async_openai::config::OpenAIConfig::new()
            .with_api_base(format!("{}/ai/v1", base_url()))
            .with_api_key("not-needed"),
    );
    let request = CreateChatCompletionRequestArgs::default()
        .model(TIER_1)
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content("Hi")
            .build()
            .unwrap()
            .into()])
        .max_tokens(2u32)
        .build()
        .unwrap();
    let typed = sdk
        .chat()
        .create(request)
        .await
        .expect("/ai/v1 via the SDK");
    assert_eq!(typed.model, TIER_1);
}

#[tokio::test]
async fn v1_features_work_with_every_mechanism() {
    // stop, seed, temperature and usage behave as on /v1, whatever chose the model.
    for routing in [
        json!({"auto_routing": true}),
        json!({"model_family": "open source"}),
        json!({"model": TIER_1}),
    ] {
        let mut body = json!({
            "messages": ask("Count from 1 to 10, separated by commas."),
            "max_tokens": 30, "temperature": 0.7, "seed": 7, "stop": ["5"]
        });
        for (k, v) in routing.as_object().unwrap() {
            body[k] = v.clone();
        }
        let a = v2(body.clone()).await;
        let b = v2(body.clone()).await;
        assert_eq!(text_of(&a), text_of(&b), "a seed repeats: {routing}");
        assert!(!text_of(&a).contains('5'), "stop sequence honoured: {a}");
        let u = &a["usage"];
        assert_eq!(
            u["total_tokens"].as_u64(),
            Some(u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap())
        );
    }
}

/// `--router-model` replaces the analyser for auto routing. The model file is written here
/// with hand-set weights (not trained): tier 1 answers short turns (its probability falls
/// with the turn's log length), tier 2 answers at a flat 0.88; nothing was measured above
/// tier 2, so tier 3 reads as tier 2 and is never worth its cost.
#[tokio::test]
async fn a_learned_router_model_decides_auto_routing() {
    use wick::routing::features::{BUCKETS, DENSE, LEN};
    let mut small = vec![0.0f32; LEN];
    small[0] = -1.0; // log_chars
    let model = json!({
        "format": "wick-router-1",
        "dense": DENSE,
        "buckets": BUCKETS,
        "default_quality": 0.9,
        "tiers": [
            {"tier": 1, "weights": small, "bias": 6.0, "platt": [1.0, 0.0]},
            {"tier": 2, "weights": vec![0.0f32; LEN], "bias": 2.0, "platt": [1.0, 0.0]},
        ],
    });
    let path = std::env::temp_dir().join(format!("wick-router-{}.json", std::process::id()));
    std::fs::write(&path, model.to_string()).unwrap();
    let mut args = wick::config::ServeArgs::local_ephemeral();
    args.router_model = Some(path.clone());
    let addr = common::start_server(args);
    let route = |text: String| {
        let body = json!({"auto_routing": true, "messages": ask(&text), "max_tokens": 1});
        async move {
            let r = reqwest::Client::new()
                .post(format!("http://{addr}/v2/chat/completions"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let r: Value = r.json().await.unwrap();
            (
                r["model"].as_str().unwrap().to_string(),
                r["routing_confidence"].as_f64().unwrap(),
            )
        }
    };
    // "Hi": p1 = σ(6 - ln 3) ≈ 0.993.
    let (model, confidence) = route("Hi".into()).await;
    assert_eq!(model, TIER_1);
    assert!((confidence - 0.993).abs() < 0.002, "{confidence}");
    // 1,500 characters: p1 = σ(6 - 7.3) ≈ 0.21 < 0.88 - 0.1.
    let (model, confidence) = route("word ".repeat(300)).await;
    assert_eq!(model, TIER_2);
    assert!((confidence - 0.881).abs() < 0.002, "{confidence}");
    let _ = std::fs::remove_file(path);
}
