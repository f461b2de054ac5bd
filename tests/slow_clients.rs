//! Slow and half-open clients cannot hold the server's connections: an unfinished request
//! head is closed after `--header-timeout`, an idle keep-alive connection after
//! `--idle-timeout`, a stalled request body is answered 408, and at `--max-connections` a
//! new client takes the place of the connection that has waited longest on its client.
//! A request being answered is never cut, however long its stream pauses.

mod common;

use std::time::{Duration, Instant};

use async_openai::types::chat::{
    ChatCompletionRequestUserMessage, CreateChatCompletionRequestArgs,
};
use common::assert_openai_error;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wick::config::ServeArgs;

const PARTIAL_HEAD: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n";

fn args(header_timeout: f64, idle_timeout: f64) -> ServeArgs {
    let mut args = ServeArgs::local_ephemeral();
    args.ctx_size = Some(1024);
    args.parallel = 2;
    args.service.header_timeout = header_timeout;
    args.service.idle_timeout = idle_timeout;
    args
}

/// Wait (at most `limit`) for the server to close `stream`, reading and discarding what
/// it sends; the time it took, or `None` if it was still open.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((start + limit).into(), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

/// One HTTP/1.1 response read off `stream` (with a content-length body): status and body.
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .expect("a content-length");
            if raw.len() >= end + 4 + length {
                let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                let body = String::from_utf8_lossy(&raw[end + 4..end + 4 + length]).to_string();
                return (status, body);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("the response came")
            .unwrap();
        assert!(
            n > 0,
            "closed mid-response: {}",
            String::from_utf8_lossy(&raw)
        );
        raw.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn an_unfinished_request_head_is_closed_after_the_header_timeout() {
    let addr = common::start_server(args(1.0, 60.0));
    let mut partial = TcpStream::connect(addr).await.unwrap();
    partial.write_all(PARTIAL_HEAD).await.unwrap();
    // A connection that never sends a byte gets the same time.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let waited = closed_within(&mut partial, Duration::from_secs(6))
        .await
        .expect("the unfinished head was never closed");
    assert!(
        waited >= Duration::from_millis(800),
        "closed early: {waited:?}"
    );
    closed_within(&mut silent, Duration::from_secs(3))
        .await
        .expect("the silent connection was never closed");
    // The server still answers whoever sends a whole request.
    let health = reqwest::get(format!("http://{addr}/health")).await.unwrap();
    assert_eq!(health.status(), 200);
}

/// A streamed request behind a slot that is busy for longer than both timeouts: it has
/// nothing to send for that long, and still runs to its end.
#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout_a_quiet_stream_is_not() {
    let mut args = args(1.0, 1.5);
    args.parallel = 1;
    let addr = common::start_server(args);
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    let stream = |max_tokens: u32| {
        http.post(format!("{base}/v1/chat/completions"))
            .json(&json!({
                "messages": [{"role": "user", "content": "Write a long story."}],
                "max_tokens": max_tokens, "ignore_eos": true, "stream": true,
            }))
            .send()
    };
    // The first holds the one slot for a while (its first bytes say it started), the
    // second waits behind it with nothing to send.
    let mut first = stream(200).await.unwrap();
    assert_eq!(first.status(), 200);
    first.chunk().await.unwrap().expect("first chunk");
    let start = Instant::now();
    let second = tokio::spawn(stream(8));

    // Meanwhile: one whole request on a keep-alive connection, then silence.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (status, _) = read_response(&mut idle).await;
    assert_eq!(status, 200);
    let waited = closed_within(&mut idle, Duration::from_secs(8))
        .await
        .expect("the idle keep-alive connection was never closed");
    assert!(
        waited >= Duration::from_millis(1200),
        "closed early: {waited:?}"
    );

    // Read the first one slowly, pausing longer than both timeouts.
    let mut first_text = String::new();
    while let Some(piece) = first.chunk().await.expect("the first stream was cut") {
        first_text.push_str(&String::from_utf8_lossy(&piece));
        if first_text.len() < 2000 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(first_text.contains("data: [DONE]"), "{first_text}");
    let second = second.await.unwrap().unwrap();
    assert_eq!(second.status(), 200);
    let second_text = second.text().await.expect("the queued stream was cut");
    assert!(second_text.contains("data: [DONE]"), "{second_text}");
    assert!(
        start.elapsed() > Duration::from_millis(1500),
        "the queued stream never waited longer than the timeouts ({:?}); make the first longer",
        start.elapsed()
    );
}

/// With every place held by half-open connections (and more arriving), a real client is
/// still served at once: the longest-waiting half-open connection gives up its place,
/// long before any timeout.
#[tokio::test]
async fn half_open_connections_cannot_hold_the_connection_cap() {
    let mut args = args(60.0, 60.0);
    args.service.max_connections = 32;
    let addr = common::start_server(args);
    let mut held = Vec::new();
    for _ in 0..40 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(PARTIAL_HEAD).await.unwrap();
        held.push(s);
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let attacker = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut more = Vec::new();
            while !stop.is_cancelled() {
                if let Ok(mut s) = TcpStream::connect(addr).await {
                    let _ = s.write_all(PARTIAL_HEAD).await;
                    more.push(s);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            more.len()
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let start = Instant::now();
    let health = tokio::time::timeout(
        Duration::from_secs(5),
        reqwest::get(format!("http://{addr}/health")),
    )
    .await
    .expect("GET /health waited")
    .unwrap();
    assert_eq!(health.status(), 200);
    let request = CreateChatCompletionRequestArgs::default()
        .messages([ChatCompletionRequestUserMessage::from("Hi").into()])
        .max_completion_tokens(4u32)
        .build()
        .unwrap();
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        common::client_for(addr).chat().create(request),
    )
    .await
    .expect("the chat completion waited")
    .expect("the chat completion is served");
    assert_eq!(answer.choices.len(), 1);
    assert!(start.elapsed() < Duration::from_secs(5));

    stop.cancel();
    let opened = attacker.await.unwrap();
    assert!(opened > 0);
    // The first half-open connections were the ones that gave their places up.
    let mut first = held.swap_remove(0);
    closed_within(&mut first, Duration::from_secs(1))
        .await
        .expect("the oldest half-open connection is still open");
    drop(held);

    // The gauge counts what is open: once the clients have gone, only the scrape itself.
    let mut open = f64::NAN;
    for _ in 0..100 {
        let text = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        open = wick::metrics::metric_sum(&text, "wick_open_connections").unwrap();
        if open == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(open, 1.0, "wick_open_connections");
}

#[tokio::test]
async fn a_stalled_request_body_is_answered_408() {
    let addr = common::start_server(args(1.0, 60.0));
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\
              content-type: application/json\r\ncontent-length: 100\r\n\r\n{\"messa",
        )
        .await
        .unwrap();
    let start = Instant::now();
    let (status, body) = read_response(&mut stream).await;
    assert_eq!(status, 408, "{body}");
    assert!(start.elapsed() >= Duration::from_millis(800));
    assert_openai_error(&serde_json::from_str(&body).unwrap(), "request_timeout");
    closed_within(&mut stream, Duration::from_secs(2))
        .await
        .expect("the connection is closed after the 408");
}

/// HTTP/2 without TLS (prior knowledge) is served as before, and its connection, idle
/// after the answer, is closed after the idle timeout (its pings and window updates are
/// not taken for a new request).
#[tokio::test]
async fn http2_is_served_and_its_idle_connection_closed() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let addr = common::start_server(args(1.0, 2.0));
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let request = hyper::Request::get(format!("http://{addr}/health"))
        .body(axum::body::Body::empty())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    drop(response);
    let answered = Instant::now();
    tokio::time::timeout(Duration::from_secs(8), connection)
        .await
        .expect("the idle HTTP/2 connection was never closed")
        .unwrap()
        .ok();
    let waited = answered.elapsed();
    assert!(
        waited >= Duration::from_millis(1700),
        "closed early: {waited:?}"
    );
    drop(sender);
}
