//! /v1/embeddings from a chat model whose operator turned them on (`--pooled-embeddings
//! last`, src/engine/pooled.rs), against the real server on SmolLM2: its vectors against
//! llama.cpp's server with `--embeddings --pooling last` on the same GGUF
//! (tests/fixtures/llamacpp-embeddings-smollm2-last.json, scripts/embedding-gguf/reference.py),
//! a text's vector whatever it is batched with, and chat going on beside embeddings. (The 400
//! for a chat model without the switch is in tests/embeddings_api.rs.)

mod common;

use std::net::SocketAddr;
use std::sync::OnceLock;

use async_openai::types::chat::CreateChatCompletionRequest;
use async_openai::types::embeddings::EmbeddingInput;
use serde_json::{json, Value};

const MODEL: &str = "smollm2-135m-instruct";
const WIDTH: usize = 576;

fn server() -> SocketAddr {
    static SERVER: OnceLock<SocketAddr> = OnceLock::new();
    *SERVER.get_or_init(|| {
        let mut args = wick::config::ServeArgs::local_ephemeral();
        args.model = Some(MODEL.into());
        args.ctx_size = Some(2048);
        args.pooled_embeddings = Some(wick::model::bert::Pooling::Last);
        common::start_server(args)
    })
}

async fn embed(input: EmbeddingInput) -> Vec<Vec<f32>> {
    common::embed(server(), MODEL, input).await
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
    dot(a, b) / (dot(a, a).sqrt() * dot(b, b).sqrt())
}

fn fixture() -> Value {
    let path = common::repo_file("tests/fixtures/llamacpp-embeddings-smollm2-last.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).unwrap()
}

#[tokio::test]
async fn last_token_vectors_match_llama_server_s_on_the_same_gguf() {
    let fixture = fixture();
    assert_eq!(
        fixture["gguf_sha256"],
        wick::catalog::Catalog::builtin()
            .get(MODEL)
            .unwrap()
            .sha256
            .clone()
            .unwrap(),
        "the fixture is for another GGUF than the catalog's"
    );
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 4);
    let texts: Vec<String> = cases
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect();
    let ours = embed(EmbeddingInput::StringArray(texts)).await;
    assert_eq!(ours.len(), cases.len());
    for (case, mine) in cases.iter().zip(&ours) {
        let theirs: Vec<f32> = serde_json::from_value(case["embedding"].clone()).unwrap();
        assert_eq!((mine.len(), theirs.len()), (WIDTH, WIDTH));
        let cos = cosine(mine, &theirs);
        assert!(
            cos >= 0.999,
            "{}: cosine {cos} with llama.cpp",
            case["text"]
        );
        // The ids llama.cpp embedded are the ones wick does (no BOS: SmolLM2's GGUF adds none).
        let reply = common::post_json_at(
            server(),
            "/tokenize",
            &json!({"content": case["text"], "add_special": true}),
        )
        .await;
        assert_eq!(reply["tokens"], case["tokens"], "{}", case["text"]);
    }
}

#[tokio::test]
async fn a_text_s_vector_does_not_depend_on_what_it_is_batched_with() {
    let text = "The quick brown fox jumps over the lazy dog.";
    let alone = embed(EmbeddingInput::String(text.into())).await;
    let batched = embed(EmbeddingInput::StringArray(vec![
        "A much longer text that comes first in the batch, so the fox's tokens sit at other \
         rows of every matrix of the step."
            .into(),
        text.into(),
        "x".into(),
    ]))
    .await;
    assert_eq!(
        alone[0], batched[1],
        "the same text embedded differently in a batch"
    );
    assert_ne!(batched[0], batched[1]);
    let length: f32 = alone[0].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((length - 1.0).abs() < 1e-5, "length {length}");
}

#[tokio::test]
async fn the_model_chats_as_before_beside_its_embeddings_and_lists_its_pooling() {
    let chat: CreateChatCompletionRequest = common::sdk_request(json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 12,
        "temperature": 0
    }));
    let client = common::client_for(server());
    let chats = client.chat();
    let texts: Vec<String> = (0..16).map(|i| format!("text number {i}")).collect();
    let (answer, vectors) = tokio::join!(
        chats.create(chat),
        embed(EmbeddingInput::StringArray(texts))
    );
    let answer = answer.expect("chat beside embeddings");
    let content = answer.choices[0]
        .message
        .content
        .clone()
        .unwrap_or_default();
    assert!(!content.trim().is_empty(), "{answer:?}");
    assert_eq!(vectors.len(), 16);

    let card = common::model_card(server(), MODEL).await;
    assert_eq!(card["pooled_embeddings"], "last", "{card}");
    // The embedding model of the catalog pools as its GGUF says: nothing to turn on.
    let minilm = common::model_card(server(), "all-minilm-l6-v2").await;
    assert_eq!(minilm["embedding"], true, "{minilm}");
    assert!(minilm.get("pooled_embeddings").is_none(), "{minilm}");
}
