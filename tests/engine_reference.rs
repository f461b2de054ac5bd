//! The engine's greedy output against llama.cpp's for the same GGUF and raw prompts
//! (tests/fixtures/llamacpp_reference.json, made once with llama.cpp), alone and with the
//! three prompts batched together.

use std::path::PathBuf;

use candle_core::Device;
use serde_json::Value;
use wick::catalog::Catalog;
use wick::engine::{Backend, Engine, EngineConfig, Event, GenerateRequest, SamplingParams};

fn fixture() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llamacpp_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn smollm2_path() -> PathBuf {
    let root = std::env::var_os("WICK_CACHE")
        .map(PathBuf::from)
        .or_else(|| dirs::cache_dir().map(|d| d.join("wick")))
        .expect("no cache directory: set WICK_CACHE");
    let path = root.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(path.is_file(), "{} not found: run `wick pull` first", path.display());
    path
}

fn engine() -> (Engine, std::sync::Arc<wick::model::ModelFrontend>) {
    wick::config::init_threads(None);
    let catalog = Catalog::builtin();
    let entry = catalog.get("smollm2-135m-instruct").unwrap().clone();
    let loaded = wick::model::load(&smollm2_path(), &entry, &Device::Cpu).expect("model loads");
    let frontend = loaded.frontend.clone();
    (Engine::start(loaded, EngineConfig::default()).unwrap(), frontend)
}

async fn greedy(engine: &Engine, prompt: Vec<u32>) -> String {
    let mut events = engine
        .submit(GenerateRequest {
            prompt,
            sampling: SamplingParams {
                temperature: 0.0,
                ..Default::default()
            },
            max_tokens: 16,
            stop: vec![],
        })
        .unwrap();
    let mut text = String::new();
    while let Some(event) = events.recv().await {
        match event {
            Event::Text(t) => text.push_str(&t),
            Event::Done { .. } => return text,
            Event::Error(e) => panic!("engine error: {e}"),
        }
    }
    panic!("stream ended without Done")
}

#[tokio::test]
async fn smollm2_greedy_matches_llamacpp_alone_and_batched() {
    let (engine, frontend) = engine();
    let fixture = fixture();
    let cases = fixture["models"]["SmolLM2-135M-Instruct.Q4_1.gguf"]["greedy"]
        .as_array()
        .unwrap()
        .clone();
    let mut prompts = Vec::new();
    for case in &cases {
        let ids = frontend.tokenizer.encode(case["prompt"].as_str().unwrap()).unwrap();
        let want: Vec<u32> = serde_json::from_value(case["prompt_ids"].clone()).unwrap();
        assert_eq!(ids, want, "prompt ids");
        prompts.push(ids);
    }
    // One at a time.
    for (case, prompt) in cases.iter().zip(&prompts) {
        let got = greedy(&engine, prompt.clone()).await;
        assert_eq!(got, case["output_text"].as_str().unwrap(), "alone: {}", case["prompt"]);
    }
    // All at once: the engine batches them into shared steps.
    let all = futures::future::join_all(prompts.iter().map(|p| greedy(&engine, p.clone()))).await;
    for (case, got) in cases.iter().zip(all) {
        assert_eq!(got, case["output_text"].as_str().unwrap(), "batched: {}", case["prompt"]);
    }
}
