//! The chat sampling surface through a real OpenAI client: `n`, logprobs and top_logprobs,
//! penalties, logit_bias, min_p, max_completion_tokens and stop, unknown fields, and the
//! same fields on /v2.

#![allow(deprecated)] // `max_tokens` and `seed` are deprecated in OpenAI's schema

mod common;

use async_openai::types::chat::{CreateChatCompletionRequest, CreateChatCompletionResponse};
use common::{client, post_raw};
use futures::StreamExt;
use serde_json::{json, Value};

const MODEL: &str = "smollm2-135m-instruct";

/// A chat request from JSON, sent by the typed client (so the SDK's types are what is
/// checked on both ways).
fn chat(mut body: Value) -> CreateChatCompletionRequest {
    if body.get("messages").is_none() {
        body["messages"] = json!([{ "role": "user", "content": "Name three colours." }]);
    }
    common::sdk_request(body)
}

async fn create(body: Value) -> CreateChatCompletionResponse {
    client()
        .chat()
        .create(chat(body))
        .await
        .expect("chat answers")
}

/// For fields OpenAI's SDK types do not have (it would drop them): raw JSON, the answer
/// still parsed with the SDK's response type.
async fn create_raw(body: Value) -> CreateChatCompletionResponse {
    let mut typed = serde_json::to_value(chat(body.clone())).unwrap();
    for (k, v) in body.as_object().unwrap() {
        typed[k] = v.clone();
    }
    let (status, answer) = post_raw("/v1/chat/completions", &typed.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    serde_json::from_value(answer).expect("an SDK-shaped chat.completion")
}

#[tokio::test]
async fn n_choices_each_have_their_index_and_seeded_choices_are_reproducible() {
    let body = json!({ "n": 3, "temperature": 1.0, "seed": 11, "max_completion_tokens": 12 });
    let a = create(body.clone()).await;
    let b = create(body).await;
    assert_eq!(a.choices.len(), 3);
    let indices: Vec<u32> = a.choices.iter().map(|c| c.index).collect();
    assert_eq!(indices, [0, 1, 2]);
    let texts = |r: &CreateChatCompletionResponse| -> Vec<String> {
        r.choices
            .iter()
            .map(|c| c.message.content.clone().unwrap_or_default())
            .collect()
    };
    assert_eq!(texts(&a), texts(&b), "same seed, same choices");
    let distinct: std::collections::HashSet<_> = texts(&a).into_iter().collect();
    assert!(
        distinct.len() > 1,
        "choices sample with different seeds: {:?}",
        texts(&a)
    );
    let usage = a.usage.expect("usage");
    let generated: u32 = 3 * 12;
    assert!(usage.completion_tokens <= generated && usage.completion_tokens >= 3);
    // The prompt counts once however many choices there are.
    let one = create(json!({ "max_completion_tokens": 1 })).await;
    assert_eq!(usage.prompt_tokens, one.usage.unwrap().prompt_tokens);
}

#[tokio::test]
async fn greedy_logprobs_put_the_chosen_token_on_top() {
    let r = create(json!({
        "temperature": 0.0, "max_tokens": 8, "logprobs": true, "top_logprobs": 5
    }))
    .await;
    let choice = &r.choices[0];
    let content = choice.logprobs.as_ref().unwrap().content.as_ref().unwrap();
    assert_eq!(content.len() as u32, r.usage.unwrap().completion_tokens);
    let joined: String = content.iter().map(|t| t.token.as_str()).collect();
    assert_eq!(
        Some(joined),
        choice.message.content,
        "tokens spell the text"
    );
    for t in content {
        assert_eq!(t.top_logprobs.len(), 5);
        assert!(t.logprob <= 0.0);
        assert_eq!(
            t.top_logprobs[0].token, t.token,
            "greedy picks the top token"
        );
        assert!((t.top_logprobs[0].logprob - t.logprob).abs() < 1e-6);
        assert!(t
            .top_logprobs
            .windows(2)
            .all(|w| w[0].logprob >= w[1].logprob));
        let mass: f32 = t.top_logprobs.iter().map(|a| a.logprob.exp()).sum();
        assert!(
            mass <= 1.0 + 1e-4,
            "five alternatives hold {mass} of the mass"
        );
        assert_eq!(t.bytes.as_deref(), Some(t.token.as_bytes()));
    }
    // Without the flag there are none.
    let plain = create(json!({ "temperature": 0.0, "max_tokens": 2 })).await;
    assert!(plain.choices[0].logprobs.is_none());
}

#[tokio::test]
async fn streamed_choices_carry_their_index_and_logprobs() {
    let mut req = chat(json!({
        "n": 2, "temperature": 0.0, "max_tokens": 6, "logprobs": true, "top_logprobs": 2,
        "stream_options": { "include_usage": true }
    }));
    req.stream = Some(true);
    let mut stream = client()
        .chat()
        .create_stream(req)
        .await
        .expect("stream opens");
    let (mut texts, mut tokens) = (vec![String::new(); 2], vec![String::new(); 2]);
    let mut finished = [false; 2];
    let mut usage = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("chunk parses");
        if chunk.usage.is_some() {
            usage = chunk.usage;
        }
        for c in chunk.choices {
            let i = c.index as usize;
            texts[i].push_str(c.delta.content.as_deref().unwrap_or(""));
            if let Some(content) = c.logprobs.and_then(|l| l.content) {
                for t in content {
                    assert_eq!(t.top_logprobs[0].token, t.token);
                    tokens[i].push_str(&t.token);
                }
            }
            finished[i] |= c.finish_reason.is_some();
        }
    }
    assert_eq!(finished, [true, true]);
    assert_eq!(texts[0], texts[1], "greedy choices agree");
    assert_eq!(tokens, texts, "each choice's tokens spell its text");
    assert!(usage.expect("usage chunk").completion_tokens >= 2);
}

