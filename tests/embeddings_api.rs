//! POST /v1/embeddings against the real server with the catalog's embedding model
//! (all-MiniLM-L6-v2, BERT, built into the model cache on first use by
//! tests/common's `embedding_model_file`): through async-openai (float and base64), with
//! every input shape, against llama.cpp's vectors for the same GGUF
//! (tests/fixtures/llamacpp-embeddings-minilm.json, scripts/embedding-gguf/reference.py),
//! with the official Python SDK and langchain-openai's `OpenAIEmbeddings`, and with the
//! errors a client can cause. The `nomic-bert` architecture is checked on RANDOM WEIGHTS only
//! (tests/common's `random_nomic_bert_file`), against llama.cpp's vectors for that GGUF
//! (tests/fixtures/llamacpp-embeddings-random-nomic-bert.json).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use async_openai::types::embeddings::{CreateEmbeddingRequestArgs, EmbeddingInput, EncodingFormat};
use serde_json::{json, Value};

const MODEL: &str = "all-minilm-l6-v2";
const CHAT_MODEL: &str = "smollm2-135m-instruct";
const WIDTH: usize = 384;
/// The ids all-MiniLM-L6-v2's own tokenizer gives "The cat sat on the mat." (`[CLS]` 101 ...
/// `[SEP]` 102).
const CAT_IDS: [u32; 9] = [101, 1996, 4937, 2938, 2006, 1996, 13523, 1012, 102];
const CAT: &str = "The cat sat on the mat.";

/// A server whose default model is the embedding model.
fn server() -> SocketAddr {
    static SERVER: OnceLock<SocketAddr> = OnceLock::new();
    *SERVER.get_or_init(|| {
        common::embedding_model_file();
        let mut args = wick::config::ServeArgs::local_ephemeral();
        args.model = Some(MODEL.into());
        args.ctx_size = Some(2048);
        common::start_server(args)
    })
}

fn base() -> String {
    format!("http://{}", server())
}

async fn post(path: &str, body: &Value) -> (u16, Value) {
    common::post_status_at(server(), path, body).await
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f32]) -> f32 {
    dot(a, a).sqrt()
}

async fn embed(input: EmbeddingInput) -> Vec<Vec<f32>> {
    common::embed(server(), MODEL, input).await
}

#[tokio::test]
async fn float_and_base64_give_the_same_unit_vectors() {
    let client = common::client_for(server());
    let request = |format: EncodingFormat| {
        CreateEmbeddingRequestArgs::default()
            .model(MODEL)
            .input(CAT)
            .encoding_format(format)
            .build()
            .unwrap()
    };
    let floats = client
        .embeddings()
        .create(request(EncodingFormat::Float))
        .await
        .expect("float embeddings");
    let base64 = client
        .embeddings()
        .create_base64(request(EncodingFormat::Base64))
        .await
        .expect("base64 embeddings");
    assert_eq!(floats.object, "list");
    assert_eq!(floats.model, MODEL);
    assert_eq!(floats.data.len(), 1);
    assert_eq!(floats.data[0].object, "embedding");
    assert_eq!(floats.data[0].index, 0);
    let v = &floats.data[0].embedding;
    assert_eq!(v.len(), WIDTH);
    assert!((norm(v) - 1.0).abs() < 1e-4, "length {}", norm(v));
    let decoded: Vec<f32> = base64.data[0].embedding.clone().into();
    assert_eq!(&decoded, v, "base64 decodes to the float vector");
    // [CLS] + 7 word pieces + [SEP].
    assert_eq!(floats.usage.prompt_tokens, CAT_IDS.len() as u32);
    assert_eq!(floats.usage.total_tokens, CAT_IDS.len() as u32);
    assert_eq!(base64.usage.prompt_tokens, CAT_IDS.len() as u32);
}

#[tokio::test]
async fn a_list_keeps_its_order_and_each_vector_is_its_texts() {
    let texts = [
        "A man is playing a guitar.",
        CAT,
        "The stock market fell sharply on Monday.",
        "A cat is sitting on a rug.",
    ];
    let batch = embed(EmbeddingInput::StringArray(
        texts.iter().map(|t| t.to_string()).collect(),
    ))
    .await;
    assert_eq!(batch.len(), texts.len());
    for (text, batched) in texts.iter().zip(&batch) {
        let alone = embed(EmbeddingInput::String(text.to_string())).await;
        let cos = dot(&alone[0], batched);
        assert!(cos > 0.99999, "{text}: batched vs alone cosine {cos}");
    }
    // The model's meaning shows through: the two cats are nearer each other than either is
    // to the stock market.
    let (cat, market, rug) = (&batch[1], &batch[2], &batch[3]);
    assert!(
        dot(cat, rug) > dot(cat, market) + 0.2,
        "cat·rug {} cat·market {}",
        dot(cat, rug),
        dot(cat, market)
    );
}

