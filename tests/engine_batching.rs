//! The engine under continuous batching: a request's greedy answer does not depend on what
//! else shares its steps, and cancelling requests in the middle of a batch leaves the others
//! (and the engine) correct.

mod common;

use wick::engine::{Backend, Engine, EngineConfig, Event, GenerateRequest, SamplingParams};
use wick::model::ModelFrontend;

fn engine(slots: usize) -> (Engine, std::sync::Arc<ModelFrontend>) {
    engine_with(EngineConfig {
        max_sequences: slots,
        ..Default::default()
    })
}

fn engine_with(config: EngineConfig) -> (Engine, std::sync::Arc<ModelFrontend>) {
    let loaded = common::load_smollm2(1024);
    let frontend = loaded.frontend.clone();
    (Engine::start(loaded, config).unwrap(), frontend)
}

fn chat(frontend: &ModelFrontend, question: &str) -> Vec<u32> {
    let text = format!("<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n");
    frontend.tokenizer.encode(&text).unwrap()
}

fn request(prompt: Vec<u32>, temperature: f32, seed: u64, max_tokens: usize) -> GenerateRequest {
    GenerateRequest {
        prompt,
        sampling: SamplingParams {
            temperature,
            top_p: 0.9,
            top_k: 40,
            seed: Some(seed),
            ..Default::default()
        },
        max_tokens,
        stop: vec![],
        ignore_eos: false,
        constraint: None,
        deadline: None,
    }
}

async fn text_of(engine: &Engine, request: GenerateRequest) -> String {
    common::collect_text(engine.submit(request).unwrap()).await
}

#[tokio::test]
async fn a_greedy_answer_is_the_same_alone_and_among_eight_mixed_requests() {
    let (engine, frontend) = engine(8);
    let probe = request(
        chat(&frontend, "What is the boiling point of water?"),
        0.0,
        0,
        24,
    );
    let alone = text_of(&engine, probe.clone()).await;

    // Seven others of different lengths and settings, sampled at temperature 1, started
    // together with the probe so they share its prefill and decode steps.
    let questions = [
        "Hi",
        "Write a long poem about the ocean and the moon and the stars.",
        "List five animals.",
        "Why is the sky blue? Explain in detail with physics.",
        "2+2?",
        "Tell me a joke about computers.",
        "Describe a sunset.",
    ];
    let mut tasks = Vec::new();
    for (i, q) in questions.iter().enumerate() {
        let r = request(chat(&frontend, q), 1.0, i as u64, 8 + 6 * i);
        tasks.push(text_of(&engine, r));
    }
    let (batched, others) = tokio::join!(text_of(&engine, probe), futures::future::join_all(tasks));
    assert_eq!(batched, alone, "the probe inside a batch of 8");
    assert!(others.iter().all(|t| !t.is_empty()));
}

#[tokio::test]
async fn cancelling_in_the_middle_of_a_batch_leaves_the_rest_correct() {
    let (engine, frontend) = engine(4);
    let probe = request(
        chat(&frontend, "Name the planets of the solar system."),
        0.0,
        0,
        32,
    );
    let alone = text_of(&engine, probe.clone()).await;

    // Three long requests that will be cancelled after a few tokens, mid-batch.
    let mut doomed = Vec::new();
    for i in 0..3 {
        let mut r = request(chat(&frontend, "Write a very long story."), 1.0, i, 500);
        // They must still be running when cancelled, whatever they sample.
        r.ignore_eos = true;
        doomed.push(engine.submit(r).unwrap());
    }
    let probe_task = tokio::spawn(common::collect_text(engine.submit(probe.clone()).unwrap()));
    for events in doomed.iter_mut() {
        // Wait for each to produce some text, then hang up.
        match events.recv().await {
            Some(Event::Text(_)) => {}
            other => panic!("expected text first, got {other:?}"),
        }
    }
    let before = engine.health().cancelled;
    drop(doomed);
    assert_eq!(
        probe_task.await.unwrap(),
        alone,
        "the probe beside cancelled requests"
    );
    // The engine counted the cancels, freed their slots, and still answers correctly.
    let mut freed = false;
    for _ in 0..200 {
        let h = engine.health();
        if h.cancelled >= before + 3 && h.running == 0 {
            freed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        freed,
        "cancelled requests still hold slots: {:?}",
        engine.health()
    );
    assert_eq!(text_of(&engine, probe).await, alone, "after the cancels");
}

/// Sampling where the logits are (a GPU's path, here through the sampling kernel's CPU
/// reference) picks the host sampler's tokens for the same seeds: greedy, top-k, top-p,
/// min-p and temperature alone; requests that need their logits on the host
/// (log-probabilities, penalties) sample there in the same batch.
#[tokio::test]
async fn sampling_on_the_device_picks_what_the_host_sampler_picks() {
    let (host, frontend) = engine(7);
    let (device, _) = engine_with(EngineConfig {
        max_sequences: 7,
        device_sampling: Some(true),
        ..Default::default()
    });
    let question = |q: &str| chat(&frontend, q);
    let mut requests = Vec::new();
    for (i, (temperature, top_k, top_p, min_p)) in [
        (0.0, 0, 1.0, 0.0),
        (0.8, 0, 0.9, 0.0),
        (1.0, 0, 1.0, 0.0),
        (0.7, 0, 1.0, 0.05),
        (1.2, 0, 0.95, 0.02),
        (1.0, 40, 1.0, 0.0),
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = request(
            question("Tell me about cats."),
            temperature,
            40 + i as u64,
            40,
        );
        r.sampling.top_p = top_p;
        r.sampling.top_k = top_k;
        r.sampling.min_p = min_p;
        requests.push(r);
    }
    let mut host_only = request(question("Tell me about dogs."), 0.9, 7, 40);
    host_only.sampling.top_k = 0;
    host_only.sampling.logprobs = Some(2);
    host_only.sampling.presence_penalty = 0.5;
    requests.push(host_only);

    let mut expected = Vec::new();
    for r in &requests {
        expected.push(text_of(&host, r.clone()).await);
    }
    let together =
        futures::future::join_all(requests.iter().map(|r| text_of(&device, r.clone()))).await;
    assert_eq!(together, expected);
    assert!(expected.iter().all(|t| !t.is_empty()), "{expected:?}");
}
