//! A server whose one slot and one-place queue are full answers 429 with Retry-After, and
//! serves again once there is room.

mod common;

use serde_json::{json, Value};
use wick::config::ServeArgs;

#[tokio::test]
async fn a_full_queue_answers_429_with_retry_after() {
    let mut args = ServeArgs::local_ephemeral();
    args.parallel = 1;
    args.queue = 1;
    args.ctx_size = Some(1024);
    let base = format!("http://{}", common::start_server(args));
    let http = reqwest::Client::new();
    let long = json!({
        "messages": [{"role": "user", "content": "Write a long story."}],
        "max_tokens": 300, "ignore_eos": true, "stream": true
    });
    // The first takes the slot, the second waits in the queue. The first's role chunk comes
    // when it is queued, so wait for generated text: then it has left the queue for the slot.
    let mut first = http
        .post(format!("{base}/v1/chat/completions"))
        .json(&long)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let mut seen = String::new();
    while !seen.contains("\"content\":\"") || seen.matches("data: ").count() < 2 {
        let piece = first.chunk().await.unwrap().expect("first stream open");
        seen.push_str(&String::from_utf8_lossy(&piece));
    }
    let second = tokio::spawn({
        let (http, base, long) = (http.clone(), base.clone(), long.clone());
        async move {
            http.post(format!("{base}/v1/chat/completions"))
                .json(&long)
                .send()
                .await
                .unwrap()
        }
    });
    // Wait (a bounded while) until the engine reports the first running and the second
    // waiting; then a third has no room.
    let mut queued = false;
    for _ in 0..500 {
        let health: Value = http
            .get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let engine = &health["models"][0]["engine"];
        if engine["running"] == 1 && engine["waiting"] == 1 {
            queued = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(queued, "the second request never queued");
    let third = http
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), 429);
    assert!(third.headers().contains_key("retry-after"));
    let body: Value = third.json().await.unwrap();
    assert_eq!(body["error"]["code"], "queue_full", "{body}");

    // Hanging up frees the slot: the queued request gets it and generates (its first chunk,
    // the role, is sent on acceptance; the next one carries generated text).
    drop(first);
    let mut second = second.await.unwrap();
    assert_eq!(second.status(), 200);
    second.chunk().await.unwrap().expect("role chunk");
    let text = second.chunk().await.unwrap().expect("a generated chunk");
    assert!(String::from_utf8_lossy(&text).contains("\"content\""));
}

/// `n` choices wait in the queue as `n` requests: more than the queue holds is a 400 naming
/// `n` (a 429 would be retried forever); as many as it holds are served together.
#[tokio::test]
async fn n_beyond_the_queue_is_a_client_error() {
    let mut args = ServeArgs::local_ephemeral();
    args.parallel = 1;
    args.queue = 2;
    args.ctx_size = Some(512);
    let base = format!("http://{}", common::start_server(args));
    let http = reqwest::Client::new();
    let ask =
        |n: u32| json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "n": n});
    let too_many = http
        .post(format!("{base}/v1/chat/completions"))
        .json(&ask(3))
        .send()
        .await
        .unwrap();
    assert_eq!(too_many.status(), 400);
    let body: Value = too_many.json().await.unwrap();
    assert_eq!(body["error"]["param"], "n", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--queue"),
        "{body}"
    );
    let fits = http
        .post(format!("{base}/v1/chat/completions"))
        .json(&ask(2))
        .send()
        .await
        .unwrap();
    assert_eq!(fits.status(), 200);
    let body: Value = fits.json().await.unwrap();
    assert_eq!(body["choices"].as_array().unwrap().len(), 2, "{body}");
}
