//! Faults inside the server, injected through the test-only hook (src/faults.rs) into real
//! servers of each test's own: a panic in a handler, in one sequence's sampling, in the
//! scheduler's admission bookkeeping, or in a kernel pool task fails only the requests it
//! touched, with an OpenAI-shaped error (the error chunk mid-stream), /health and /metrics
//! say so, and the same engine serves the next requests with its KV memory given back.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_openai::types::chat::{
    ChatCompletionRequestUserMessage, CreateChatCompletionRequestArgs,
};
use serde_json::{json, Value};
use wick::config::ServeArgs;
use wick::faults::{FaultPoint, Faults};

/// A server with one KV slot (so a slot that leaked would stall every later request) and
/// the fault hook.
fn faulty_server(parallel: usize) -> (SocketAddr, Arc<Faults>) {
    let faults = Faults::new();
    let mut args = ServeArgs::local_ephemeral();
    args.ctx_size = Some(1024);
    args.parallel = parallel;
    args.faults = Some(faults.clone());
    (common::start_server(args), faults)
}

fn hello(stream: bool) -> Value {
    json!({
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 8, "temperature": 0, "stream": stream,
    })
}

async fn post(addr: SocketAddr, body: &Value) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .expect("the connection holds");
    (r.status().as_u16(), r.text().await.expect("a whole body"))
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// A normal request through the official client answers, within a minute (a leaked slot or
/// a dead kernel thread would hang it).
async fn still_serves(addr: SocketAddr) {
    let request = CreateChatCompletionRequestArgs::default()
        .messages([ChatCompletionRequestUserMessage::from("Say hello.").into()])
        .max_completion_tokens(8u32)
        .build()
        .unwrap();
    let client = common::client_for(addr);
    let answer = tokio::time::timeout(Duration::from_secs(60), client.chat().create(request))
        .await
        .expect("the engine answers after the fault")
        .expect("a normal answer");
    assert!(answer.choices[0].message.content.is_some());
}

fn assert_internal_error(body: &Value) {
    let error = &body["error"];
    assert_eq!(error["type"], "server_error", "{body}");
    assert_eq!(error["code"], "internal_error", "{body}");
    assert!(error.get("param").is_some(), "{body}");
}

/// /health's model entry, after a caught engine fault: `degraded`, still 200, the fault
/// counted; and /metrics counts it.
async fn health_says_degraded(addr: SocketAddr, faults: usize) {
    let (status, text) = get(addr, "/health").await;
    let health: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "degraded", "{health}");
    let model = &health["models"][0];
    assert_eq!(model["state"], "degraded", "{health}");
    assert_eq!(model["engine"]["faults"], faults, "{health}");
    assert!(model["engine"]["last_fault"]
        .as_str()
        .unwrap()
        .contains("injected fault"));
    let (_, metrics) = get(addr, "/metrics").await;
    let counted = metrics
        .lines()
        .find(|l| l.starts_with("wick_engine_faults_total{") && l.contains("smollm2"))
        .unwrap_or_else(|| panic!("no fault counter in:\n{metrics}"));
    assert!(counted.ends_with(&format!(" {faults}")), "{counted}");
}

/// KV memory is all given back: nothing running, no tokens held.
async fn kv_is_free(addr: SocketAddr) {
    let (_, text) = get(addr, "/health").await;
    let health: Value = serde_json::from_str(&text).unwrap();
    let engine = &health["models"][0]["engine"];
    assert_eq!(engine["running"], 0, "{health}");
    assert_eq!(engine["kv_tokens"], 0, "{health}");
}

#[tokio::test]
async fn a_handler_panic_answers_500_in_openais_shape() {
    let (addr, faults) = faulty_server(1);
    faults.arm(FaultPoint::Handler, 1);
    let (status, text) = post(addr, &hello(false)).await;
    assert_eq!(status, 500, "{text}");
    assert_internal_error(&serde_json::from_str(&text).unwrap());
    // The /metrics request counter saw the 500 too.
    let (_, metrics) = get(addr, "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("wick_http_requests_total{")
                && l.contains("route=\"/v1/chat/completions\"")
                && l.contains("status=\"500\"")),
        "{metrics}"
    );
    still_serves(addr).await;
}

