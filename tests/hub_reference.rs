//! `--model hf:OWNER/REPO[:QUANT]`: the file is found in the repository's listing, downloaded
//! into the Hugging Face cache (`HF_HOME`) from the hub at `HF_ENDPOINT`, and served under its
//! file stem; a hub that cannot be reached gives an error naming the offline fallbacks.
//!
//! The hub here is a small stand-in on a loopback port that answers the two requests hf-hub
//! makes (the repository's file listing, and byte ranges of a file) with the real SmolLM2
//! GGUF. Its own test binary: the hub's address and the cache are process-wide settings.

mod common;

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use wick::config::ServeArgs;

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

struct Hub {
    gguf: Vec<u8>,
}

async fn listing(Path((_owner, _repo, _rev)): Path<(String, String, String)>) -> Response {
    Json(serde_json::json!({
        "sha": SHA,
        "siblings": [
            { "rfilename": "README.md" },
            { "rfilename": FILE },
            { "rfilename": "SmolLM2-135M-Instruct.Q8_0-00001-of-00002.gguf" },
        ],
    }))
    .into_response()
}

/// A byte range of the one file, as the hub's `resolve` answers it.
async fn resolve(
    State(hub): State<Arc<Hub>>,
    Path((_owner, _repo, _rev, file)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if file != FILE {
        return StatusCode::NOT_FOUND.into_response();
    }
    let total = hub.gguf.len();
    let (from, to) = headers
        .get(header::RANGE)
        .and_then(|r| r.to_str().ok())
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)))
        .unwrap_or((0, total - 1));
    let to = to.min(total - 1);
    (
        StatusCode::PARTIAL_CONTENT,
        [
            (header::ETAG.as_str(), format!("\"{SHA}\"")),
            ("x-repo-commit", SHA.to_string()),
            (
                header::CONTENT_RANGE.as_str(),
                format!("bytes {from}-{to}/{total}"),
            ),
        ],
        hub.gguf[from..=to].to_vec(),
    )
        .into_response()
}

fn start_hub(gguf: Vec<u8>) -> std::net::SocketAddr {
    let app = Router::new()
        .route("/api/models/{owner}/{repo}/revision/{rev}", get(listing))
        .route("/{owner}/{repo}/resolve/{rev}/{file}", get(resolve))
        .with_state(Arc::new(Hub { gguf }));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    addr
}

#[tokio::test]
async fn an_hf_reference_is_fetched_into_the_hf_cache_and_served() {
    let gguf = std::fs::read(common::model_file(FILE)).unwrap();
    let hub = start_hub(gguf.clone());
    let home = std::env::temp_dir().join(format!("wick-hf-home-{}", std::process::id()));
    // SAFETY (edition 2021: plain calls): this binary's only test sets them before any
    // thread reads them.
    std::env::set_var("HF_HOME", &home);
    std::env::set_var("HF_ENDPOINT", format!("http://{hub}"));
    std::env::remove_var("HF_TOKEN");

    // The quantization picks the file; split parts are not candidates.
    let mut args = ServeArgs::local_ephemeral();
    args.model = Some("hf:someone/smollm2:q4_1".into());
    args.ctx_size = Some(512);
    let addr = common::start_server(args);
    let models: serde_json::Value = reqwest::get(format!("http://{addr}/v1/models"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = "SmolLM2-135M-Instruct.Q4_1";
    assert!(
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == id),
        "{models}"
    );
    // In the Hugging Face cache's layout, whole.
    let cached = home
        .join("hub/models--someone--smollm2/snapshots")
        .join(SHA)
        .join(FILE);
    assert_eq!(std::fs::read(&cached).unwrap(), gguf);

    let body = serde_json::json!({
        "model": id, "max_tokens": 4, "temperature": 0,
        "messages": [{ "role": "user", "content": "Hi" }]
    });
    let answer = reqwest::Client::new()
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);

    // A quantization the repository lacks names what it has.
    let mut args = ServeArgs::local_ephemeral();
    args.catalog.catalog = Some(common::repo_file("models.toml"));
    args.model = Some("hf:someone/smollm2:Q2_K".into());
    let err = wick::server::Server::bind(&args, &wick::catalog::Silent)
        .await
        .err()
        .expect("no Q2_K file")
        .to_string();
    assert!(
        err.contains("no file matches Q2_K") && err.contains(FILE),
        "{err}"
    );

    // No hub: the error says so and names the offline ways.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = closed.local_addr().unwrap();
    drop(closed);
    std::env::set_var("HF_ENDPOINT", format!("http://{nowhere}"));
    args.model = Some("hf:someone/other-model".into());
    let err = wick::server::Server::bind(&args, &wick::catalog::Silent)
        .await
        .err()
        .expect("no hub")
        .to_string();
    assert!(
        err.contains("did not serve it") && err.contains("--model ./file.gguf"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&home);
}
