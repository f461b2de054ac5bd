//! wick as a gateway (issue 19): catalog models served by upstream OpenAI-compatible
//! servers, behind the same /v1 and /v2 contract as local ones.
//!
//! Real servers on loopback, shared by every test of this file (started once):
//! - two `wick serve` processes with the default model, the upstream engines ("A" stays up,
//!   "B" is killed mid-stream by one test);
//! - a fake upstream, labelled so: a tiny axum server that answers one fixed OpenAI stream
//!   and records what wick sent it (headers, body), to check what crosses the hop;
//! - the front door: wick in this process, with a catalog naming them as upstreams, a dead
//!   port as one replica of a replicated model, and a model with no live replica at all.
//!
//! No assertion is about speed.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_openai::types::chat::CreateChatCompletionRequest;
use futures::StreamExt;
use serde_json::{json, Value};
use wick::config::ServeArgs;

const LOCAL: &str = "smollm2-135m-instruct";
/// What the fake upstream's key environment variable holds: it must never come back.
const UPSTREAM_KEY: &str = "sk-gw-test-7f3a9c1e5d";
const KEY_ENV: &str = "WICK_GATEWAY_TEST_UPSTREAM_KEY";
/// The id the fake upstream puts on its chunks: the client must see wick's own instead.
const FAKE_ID: &str = "chatcmpl-fake-upstream-id";