#[tokio::test]
async fn logit_bias_and_penalties_change_what_is_generated() {
    let greedy = create(json!({ "temperature": 0.0, "max_tokens": 6, "logprobs": true })).await;
    let first = greedy.choices[0]
        .logprobs
        .as_ref()
        .unwrap()
        .content
        .as_ref()
        .unwrap()[0]
        .clone();
    let id = token_id(&first.token);
    let banned = create(json!({
        "temperature": 0.0, "max_tokens": 6, "logprobs": true, "logit_bias": { id.to_string(): -100 }
    }))
    .await;
    let banned_first = &banned.choices[0]
        .logprobs
        .as_ref()
        .unwrap()
        .content
        .as_ref()
        .unwrap()[0];
    assert_ne!(
        banned_first.token, first.token,
        "a -100 bias bans the token"
    );

    // Penalties on what was already generated: a greedy list of numbers repeats its
    // separators; penalised, it repeats tokens less.
    let list = json!({
        "messages": [{ "role": "user", "content": "List the numbers from 1 to 20, separated by commas." }],
        "temperature": 0.0, "max_tokens": 30, "logprobs": true
    });
    let repeats = |r: &CreateChatCompletionResponse| {
        let tokens: Vec<String> = r.choices[0]
            .logprobs
            .as_ref()
            .unwrap()
            .content
            .as_ref()
            .unwrap()
            .iter()
            .map(|t| t.token.clone())
            .collect();
        let distinct: std::collections::HashSet<_> = tokens.iter().collect();
        tokens.len() - distinct.len()
    };
    let plain = create(list.clone()).await;
    {
        let mut penalised = list.clone();
        penalised["frequency_penalty"] = json!(2.0);
        let penalised = create(penalised).await;
        assert!(
            repeats(&penalised) < repeats(&plain),
            "frequency_penalty: {:?} vs {:?}",
            penalised.choices[0].message.content,
            plain.choices[0].message.content
        );
    }
    // A presence penalty too small to change this confident list still lowers the
    // probability of every token that already appeared.
    let mut present = list.clone();
    present["presence_penalty"] = json!(1.0);
    let present = create(present).await;
    let tokens = |r: &CreateChatCompletionResponse| {
        r.choices[0]
            .logprobs
            .as_ref()
            .unwrap()
            .content
            .clone()
            .unwrap()
    };
    let (plain_tokens, present_tokens) = (tokens(&plain), tokens(&present));
    assert_eq!(
        plain.choices[0].message.content,
        present.choices[0].message.content
    );
    let mut seen = std::collections::HashSet::new();
    let mut checked = 0;
    for (a, b) in plain_tokens.iter().zip(&present_tokens) {
        if !seen.insert(a.token.clone()) {
            assert!(
                b.logprob < a.logprob,
                "{:?}: {} vs {}",
                a.token,
                b.logprob,
                a.logprob
            );
            checked += 1;
        }
    }
    assert!(checked > 5, "the list repeats tokens");
    // The repetition penalty (which covers the prompt too) reshapes the distribution.
    let mut strong = list;
    strong["repetition_penalty"] = json!(1.5);
    let strong = create_raw(strong).await;
    let moved = tokens(&strong)
        .iter()
        .zip(&plain_tokens)
        .any(|(a, b)| a.token != b.token || (a.logprob - b.logprob).abs() > 1e-5);
    assert!(moved, "repetition_penalty changed nothing");
}

