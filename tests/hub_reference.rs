//! `--model hf:OWNER/REPO[:QUANT]`: the file is found in the repository's listing, downloaded
//! into the Hugging Face cache (`HF_HOME`) from the hub at `HF_ENDPOINT`, and served under its
//! file stem; a hub that cannot be reached gives an error naming the offline fallbacks.
//!
//! The hub here is a small stand-in on a loopback port that answers the two requests hf-hub
//! makes (the repository's file listing, and byte ranges of a file) with the real SmolLM2
//! GGUF and a split GGUF in three parts (tests/fixtures/random-qwen3-split, random weights,
//! written by llama.cpp's gguf-split). Its own test binary: the hub's address and the cache are process-wide settings.

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

/// The split model as the hub lists it: a quantization in its name, as real repos name them.
const SPLIT_PREFIX: &str = "qwen3-random-Q8_0";
const SPLIT_PARTS: u32 = 3;

struct Hub {
    /// Each file the hub serves, by name.
    files: std::collections::HashMap<String, Vec<u8>>,
}

impl Hub {
    fn new(gguf: Vec<u8>) -> Self {
        let mut files = std::collections::HashMap::from([(FILE.to_string(), gguf)]);
        for k in 1..=SPLIT_PARTS {
            let part = format!("-{k:05}-of-{SPLIT_PARTS:05}.gguf");
            let fixture = format!("tests/fixtures/random-qwen3-split/random-qwen3{part}");
            let bytes = std::fs::read(common::repo_file(&fixture)).unwrap();
            files.insert(format!("{SPLIT_PREFIX}{part}"), bytes);
        }
        Self { files }
    }
}

async fn listing(Path((_owner, _repo, _rev)): Path<(String, String, String)>) -> Response {
    Json(serde_json::json!({
        "sha": SHA,
        "siblings": [
            { "rfilename": "README.md" },
            { "rfilename": FILE },
            { "rfilename": format!("{SPLIT_PREFIX}-00001-of-00003.gguf") },
            { "rfilename": format!("{SPLIT_PREFIX}-00002-of-00003.gguf") },
            { "rfilename": format!("{SPLIT_PREFIX}-00003-of-00003.gguf") },
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
    let Some(bytes) = hub.files.get(&file) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let total = bytes.len();
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
            // hf-hub names a cached blob by its ETag: one per file, as the real hub's.
            (header::ETAG.as_str(), format!("\"{}\"", etag(&file))),
            ("x-repo-commit", SHA.to_string()),
            (
                header::CONTENT_RANGE.as_str(),
                format!("bytes {from}-{to}/{total}"),
            ),
        ],
        bytes[from..=to].to_vec(),
    )
        .into_response()
}

fn etag(file: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    file.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

fn start_hub(hub: Hub) -> std::net::SocketAddr {
    let app = Router::new()
        .route("/api/models/{owner}/{repo}/revision/{rev}", get(listing))
        .route("/{owner}/{repo}/resolve/{rev}/{file}", get(resolve))
        .with_state(Arc::new(hub));
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

/// The server lists `id` in /v1/models and answers a chat request for it.
async fn assert_serves(addr: std::net::SocketAddr, id: &str) {
    let models: serde_json::Value = reqwest::get(format!("http://{addr}/v1/models"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == id),
        "{models}"
    );
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
}

#[tokio::test]
async fn an_hf_reference_is_fetched_into_the_hf_cache_and_served() {
    let gguf = std::fs::read(common::model_file(FILE)).unwrap();
    let hub = start_hub(Hub::new(gguf.clone()));
    let home = std::env::temp_dir().join(format!("wick-hf-home-{}", std::process::id()));
    // SAFETY (edition 2021: plain calls): this binary's only test sets them before any
    // thread reads them.
    std::env::set_var("HF_HOME", &home);
    std::env::set_var("HF_ENDPOINT", format!("http://{hub}"));
    std::env::remove_var("HF_TOKEN");

    // The quantization picks the file.
    let mut args = ServeArgs::local_ephemeral();
    args.model = Some("hf:someone/smollm2:q4_1".into());
    args.ctx_size = Some(512);
    let addr = common::start_server(args);
    let id = "SmolLM2-135M-Instruct.Q4_1";
    assert_serves(addr, id).await;
    // In the Hugging Face cache's layout, whole.
    let cached = home
        .join("hub/models--someone--smollm2/snapshots")
        .join(SHA)
        .join(FILE);
    assert_eq!(std::fs::read(&cached).unwrap(), gguf);

    // A split model is picked by its first part; all parts land in the cache, side by side,
    // and it is served under the name they share.
    let mut args = ServeArgs::local_ephemeral();
    args.model = Some("hf:someone/smollm2:Q8_0".into());
    args.ctx_size = Some(128);
    let split_addr = common::start_server(args);
    assert_serves(split_addr, SPLIT_PREFIX).await;
    for k in 1..=SPLIT_PARTS {
        let part = home
            .join("hub/models--someone--smollm2/snapshots")
            .join(SHA)
            .join(format!("{SPLIT_PREFIX}-{k:05}-of-{SPLIT_PARTS:05}.gguf"));
        assert!(part.is_file(), "{part:?}");
    }

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
        err.contains("no file matches Q2_K")
            && err.contains(FILE)
            && err.contains(&format!("{SPLIT_PREFIX}-00001-of-00003.gguf"))
            && !err.contains("-00002-of-"),
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
