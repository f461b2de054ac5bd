//! A server whose one slot and one-place queue are full answers 429 with Retry-After, and
//! serves again once there is room; `n` that could never be queued is a 400; one client
//! cannot starve another (a share of the queue, turns for slots).

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

/// Client A (one API key) floods a one-slot server; client B (another key) asks once. A's
/// backlog may fill only its share of the queue (three of four places: its next is a 429,
/// B still gets in), and B's request runs as soon as the slot frees, not after A's backlog.
#[tokio::test]
async fn one_client_cannot_starve_another() {
    let mut args = ServeArgs::local_ephemeral();
    args.parallel = 1;
    args.queue = 4;
    args.ctx_size = Some(1024);
    args.service.api_keys = vec!["key-a".into(), "key-b".into()];
    let base = format!("http://{}", common::start_server(args));
    let http = reqwest::Client::new();
    let ask = |key: &'static str, max_tokens: u32| {
        let request = http
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(key)
            .json(&json!({
                "messages": [{"role": "user", "content": "Write a story."}],
                "max_tokens": max_tokens, "ignore_eos": true,
            }));
        async move {
            let r = request.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let waiting = || {
        let http = http.clone();
        let url = format!("{base}/health");
        async move {
            let health: Value = http.get(url).send().await.unwrap().json().await.unwrap();
            let engine = &health["models"][0]["engine"];
            (
                engine["running"].as_u64().unwrap(),
                engine["waiting"].as_u64().unwrap(),
            )
        }
    };
    // A: one running, three waiting (its share), each long enough to hold the slot.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..4 {
        let (request, done) = (ask("key-a", 48), done_tx.clone());
        tokio::spawn(async move {
            let (status, text) = request.await;
            assert_eq!(status, 200, "{text}");
            done.send(format!("a{i}")).unwrap();
        });
        // One at a time, so A's first is the one running.
        while waiting().await.0 + waiting().await.1 < i + 1 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    assert_eq!(waiting().await, (1, 3));
    let (status, text) = ask("key-a", 4).await;
    assert_eq!(status, 429, "A past its share: {text}");
    // B gets the last place, and the next turn.
    let b = tokio::spawn(ask("key-b", 4));
    let (status, text) = b.await.unwrap();
    assert_eq!(status, 200, "{text}");
    done_tx.send("b".into()).unwrap();
    let mut order = Vec::new();
    while order.len() < 5 {
        order.push(done_rx.recv().await.unwrap());
    }
    let b_at = order.iter().position(|o| o == "b").unwrap();
    assert!(
        b_at <= 1,
        "B waited behind A's backlog (finish order {order:?})"
    );
}