/// The id of a one-token text in the default model's vocabulary (its tokenizer loaded the
/// way the server loads it).
fn token_id(token: &str) -> u32 {
    let path = common::model_file("SmolLM2-135M-Instruct.Q4_1.gguf");
    let mut file = std::fs::File::open(path).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    let tokenizer = wick::tokenizer::Tokenizer::from_gguf(&content).unwrap();
    let ids = tokenizer.encode(token).unwrap();
    assert_eq!(ids.len(), 1, "{token:?} is one token");
    ids[0]
}

#[tokio::test]
async fn min_p_max_completion_tokens_stop_and_unknown_fields() {
    let r = create_raw(json!({
        "min_p": 0.5, "temperature": 1.0, "seed": 3, "max_completion_tokens": 3,
        "stop": ["\n\n\n"], "some_future_field": { "x": 1 }, "service_tier": "auto"
    }))
    .await;
    assert!(r.usage.unwrap().completion_tokens <= 3);
    // A stop string as a plain string: greedy output up to it.
    let full = create(json!({ "temperature": 0.0, "max_tokens": 12 })).await;
    let text = full.choices[0].message.content.clone().unwrap();
    let cut_at = text.char_indices().nth(4).map(|(i, _)| i).unwrap();
    let stop: String = text[cut_at..].chars().take(2).collect();
    let stopped = create(json!({ "temperature": 0.0, "max_tokens": 12, "stop": stop })).await;
    let expected = &text[..text.find(&stop).unwrap()];
    assert_eq!(
        stopped.choices[0].message.content.as_deref(),
        Some(expected)
    );
}

#[tokio::test]
async fn out_of_range_sampling_fields_are_400s_naming_the_field() {
    let hi = json!([{ "role": "user", "content": "hi" }]);
    for (field, value, param) in [
        ("top_logprobs", json!(21), "top_logprobs"),
        ("presence_penalty", json!(2.5), "presence_penalty"),
        ("frequency_penalty", json!(-3), "frequency_penalty"),
        ("repetition_penalty", json!(0), "repetition_penalty"),
        ("min_p", json!(1.5), "min_p"),
        ("n", json!(0), "n"),
        ("logit_bias", json!({ "abc": 1 }), "logit_bias.abc"),
        ("logit_bias", json!({ "5": 101 }), "logit_bias.5"),
        (
            "logit_bias",
            json!({ "99999999": 1 }),
            "logit_bias.99999999",
        ),
        ("presence_penalty", json!("lots"), "presence_penalty"),
    ] {
        for path in ["/v1/chat/completions", "/v2/chat/completions"] {
            let mut body = json!({ "messages": hi, "model": MODEL, "logprobs": true });
            body[field] = value.clone();
            let (status, body) = post_raw(path, &body.to_string()).await;
            assert_eq!(status, 400, "{path} {field}={value}: {body}");
            assert_eq!(body["error"]["param"], param, "{path} {field}={value}");
        }
    }
}

#[tokio::test]
async fn v2_takes_the_same_sampling_fields() {
    let (status, body) = post_raw(
        "/v2/chat/completions",
        &json!({
            "model": MODEL, "messages": [{ "role": "user", "content": "Say hi." }],
            "n": 2, "temperature": 0.0, "max_completion_tokens": 4, "logprobs": true,
            "top_logprobs": 1, "presence_penalty": 0.5, "frequency_penalty": 0.5,
            "repetition_penalty": 1.1, "min_p": 0.05, "logit_bias": { "0": -1 }, "stop": "zzz"
        })
        .to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["routing_mechanism"], "direct_model_selection");
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    assert_eq!(choices[1]["index"], 1);
    let content = choices[0]["logprobs"]["content"].as_array().unwrap();
    assert!(!content.is_empty());
    assert_eq!(content[0]["top_logprobs"].as_array().unwrap().len(), 1);
}
