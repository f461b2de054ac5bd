//! Models load on first use and are unloaded least-recently-used under `--max-loaded-models`
//! and `--memory-budget`; a model being loaded does not hold up requests to a loaded one.

mod common;

use std::net::SocketAddr;

use serde_json::{json, Value};
use wick::config::ServeArgs;

const TIER_1: &str = "smollm2-135m-instruct";
const TIER_2: &str = "qwen2.5-coder-0.5b-instruct";
const TIER_3: &str = "qwen2.5-coder-1.5b-instruct";

fn server(configure: impl FnOnce(&mut ServeArgs)) -> SocketAddr {
    let mut args = ServeArgs::local_ephemeral();
    args.ctx_size = Some(1024);
    args.parallel = 2;
    configure(&mut args);
    common::start_server(args)
}

/// A two-token chat with `model`: its status and JSON body.
async fn try_chat(addr: SocketAddr, model: &str) -> (u16, Value) {
    let body = json!({
        "model": model, "max_tokens": 2, "temperature": 0,
        "messages": [{ "role": "user", "content": "Hi" }]
    });
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .expect("request sent");
    (r.status().as_u16(), r.json().await.expect("JSON"))
}

async fn chat(addr: SocketAddr, model: &str) -> Value {
    let (status, body) = try_chat(addr, model).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The /v1/models listing.
async fn models(addr: SocketAddr) -> Value {
    reqwest::get(format!("http://{addr}/v1/models"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The ids /v1/models reports as loaded, in catalog order.
async fn loaded(addr: SocketAddr) -> Vec<String> {
    models(addr).await["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["loaded"] == true)
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn least_recently_used_model_is_unloaded_and_loading_does_not_block_others() {
    let addr = server(|a| a.max_loaded_models = 2);
    assert_eq!(
        loaded(addr).await,
        [TIER_1],
        "the default model loads at start"
    );

    // The 1.5B model takes seconds to load and prefill; the loaded model answers meanwhile.
    let big = tokio::spawn(chat(addr, TIER_3));
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let small = chat(addr, TIER_1).await;
    assert_eq!(small["model"], TIER_1);
    assert!(
        !big.is_finished(),
        "the small model's answer waited for the large model to load"
    );
    assert_eq!(big.await.unwrap()["model"], TIER_3);
    assert_eq!(loaded(addr).await, [TIER_1, TIER_3]);

    // A third model: the least recently used (tier 1, used before tier 3 finished) goes.
    chat(addr, TIER_2).await;
    assert_eq!(loaded(addr).await, [TIER_2, TIER_3]);
    chat(addr, TIER_2).await;
    chat(addr, TIER_1).await;
    assert_eq!(loaded(addr).await, [TIER_1, TIER_2]);
}

#[tokio::test]
async fn a_memory_budget_unloads_what_does_not_fit() {
    // 550 MiB holds either model alone (SmolLM2 about 100 MiB of weights, Qwen2.5-Coder-0.5B
    // about 480 MiB, each with a few MiB of KV cache at 1024 tokens × 2 slots), never both.
    let addr = server(|a| a.memory_budget = Some(bytesize::ByteSize::mib(550)));
    assert_eq!(loaded(addr).await, [TIER_1]);
    assert_eq!(chat(addr, TIER_2).await["model"], TIER_2);
    assert_eq!(loaded(addr).await, [TIER_2]);
    assert_eq!(chat(addr, TIER_1).await["model"], TIER_1);
    assert_eq!(loaded(addr).await, [TIER_1]);
}

#[tokio::test]
async fn a_model_larger_than_the_whole_budget_is_refused_and_the_others_still_answer() {
    let addr = server(|a| a.memory_budget = Some(bytesize::ByteSize::mib(200)));
    let (status, error) = try_chat(addr, TIER_2).await;
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(status >= 500, "status {status}: {error}");
    assert!(message.contains("more than --memory-budget"), "{error}");
    assert_eq!(chat(addr, TIER_1).await["model"], TIER_1);
}

#[tokio::test]
async fn models_list_shows_family_tier_and_state() {
    let addr = server(|_| {});
    let list = models(addr).await;
    let data = list["data"].as_array().unwrap();
    let ids: Vec<&str> = data.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [TIER_1, TIER_2, TIER_3, "all-minilm-l6-v2"]);
    for (m, tier) in data.iter().zip(["tier_1", "tier_2", "tier_3"]) {
        assert_eq!(m["tier"], tier, "{m}");
        assert_eq!(m["family"], "open source", "{m}");
        assert_eq!(m["loaded"], m["id"] == TIER_1, "{m}");
        assert_eq!(m["context_length"], 1024, "capped by --ctx-size: {m}");
        assert!(m.get("embedding").is_none(), "a chat model: {m}");
    }
    // The embedding model says so, and keeps its own shorter context.
    let embedding = &data[3];
    assert_eq!(embedding["embedding"], true, "{embedding}");
    assert_eq!(embedding["context_length"], 512, "{embedding}");
    assert_eq!(embedding["loaded"], false, "{embedding}");
}