#[tokio::test]
async fn token_arrays_embed_as_their_text_does() {
    let text = embed(EmbeddingInput::String(CAT.into())).await;
    let ids = embed(EmbeddingInput::IntegerArray(CAT_IDS.to_vec())).await;
    let many = embed(EmbeddingInput::ArrayOfIntegerArray(vec![
        CAT_IDS[..4].to_vec(),
        CAT_IDS.to_vec(),
    ]))
    .await;
    assert!(dot(&text[0], &ids[0]) > 0.99999);
    assert_eq!(many.len(), 2);
    assert!(dot(&text[0], &many[1]) > 0.99999);
    assert!(dot(&text[0], &many[0]) < 0.999, "a prefix is another input");
    // Usage counts the ids as given.
    let (status, reply) = post(
        "/v1/embeddings",
        &json!({"model": MODEL, "input": [[101, 1996, 102], [101, 102]]}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["usage"]["prompt_tokens"], 5, "{reply}");
    assert_eq!(reply["data"][1]["index"], 1, "{reply}");
}

#[tokio::test]
async fn bad_requests_get_openai_errors() {
    let long = "word ".repeat(600);
    let cases = [
        (
            json!({"model": MODEL, "input": ""}),
            "invalid_value",
            "input",
        ),
        (
            json!({"model": MODEL, "input": []}),
            "invalid_value",
            "input",
        ),
        (
            json!({"model": MODEL, "input": ["a", ""]}),
            "invalid_value",
            "input[1]",
        ),
        (
            json!({"model": MODEL, "input": [[]]}),
            "invalid_value",
            "input[0]",
        ),
        (
            json!({"model": MODEL, "input": {"text": "a"}}),
            "invalid_value",
            "input",
        ),
        (
            json!({"model": MODEL, "input": [101, 999999]}),
            "invalid_value",
            "input[1]",
        ),
        (
            json!({"model": MODEL, "input": [101, -1]}),
            "invalid_value",
            "input[1]",
        ),
        (
            json!({"model": MODEL, "input": long}),
            "context_length_exceeded",
            "input",
        ),
        (
            json!({"model": MODEL, "input": ["short", long]}),
            "context_length_exceeded",
            "input[1]",
        ),
        (
            json!({"model": MODEL, "input": "a", "encoding_format": "int8"}),
            "invalid_value",
            "encoding_format",
        ),
        (
            json!({"model": MODEL, "input": "a", "dimensions": 128}),
            "invalid_value",
            "dimensions",
        ),
        (
            json!({"model": CHAT_MODEL, "input": "a"}),
            "model_not_supported",
            "model",
        ),
    ];
    for (body, code, param) in cases {
        let (status, reply) = post("/v1/embeddings", &body).await;
        assert_eq!(status, 400, "{body}: {reply}");
        common::assert_openai_error(&reply, code);
        assert_eq!(reply["error"]["param"], param, "{body}: {reply}");
    }
    // The model's own width is a `dimensions` it can give.
    let (status, reply) = post(
        "/v1/embeddings",
        &json!({"model": MODEL, "input": "a", "dimensions": WIDTH}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply["data"][0]["embedding"].as_array().unwrap().len(),
        WIDTH
    );
    // An unknown model is a 404; malformed JSON a 400.
    let (status, reply) = post("/v1/embeddings", &json!({"model": "nope", "input": "a"})).await;
    assert_eq!(status, 404, "{reply}");
    common::assert_openai_error(&reply, "model_not_found");
    let response = reqwest::Client::new()
        .post(format!("{}/v1/embeddings", base()))
        .header("content-type", "application/json")
        .body("{\"input\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // An embedding model does not chat.
    let (status, reply) = post(
        "/v1/chat/completions",
        &json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}),
    )
    .await;
    assert_eq!(status, 400, "{reply}");
    common::assert_openai_error(&reply, "model_not_supported");
}

#[tokio::test]
async fn keys_guard_embeddings_as_every_v1_endpoint() {
    common::embedding_model_file();
    let mut args = wick::config::ServeArgs::local_ephemeral();
    args.model = Some(MODEL.into());
    args.ctx_size = Some(512);
    args.service.api_keys = vec!["key-e".into()];
    let base = format!("http://{}", common::start_server(args));
    let send = |key: Option<&'static str>| {
        let mut request = reqwest::Client::new()
            .post(format!("{base}/v1/embeddings"))
            .json(&json!({"input": "hello"}));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };
    let refused = send(None).await.unwrap();
    assert_eq!(refused.status(), 401);
    let wrong = send(Some("nope")).await.unwrap();
    assert_eq!(wrong.status(), 401);
    let ok = send(Some("key-e")).await.unwrap();
    assert_eq!(ok.status(), 200);
    let body: Value = ok.json().await.unwrap();
    assert_eq!(body["model"], MODEL, "no `model`: the server's default");
}

