//! The paged KV cache under memory pressure, on the CPU (the layout a GPU uses, through the
//! CPU references of wick's kernels), with the real SmolLM2: sequences that outgrow a small
//! `kv_budget` give their blocks up to older ones and recompute later, and every answer is
//! still the one it gives alone; a budget that cannot hold one context is refused at start.

mod common;

use std::sync::Arc;

use wick::engine::{Backend, Engine, EngineConfig, GenerateRequest, KvLayout, SamplingParams};
use wick::model::{KvShape, LoadedModel, ModelFrontend};

/// Context of the engines here: small, so a small budget is still one context.
const CONTEXT: usize = 256;

fn load() -> LoadedModel {
    common::load_smollm2(CONTEXT)
}

/// Bytes of `blocks` KV blocks of the loaded model.
fn blocks(loaded: &LoadedModel, blocks: usize) -> u64 {
    let c = loaded.weights.config();
    let shape = KvShape {
        n_layers: c.n_layers,
        n_kv_heads: c.n_kv_heads,
        head_dim: c.head_dim,
        capacity: CONTEXT,
    };
    (blocks * shape.block_bytes()) as u64
}

fn paged(sequences: usize, budget: Option<u64>) -> EngineConfig {
    EngineConfig {
        max_sequences: sequences,
        kv_layout: KvLayout::Paged,
        kv_budget: budget,
        prefill_chunk: 64,
        ..Default::default()
    }
}

fn greedy(frontend: &ModelFrontend, question: &str, max_tokens: usize) -> GenerateRequest {
    let text = format!("<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n");
    GenerateRequest {
        prompt: frontend.tokenizer.encode(&text).unwrap(),
        sampling: SamplingParams {
            temperature: 0.0,
            ..Default::default()
        },
        max_tokens,
        stop: vec![],
        // Long answers whatever the model would say, so the cache fills.
        ignore_eos: true,
        constraint: None,
        deadline: None,
    }
}

#[tokio::test]
async fn sequences_preempted_for_want_of_blocks_answer_as_they_would_alone() {
    let loaded = load();
    // 20 blocks of 16 tokens: one context (256) and a little more, for four sequences that
    // want about 130 tokens each.
    let budget = blocks(&loaded, 20);
    let frontend: Arc<ModelFrontend> = loaded.frontend.clone();
    let engine = Engine::start(loaded, paged(4, Some(budget))).unwrap();
    assert_eq!(engine.health().kv_capacity_tokens, 320);
    assert_eq!(engine.health().kv_layout, "paged");
    let questions = [
        "Write a story about a lighthouse.",
        "Explain how rain forms.",
        "List facts about the moon.",
        "Describe a busy market in the morning.",
    ];
    let requests: Vec<GenerateRequest> = questions
        .iter()
        .map(|q| greedy(&frontend, q, 100))
        .collect();

    let mut alone = Vec::new();
    for request in &requests {
        alone.push(common::collect_text(engine.submit(request.clone()).unwrap()).await);
    }
    assert_eq!(engine.health().preempted, 0, "one at a time always fits");

    let together = futures::future::join_all(
        requests
            .iter()
            .map(|r| common::collect_text(engine.submit(r.clone()).unwrap())),
    )
    .await;
    assert!(
        engine.health().preempted > 0,
        "four sequences of ~130 tokens in 320 tokens of cache must preempt"
    );
    for ((question, alone), together) in questions.iter().zip(&alone).zip(&together) {
        assert!(alone.len() > 100, "{question}: {alone:?}");
        assert_eq!(together, alone, "{question}");
    }
    // Everything ends and frees its blocks (the counts follow the last answer shortly).
    let mut idle = false;
    for _ in 0..200 {
        let h = engine.health();
        if (h.running, h.waiting, h.kv_tokens) == (0, 0, 0) {
            idle = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(idle, "{:?}", engine.health());
}

#[tokio::test]
async fn a_budget_smaller_than_one_context_is_refused_at_start() {
    let loaded = load();
    // 15 blocks hold 240 tokens, the context is 256.
    let budget = blocks(&loaded, 15);
    let error = Engine::start(loaded, paged(2, Some(budget)))
        .err()
        .expect("a budget under one context must be refused")
        .to_string();
    assert!(
        error.contains("--kv-budget") && error.contains("240") && error.contains("256"),
        "{error}"
    );
}

#[tokio::test]
async fn by_default_the_paged_cache_holds_every_sequence_s_full_context() {
    let loaded = load();
    let frontend = loaded.frontend.clone();
    let engine = Engine::start(loaded, paged(3, None)).unwrap();
    assert_eq!(engine.health().kv_capacity_tokens, 3 * CONTEXT);
    // Three long answers at once: nobody is preempted.
    let answers = futures::future::join_all((0..3).map(|i| {
        let request = greedy(&frontend, &format!("Count from {i} upwards."), 150);
        common::collect_text(engine.submit(request).unwrap())
    }))
    .await;
    assert!(answers.iter().all(|a| !a.is_empty()), "{answers:?}");
    assert_eq!(engine.health().preempted, 0);
}