struct Setup {
    front: SocketAddr,
    /// `wick serve` B, killed by the mid-stream test.
    b: Mutex<Option<Child>>,
    dead: String,
    /// Headers and bodies the fake upstream received.
    seen: Arc<Mutex<Vec<(axum::http::HeaderMap, Value)>>>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `wick serve` process with the default model on a free port, ready (its /health 200).
// Neither process is waited for here: the caller holds the server (one test kills and waits
// for it), and the watchdog outlives this binary on purpose, to end the server after it.
#[allow(clippy::zombie_processes)]
fn spawn_wick() -> (Child, u16) {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_wick"))
        .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--ctx-size", "2048", "--threads", "1", "--parallel", "4"])
        .arg("--catalog")
        .arg(common::repo_file("models.toml"))
        .env("WICK_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("wick serve starts");
    // The test harness never drops statics, so a watchdog ends the process once this test
    // binary has gone, however it ends.
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "while kill -0 {} 2>/dev/null; do sleep 1; done; kill -9 {} 2>/dev/null",
            std::process::id(),
            child.id()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the watchdog starts");
    let started = Instant::now();
    let url = format!("http://127.0.0.1:{port}/health");
    loop {
        let ok = std::thread::spawn({
            let url = url.clone();
            move || {
                let rt = tokio::runtime::Runtime::new().unwrap();
                rt.block_on(async {
                    reqwest::get(&url)
                        .await
                        .is_ok_and(|r| r.status().is_success())
                })
            }
        })
        .join()
        .unwrap();
        if ok {
            return (child, port);
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "upstream wick on port {port} never became healthy"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The fake upstream (not a real engine): `GET /v1/models` answers 200; `POST
/// /v1/chat/completions` records the request and answers a fixed stream ("echo"), or, when
/// the last message says so, refuses with 401 quoting the key as OpenAI's refusal does, or
/// fails with a 500 whose body holds the key.
fn spawn_fake_upstream(seen: Arc<Mutex<Vec<(axum::http::HeaderMap, Value)>>>) -> u16 {
    use axum::response::IntoResponse;
    let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = std_listener.local_addr().unwrap().port();
    std_listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let chat = move |headers: axum::http::HeaderMap, axum::Json(body): axum::Json<Value>| {
                let seen = seen.clone();
                async move {
                    let last = body["messages"]
                        .as_array()
                        .and_then(|m| m.last())
                        .map(|m| m["content"].as_str().unwrap_or_default().to_string())
                        .unwrap_or_default();
                    seen.lock().unwrap().push((headers, body));
                    let refusal = |status: u16| {
                        let body = json!({ "error": { "message": format!("Incorrect API key provided: {UPSTREAM_KEY}"), "type": "invalid_request_error" } });
                        (axum::http::StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
                    };
                    match last.as_str() {
                        "refuse-me" => return refusal(401),
                        "fail-me" => return refusal(500),
                        _ => {}
                    }
                    let chunk = |delta: Value, finish: Value| {
                        json!({ "id": FAKE_ID, "object": "chat.completion.chunk", "created": 1, "model": "fake",
                                "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }] })
                    };
                    let events = [
                        chunk(json!({ "role": "assistant", "content": "" }), Value::Null),
                        chunk(json!({ "content": "echo" }), Value::Null),
                        chunk(json!({}), json!("stop")),
                        json!({ "id": FAKE_ID, "object": "chat.completion.chunk", "created": 1, "model": "fake", "choices": [],
                                "usage": { "prompt_tokens": 11, "completion_tokens": 1, "total_tokens": 12 } }),
                    ];
                    let mut text: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
                    text.push_str("data: [DONE]\n\n");
                    ([("content-type", "text/event-stream")], text).into_response()
                }
            };
            let app = axum::Router::new()
                .route("/v1/models", axum::routing::get(|| async { axum::Json(json!({ "object": "list", "data": [] })) }))
                .route("/v1/chat/completions", axum::routing::post(chat));
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    port
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let (a, a_port) = spawn_wick();
        let (b, b_port) = spawn_wick();
        // A stays up for the whole run; its watchdog ends it with the test binary.
        std::mem::forget(a);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let fake_port = spawn_fake_upstream(seen.clone());
        let dead = format!("http://127.0.0.1:{}/v1", free_port());
        let nowhere = format!("http://127.0.0.1:{}/v1", free_port());
        let a_url = format!("http://127.0.0.1:{a_port}/v1");
        let catalog = format!(
            r#"
default = "gpt-test"

[[model]]
id = "{LOCAL}"
family = "open source"
tier = "tier_1"
context_length = 2048
file = "SmolLM2-135M-Instruct.Q4_1.gguf"
[[model.source]]
type = "local"
path = "{smol}"

[[model]]
id = "gpt-test"
family = "openai"
tier = "tier_3"
[model.upstream]
url = "{a_url}"
model = "{LOCAL}"

[[model]]
id = "replicated"
family = "google"
tier = "tier_2"
[model.upstream]
urls = ["{dead}", "{a_url}"]
model = "{LOCAL}"

[[model]]
id = "echo"
family = "anthropic"
tier = "tier_4"
[model.upstream]
url = "http://127.0.0.1:{fake_port}/v1/"
api_key_env = "{KEY_ENV}"

# The same fake upstream, for its refusals: a 500 takes a replica out, which must not
# touch "echo".
[[model]]
id = "echo-refusing"
family = "anthropic"
tier = "tier_4"
[model.upstream]
url = "http://127.0.0.1:{fake_port}/v1"
api_key_env = "{KEY_ENV}"

[[model]]
id = "dies"
family = "anthropic"
tier = "tier_2"
[model.upstream]
url = "http://127.0.0.1:{b_port}/v1"
model = "{LOCAL}"

[[model]]
id = "nowhere"
family = "google"
tier = "tier_4"
[model.upstream]
url = "{nowhere}"
"#,
            smol = common::model_file("SmolLM2-135M-Instruct.Q4_1.gguf").display(),
        );
        let path = std::env::temp_dir().join(format!("wick-gateway-{}.toml", std::process::id()));
        std::fs::write(&path, catalog).unwrap();
        std::env::set_var(KEY_ENV, UPSTREAM_KEY);
        let mut args = ServeArgs::local_ephemeral();
        args.catalog.catalog = Some(path);
        // Long enough that no health check runs during the tests: fail-over is what takes
        // the dead replica out here.
        args.upstream.upstream_health_interval = 600.0;
        args.upstream.upstream_connect_timeout = 2.0;
        let front = common::start_server(args);
        Setup {
            front,
            b: Mutex::new(Some(b)),
            dead,
            seen,
        }
    })
}

fn url(path: &str) -> String {
    format!("http://{}{path}", setup().front)
}

async fn post(path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(url(path))
        .json(&body)
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: not JSON: {text}")),
    )
}

/// The `data:` events of a stream; chat and completions streams must end with `[DONE]`
/// (Responses streams have none).
async fn post_stream(path: &str, body: Value) -> Vec<Value> {
    let response = reqwest::Client::new()
        .post(url(path))
        .json(&body)
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .collect();
    let json = match path {
        "/v1/responses" => &events[..],
        _ => {
            assert_eq!(events.last(), Some(&"[DONE]"), "{text}");
            &events[..events.len() - 1]
        }
    };
    json.iter()
        .map(|e| serde_json::from_str(e).expect("a JSON event"))
        .collect()
}

fn ask(text: &str) -> Value {
    json!([{ "role": "user", "content": text }])
}

async fn get_text(path: &str) -> (u16, String) {
    let r = reqwest::get(url(path)).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn assert_upstream_error(status: u16, body: &Value) {
    assert!([502, 503, 504].contains(&status), "{status}: {body}");
    let e = &body["error"];
    assert_eq!(e["type"], "server_error", "{body}");
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(
        e["code"]
            .as_str()
            .is_some_and(|c| c.starts_with("upstream_")),
        "{body}"
    );
}

#[tokio::test]
async fn v2_family_openai_streams_from_the_upstream_with_metadata_on_every_chunk() {
    let body = json!({
        "model_family": "openai", "messages": ask("Say hello."), "max_tokens": 12,
        "stream": true, "stream_options": { "include_usage": true }, "temperature": 0,
    });
    let chunks = post_stream("/v2/chat/completions", body).await;
    let id = chunks[0]["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("chatcmpl-"), "{id}");
    let mut text = String::new();
    for chunk in &chunks {
        assert_eq!(chunk["id"], id.as_str(), "one id on every chunk: {chunk}");
        assert_eq!(chunk["model"], "gpt-test", "{chunk}");
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
        assert_eq!(chunk["model_family"], "OpenAI", "{chunk}");
        assert_eq!(chunk["provider"], "wick", "{chunk}");
        assert_eq!(chunk["routing_mechanism"], "model_family", "{chunk}");
        assert_eq!(chunk["routing_tier"], "tier_3", "{chunk}");
        assert!(chunk.get("error").is_none(), "{chunk}");
        if let Some(t) = chunk["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
    }
    assert!(!text.trim().is_empty(), "{chunks:?}");
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"].is_string()));
    let usage = &chunks.last().unwrap()["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0, "{usage}");
    assert!(usage["completion_tokens"].as_u64().unwrap() > 0, "{usage}");
}

#[tokio::test]
async fn v2_json_answers_carry_metadata_usage_and_the_catalog_id() {
    let body = json!({
        "model_family": "OpenAI", "messages": ask("Name a colour."), "max_tokens": 8,
        "tradition": "catholic",
    });
    let (status, r) = post("/v2/chat/completions", body).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["object"], "chat.completion");
    assert_eq!(r["model"], "gpt-test");
    assert_eq!(r["model_family"], "OpenAI");
    assert_eq!(r["tradition"], "catholic");
    assert!(r["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(r["usage"]["total_tokens"].as_u64().unwrap() > 0, "{r}");
    assert!(!r["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn the_openai_sdk_reaches_an_upstream_by_its_catalog_id() {
    let client = common::client_for(setup().front);
    let request: CreateChatCompletionRequest = common::sdk_request(json!({
        "model": "gpt-test", "messages": ask("Hi"), "max_completion_tokens": 6,
    }));
    let r = client
        .chat()
        .create(request.clone())
        .await
        .expect("an answer");
    assert_eq!(r.model, "gpt-test");
    assert!(r.usage.unwrap().completion_tokens > 0);
    let mut stream = client
        .chat()
        .create_stream(request)
        .await
        .expect("a stream");
    let mut chunks = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("a chunk");
        assert_eq!(chunk.model, "gpt-test");
        chunks += 1;
    }
    assert!(chunks > 1);
}

#[tokio::test]
async fn completions_and_responses_are_forwarded() {
    let (status, r) = post(
        "/v1/completions",
        json!({ "model": "gpt-test", "prompt": "Once upon a time", "max_tokens": 6 }),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["object"], "text_completion");
    assert_eq!(r["model"], "gpt-test");
    assert!(r["id"].as_str().unwrap().starts_with("cmpl-"));
    assert!(!r["choices"][0]["text"].as_str().unwrap().is_empty(), "{r}");
    assert!(r["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{r}");

    let events = post_stream(
        "/v1/completions",
        json!({ "model": "gpt-test", "prompt": "Once upon a time", "max_tokens": 6, "stream": true }),
    )
    .await;
    assert!(events.iter().all(|e| e["model"] == "gpt-test"));
    let text: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["text"].as_str())
        .collect();
    assert!(!text.is_empty(), "{events:?}");

    let (status, r) = post(
        "/v1/responses",
        json!({ "model": "gpt-test", "input": "Say hi.", "max_output_tokens": 8 }),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["object"], "response");
    assert_eq!(r["model"], "gpt-test");
    assert!(r["id"].as_str().unwrap().starts_with("resp_"));
    assert!(r["usage"]["output_tokens"].as_u64().unwrap() > 0, "{r}");
    let said = r["output"][0]["content"][0]["text"].as_str().unwrap();
    assert!(!said.is_empty(), "{r}");

    let events = post_stream(
        "/v1/responses",
        json!({ "model": "gpt-test", "input": "Say hi.", "max_output_tokens": 8, "stream": true }),
    )
    .await;
    let last = events.last().unwrap();
    assert!(
        ["response.completed", "response.incomplete"].contains(&last["type"].as_str().unwrap()),
        "{last}"
    );
    assert_eq!(last["response"]["model"], "gpt-test");
}

#[tokio::test]
async fn v1_models_lists_upstream_models_beside_local_ones() {
    let (status, r) = post_free_get("/v1/models").await;
    assert_eq!(status, 200);
    let card = |id: &str| {
        r["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| panic!("{id} listed: {r}"))
            .clone()
    };
    let up = card("gpt-test");
    assert_eq!(up["owned_by"], "upstream");
    assert_eq!(up["served_by"], "upstream");
    assert_eq!(up["family"], "openai");
    let local = card(LOCAL);
    assert_eq!(local["owned_by"], "wick");
    assert_eq!(local["served_by"], "local");
}

async fn post_free_get(path: &str) -> (u16, Value) {
    let (status, text) = get_text(path).await;
    (status, serde_json::from_str(&text).unwrap())
}

#[tokio::test]
async fn auto_routing_considers_every_familys_models() {
    let hard = "Prove step by step that the square root of 2 is irrational, then write a \
                Rust function that checks such a proof, and analyse its time complexity in \
                detail with a worked example.";
    let (status, r) = post(
        "/v2/chat/completions",
        json!({ "auto_routing": true, "messages": ask(hard), "max_tokens": 4 }),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["routing_mechanism"], "auto_routing");
    // Only upstream models hold the tiers above tier_1 in this catalog.
    assert_ne!(r["model"], LOCAL, "{r}");
    assert_ne!(r["model_family"], "Open Source", "{r}");
}

#[tokio::test]
async fn a_dead_replica_fails_over_with_no_client_error_and_is_taken_out() {
    for _ in 0..4 {
        let (status, r) = post(
            "/v1/chat/completions",
            json!({ "model": "replicated", "messages": ask("Hi"), "max_tokens": 4 }),
        )
        .await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["model"], "replicated");
    }
    let up = upstream_health("replicated").await;
    let dead = &setup().dead;
    let replica = |u: &str| {
        up["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["url"] == u)
            .cloned()
    };
    assert_eq!(replica(dead).unwrap()["healthy"], false, "{up}");
    assert_eq!(up["state"], "degraded", "{up}");
    let (_, metrics) = get_text("/metrics").await;
    let errors = metrics
        .lines()
        .find(|l| {
            l.starts_with("wick_upstream_errors_total{")
                && l.contains("model=\"replicated\"")
                && l.contains(dead.as_str())
                && l.contains("kind=\"connect\"")
        })
        .unwrap_or_else(|| panic!("no connect error counted for the dead replica:\n{metrics}"));
    assert!(errors.rsplit(' ').next().unwrap().parse::<f64>().unwrap() >= 1.0);
}

#[tokio::test]
async fn a_replica_dropping_mid_stream_ends_with_an_error_chunk_then_the_model_is_unavailable() {
    let response = reqwest::Client::new()
        .post(url("/v2/chat/completions"))
        .json(&json!({
            "model": "dies", "messages": ask("Count to a thousand."), "max_tokens": 1500,
            "ignore_eos": true, "stream": true,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let mut killed = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    while let Some(bytes) = tokio::time::timeout_at(deadline.into(), body.next())
        .await
        .expect("the stream ends")
    {
        text.push_str(&String::from_utf8_lossy(&bytes.expect("bytes")));
        if !killed && text.matches("\"content\"").count() > 4 {
            let mut child = setup().b.lock().unwrap().take().expect("B still running");
            child.kill().unwrap();
            child.wait().unwrap();
            killed = true;
        }
    }
    assert!(killed, "the stream ended before B was killed: {text}");
    let events: Vec<&str> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{text}");
    let last: Value = serde_json::from_str(events[events.len() - 2]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "error", "{last}");
    assert!(
        last["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{last}"
    );
    assert_eq!(last["model"], "dies");
    assert_eq!(last["model_family"], "Anthropic");

    // B is gone: the next request is an OpenAI-shaped error, streamed or not.
    for stream in [false, true] {
        let (status, r) = post(
            "/v2/chat/completions",
            json!({ "model": "dies", "messages": ask("Hi"), "stream": stream }),
        )
        .await;
        assert_upstream_error(status, &r);
    }
}

#[tokio::test]
async fn an_upstream_with_no_live_replica_is_an_openai_shaped_error() {
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({ "model": "nowhere", "messages": ask("Hi") }),
        ),
        (
            "/v1/chat/completions",
            json!({ "model": "nowhere", "messages": ask("Hi"), "stream": true }),
        ),
        (
            "/v1/completions",
            json!({ "model": "nowhere", "prompt": "Hi" }),
        ),
        (
            "/v1/responses",
            json!({ "model": "nowhere", "input": "Hi" }),
        ),
    ] {
        let (status, r) = post(path, body).await;
        assert_upstream_error(status, &r);
    }
    // /health still says the server is fine, and shows the upstream down.
    let nowhere = upstream_health("nowhere").await;
    assert_eq!(nowhere["state"], "down", "{nowhere}");
}

/// `/health` answers 200 whatever the upstreams' state; this is the entry for upstream `id`.
async fn upstream_health(id: &str) -> Value {
    let (status, health) = post_free_get("/health").await;
    assert_eq!(status, 200, "{health}");
    health["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == id)
        .unwrap_or_else(|| panic!("no upstream {id} in {health}"))
        .clone()
}

#[tokio::test]
async fn keys_stay_home_and_the_request_arrives_layered_with_tools_passed_on() {
    let client = reqwest::Client::new();
    let tools = json!([{ "type": "function", "function": { "name": "lookup", "parameters": { "type": "object", "properties": {} } } }]);
    let response = client
        .post(url("/v2/chat/completions"))
        .header("authorization", "Bearer client-own-secret")
        .json(&json!({
            "model": "echo", "messages": ask("What is grace?"), "tradition": "catholic",
            "tools": tools, "response_format": { "type": "text" },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let r: Value = response.json().await.unwrap();
    assert_eq!(r["model"], "echo");
    assert_eq!(r["model_family"], "Anthropic");
    assert_ne!(r["id"], FAKE_ID, "wick gives its own id");
    assert_eq!(r["choices"][0]["message"]["content"], "echo");
    assert_eq!(r["usage"]["total_tokens"], 12);

    let (headers, body) = {
        let seen = setup().seen.lock().unwrap();
        seen.iter()
            .find(|(_, b)| b["messages"].to_string().contains("What is grace?"))
            .cloned()
            .expect("the fake upstream got the request")
    };
    let auth: Vec<_> = headers.get_all("authorization").iter().collect();
    assert_eq!(auth.len(), 1);
    assert_eq!(auth[0], &format!("Bearer {UPSTREAM_KEY}"));
    assert!(!format!("{headers:?}").contains("client-own-secret"));
    // `model` defaults to the catalog id; wick's own fields stay home.
    assert_eq!(body["model"], "echo");
    for field in ["tradition", "model_family", "auto_routing"] {
        assert!(body.get(field).is_none(), "{field} forwarded: {body}");
    }
    assert_eq!(body["stream"], true);
    assert_eq!(body["tools"], tools);
    assert_eq!(body["response_format"], json!({ "type": "text" }));
    // The tradition layer is the system message, before the caller's own messages.
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "system");
    assert!(
        messages[0]["content"].as_str().unwrap().len() > 20,
        "{body}"
    );
    assert_eq!(messages[1]["content"], "What is grace?");

    // Refusals and failures that quote the key: OpenAI-shaped 502s that do not.
    for ask_for in ["refuse-me", "fail-me"] {
        let (status, r) = post(
            "/v1/chat/completions",
            json!({ "model": "echo-refusing", "messages": ask(ask_for) }),
        )
        .await;
        assert_upstream_error(status, &r);
        assert!(!r.to_string().contains(UPSTREAM_KEY), "{r}");
    }
    let (_, metrics) = get_text("/metrics").await;
    assert!(!metrics.contains(UPSTREAM_KEY));
    let (_, health) = get_text("/health").await;
    assert!(!health.contains(UPSTREAM_KEY));
}

#[tokio::test]
async fn metrics_and_health_show_each_upstream() {
    let (status, r) = post(
        "/v1/chat/completions",
        json!({ "model": "gpt-test", "messages": ask("Hi"), "max_tokens": 3 }),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    let (_, metrics) = get_text("/metrics").await;
    for name in [
        "wick_upstream_requests_total",
        "wick_upstream_first_event_seconds",
        "wick_upstream_request_duration_seconds",
        "wick_upstream_replica_healthy",
        "wick_upstream_outstanding_requests",
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(name) && l.contains("model=\"gpt-test\"")),
            "{name} for gpt-test missing:\n{metrics}"
        );
    }
    let up = upstream_health("gpt-test").await;
    assert_eq!(up["state"], "ok", "{up}");
    assert_eq!(up["replicas"][0]["healthy"], true);
}

/// A fake upstream, labelled so, at the socket level: the first request it reads has its
/// connection closed without an answer (as an engine closes a keep-alive connection it
/// considers idle, just as a pooled request goes out on it); every later one gets a fixed
/// one-word stream. Returns its port and how many requests it has read.
fn spawn_closing_upstream() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::atomic::Ordering;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut head = String::new();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            let mut stream = reader.into_inner();
            if head.starts_with("GET ") {
                let text = r#"{"object":"list","data":[]}"#;
                let _ = write!(stream, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}", text.len());
                continue;
            }
            if count.fetch_add(1, Ordering::SeqCst) == 0 {
                continue; // dropped: closed before any answer
            }
            let chunk = json!({ "id": "x", "object": "chat.completion.chunk", "created": 1, "model": "fake",
                                "choices": [{ "index": 0, "delta": { "role": "assistant", "content": "again" }, "finish_reason": "stop" }] });
            let text = format!("data: {chunk}\n\ndata: [DONE]\n\n");
            let _ = write!(stream, "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}", text.len());
        }
    });
    (port, requests)
}

#[tokio::test]
async fn a_connection_closed_before_any_answer_is_sent_again_not_counted_against_the_replica() {
    let (port, requests) = spawn_closing_upstream();
    let catalog = format!(
        r#"
default = "closer"

[[model]]
id = "closer"
family = "openai"
tier = "tier_3"
[model.upstream]
url = "http://127.0.0.1:{port}/v1"
"#
    );
    let path =
        std::env::temp_dir().join(format!("wick-gateway-closer-{}.toml", std::process::id()));
    std::fs::write(&path, catalog).unwrap();
    let mut args = ServeArgs::local_ephemeral();
    args.catalog.catalog = Some(path);
    args.upstream.upstream_health_interval = 600.0;
    let front = common::start_server(args);
    let r: Value = reqwest::Client::new()
        .post(format!("http://{front}/v1/chat/completions"))
        .json(&json!({ "model": "closer", "messages": ask("Hi") }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["choices"][0]["message"]["content"], "again", "{r}");
    assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 2);
    let health: Value = reqwest::get(format!("http://{front}/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["upstreams"][0]["state"], "ok", "{health}");
}