#[tokio::test]
async fn vectors_match_llama_cpp_s_for_the_same_gguf() {
    let path = common::repo_file("tests/fixtures/llamacpp-embeddings-minilm.json");
    let fixture: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).unwrap();
    let gguf = common::embedding_model_file();
    assert_eq!(
        fixture["gguf_sha256"],
        wick::catalog::Catalog::builtin()
            .get(MODEL)
            .unwrap()
            .sha256
            .clone()
            .unwrap(),
        "the fixture is for another GGUF than the catalog's ({})",
        gguf.display()
    );
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 4);
    let texts: Vec<String> = cases
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect();
    let ours = embed(EmbeddingInput::StringArray(texts.clone())).await;
    for (case, mine) in cases.iter().zip(&ours) {
        let theirs: Vec<f32> = serde_json::from_value(case["embedding"].clone()).unwrap();
        assert_eq!(theirs.len(), WIDTH);
        let cos = dot(mine, &theirs) / (norm(mine) * norm(&theirs));
        assert!(
            cos >= 0.999,
            "{}: cosine {cos} with llama.cpp",
            case["text"]
        );
        // llama.cpp's token ids for the text ([CLS] .. [SEP]) are wick's.
        if let Some(ids) = case.get("tokens") {
            let ids: Vec<u32> = serde_json::from_value(ids.clone()).unwrap();
            let (status, reply) = post(
                "/tokenize",
                &json!({"model": MODEL, "content": case["text"], "parse_special": false}),
            )
            .await;
            assert_eq!(status, 200, "{reply}");
            let ours: Vec<u32> = serde_json::from_value(reply["tokens"].clone()).unwrap();
            assert_eq!(
                ours,
                ids[1..ids.len() - 1],
                "{}: wick's word pieces are not llama.cpp's",
                case["text"]
            );
            let by_ids = embed(EmbeddingInput::IntegerArray(ids)).await;
            let same = dot(&by_ids[0], mine);
            assert!(
                same > 0.99999,
                "{}: llama.cpp's ids embed unlike wick's tokens (cosine {same})",
                case["text"]
            );
        }
    }
}

/// Run a script of tests/python with `python`; it must succeed and print `passed`.
fn run_script(python: &Path, script: &str, passed: &str) {
    let script = common::repo_file("tests/python").join(script);
    common::python::run_check(
        Command::new(python).arg(script).arg(base()).arg(MODEL),
        passed,
    );
}

#[test]
fn the_official_python_sdk_creates_embeddings() {
    let python = common::python::pinned_venv("openai", "openai", "3.51.0");
    run_script(&python, "embeddings_sdk.py", "embeddings checks passed");
}

#[test]
fn langchain_openai_embeddings_work_against_wick() {
    let python = common::python::venv_with("langchain-openai", &["langchain-openai==1.7.4"]);
    run_script(
        &python,
        "langchain_embeddings.py",
        "langchain checks passed",
    );
}