#[tokio::test]
async fn a_panic_while_one_sequence_samples_fails_that_request_alone() {
    let (addr, faults) = faulty_server(2);
    // One of two concurrent requests meets the fault; the other finishes normally.
    faults.arm(FaultPoint::Sampling, 1);
    let body = hello(false);
    let (a, b) = tokio::join!(post(addr, &body), post(addr, &body));
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 500], "{a:?} {b:?}");
    let failed = if a.0 == 500 { &a.1 } else { &b.1 };
    let failed: Value = serde_json::from_str(failed).unwrap();
    assert_internal_error(&failed);
    assert!(failed["error"]["message"]
        .as_str()
        .unwrap()
        .contains("internal error in the engine"));
    health_says_degraded(addr, 1).await;
    kv_is_free(addr).await;
    still_serves(addr).await;
}

#[tokio::test]
async fn a_panic_mid_stream_ends_that_stream_with_the_error_chunk() {
    let (addr, faults) = faulty_server(1);
    faults.arm(FaultPoint::Sampling, 1);
    let (status, text) = post(addr, &hello(true)).await;
    assert_eq!(status, 200, "the stream had started: {text}");
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{text}");
    let last: Value = serde_json::from_str(data[data.len() - 2]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "error", "{text}");
    assert_internal_error(&last);
    health_says_degraded(addr, 1).await;
    still_serves(addr).await;
}

#[tokio::test]
async fn a_panic_in_admission_fails_its_request_and_gives_the_kv_slot_back() {
    // One slot: had the fault leaked it, every later request would wait forever.
    let (addr, faults) = faulty_server(1);
    faults.arm(FaultPoint::Admission, 1);
    let (status, text) = post(addr, &hello(false)).await;
    assert_eq!(status, 500, "{text}");
    assert_internal_error(&serde_json::from_str(&text).unwrap());
    health_says_degraded(addr, 1).await;
    kv_is_free(addr).await;
    for _ in 0..3 {
        still_serves(addr).await;
    }
}

#[tokio::test]
async fn a_panicking_kernel_pool_task_fails_the_step_and_the_pool_goes_on() {
    let (addr, faults) = faulty_server(1);
    faults.arm(FaultPoint::KernelTask, 1);
    let (status, text) = tokio::time::timeout(Duration::from_secs(60), post(addr, &hello(false)))
        .await
        .expect("the step's caller is not left hanging");
    assert_eq!(status, 500, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_internal_error(&body);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("model step panicked"));
    health_says_degraded(addr, 1).await;
    // The pool's threads survived: the next forward passes (which use them) complete.
    still_serves(addr).await;
}

/// Heavy request work (template, tokenizing, grammar: made to take 3 s each through the
/// hook) runs on blocking threads a few at a time: while six such requests are in it, the
/// server still answers others at once, and no more than the bound run together.
#[tokio::test]
async fn heavy_request_work_never_holds_the_async_threads() {
    let (addr, faults) = faulty_server(2);
    faults.make_work_heavy(Duration::from_secs(3));
    let heavy: Vec<_> = (0..6)
        .map(|_| tokio::spawn(async move { post(addr, &hello(false)).await }))
        .collect();
    // Let them all reach their work.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, text) = get(addr, "/health").await;
    assert_eq!(status, 200, "{text}");
    assert!(
        heavy.iter().all(|h| !h.is_finished()),
        "/health waited for a heavy request to finish"
    );
    for h in heavy {
        let (status, text) = h.await.unwrap();
        assert_eq!(status, 200, "{text}");
    }
    let bound = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2);
    let peak = faults.heavy_work_peak();
    assert!(
        (1..=bound).contains(&peak),
        "{peak} ran at once, bound {bound}"
    );
}