#[tokio::test]
async fn a_bert_gguf_given_by_path_serves_embeddings() {
    let path = common::embedding_model_file();
    let mut args = wick::config::ServeArgs::local_ephemeral();
    args.model = Some(path.to_string_lossy().into_owned());
    args.ctx_size = Some(512);
    let addr = common::start_server(args);
    let reply = common::post_json_at(addr, "/v1/embeddings", &json!({"input": CAT})).await;
    let v: Vec<f32> = serde_json::from_value(reply["data"][0]["embedding"].clone())
        .unwrap_or_else(|_| panic!("{reply}"));
    assert_eq!(v.len(), WIDTH);
    let served = common::model_card(addr, reply["model"].as_str().expect("model")).await;
    assert_eq!(served["embedding"], true, "{served}");
}

#[tokio::test]
async fn tokenize_frames_a_bert_text_as_llama_cpp_does() {
    // add_special: `[CLS] ... [SEP]`, the ids the embedding is computed from; without it,
    // the text's own tokens only.
    let (status, framed) = post("/tokenize", &json!({"content": CAT, "add_special": true})).await;
    assert_eq!(status, 200, "{framed}");
    let framed: Vec<u32> = serde_json::from_value(framed["tokens"].clone()).unwrap();
    assert_eq!(framed, CAT_IDS);
    let (status, bare) = post("/tokenize", &json!({"content": CAT})).await;
    assert_eq!(status, 200, "{bare}");
    let bare: Vec<u32> = serde_json::from_value(bare["tokens"].clone()).unwrap();
    assert_eq!(bare, CAT_IDS[1..CAT_IDS.len() - 1]);
}

/// nomic-bert (rotary positions, fused q/k/v, SwiGLU) on RANDOM WEIGHTS, the only nomic-bert
/// GGUF to be had here: a seeded file in nomic-embed-text's layout with MiniLM's vocabulary.
/// Its vectors mean nothing; what it checks is that wick's equal llama.cpp's for the same
/// file (cosine 0.999, where the nearest two different texts are at 0.83) and that its word
/// pieces are llama.cpp's.
#[tokio::test]
async fn random_weights_nomic_bert_matches_llama_cpp() {
    let fixture = common::repo_file("tests/fixtures/llamacpp-embeddings-random-nomic-bert.json");
    let fixture: Value =
        serde_json::from_str(&std::fs::read_to_string(&fixture).expect("fixture")).unwrap();
    assert!(fixture["note"].as_str().unwrap().contains("RANDOM WEIGHTS"));
    let path = common::random_nomic_bert_file();
    use sha2::Digest;
    let digest = sha2::Sha256::digest(std::fs::read(&path).expect("random nomic-bert GGUF"));
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        fixture["gguf_sha256"],
        hex,
        "{} is not the GGUF llama.cpp's vectors are for",
        path.display()
    );
    let mut args = wick::config::ServeArgs::local_ephemeral();
    args.model = Some(path.to_string_lossy().into_owned());
    args.ctx_size = Some(512);
    let base = format!("http://{}", common::start_server(args));
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        let request = client.post(format!("{base}{path}")).json(&body);
        async move {
            let reply: Value = request.send().await.unwrap().json().await.unwrap();
            reply
        }
    };
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 6);
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    let reply = post("/v1/embeddings", json!({ "input": texts })).await;
    let model = reply["model"].as_str().unwrap_or_else(|| panic!("{reply}"));
    for (i, case) in cases.iter().enumerate() {
        let mine: Vec<f32> = serde_json::from_value(reply["data"][i]["embedding"].clone())
            .unwrap_or_else(|_| panic!("{reply}"));
        let theirs: Vec<f32> = serde_json::from_value(case["embedding"].clone()).unwrap();
        assert_eq!(mine.len(), 128);
        let cos = dot(&mine, &theirs) / (norm(&mine) * norm(&theirs));
        println!(
            "random nomic-bert, cosine with llama.cpp {cos:.6}: {}",
            case["text"]
        );
        assert!(
            cos >= 0.999,
            "{}: cosine {cos} with llama.cpp (RANDOM WEIGHTS nomic-bert)",
            case["text"]
        );
        // llama.cpp's ids are [CLS], the word pieces, [SEP].
        let ids: Vec<u32> = serde_json::from_value(case["tokens"].clone()).unwrap();
        let tokens = post(
            "/tokenize",
            json!({"model": model, "content": case["text"], "parse_special": false}),
        )
        .await;
        let ours: Vec<u32> =
            serde_json::from_value(tokens["tokens"].clone()).unwrap_or_else(|_| panic!("{tokens}"));
        assert_eq!(ours, ids[1..ids.len() - 1], "{}", case["text"]);
    }
}
