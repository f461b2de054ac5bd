//! The OpenAI chat API of the real server with the real default model, through a real
//! OpenAI client (async-openai).

// `max_tokens` and `seed` are deprecated in OpenAI's schema but still what most clients send.
#![allow(deprecated)]

mod common;

use async_openai::types::chat::{
    ChatCompletionRequestSystemMessageArgs, ChatCompletionRequestUserMessageArgs,
    ChatCompletionStreamOptions, CreateChatCompletionRequest, CreateChatCompletionRequestArgs,
    FinishReason, StopConfiguration,
};
use common::{client, get_json, post_raw};
use futures::StreamExt;

const MODEL: &str = "smollm2-135m-instruct";

fn request(question: &str, max_tokens: u32) -> CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model(MODEL)
        .messages([
            ChatCompletionRequestSystemMessageArgs::default()
                .content("You are a concise assistant.")
                .build()
                .unwrap()
                .into(),
            ChatCompletionRequestUserMessageArgs::default()
                .content(question)
                .build()
                .unwrap()
                .into(),
        ])
        .temperature(0.0)
        .max_tokens(max_tokens)
        .build()
        .unwrap()
}

/// Text, finish reason and usage of a streamed request, checking the chunk protocol.
async fn stream_text(
    mut req: CreateChatCompletionRequest,
) -> (String, Option<FinishReason>, Option<u32>) {
    req.stream_options = Some(ChatCompletionStreamOptions {
        include_usage: Some(true),
        include_obfuscation: None,
    });
    let mut stream = client()
        .chat()
        .create_stream(req)
        .await
        .expect("stream opens");
    let (mut text, mut finish, mut usage, mut ids, mut first) =
        (String::new(), None, None, Vec::new(), true);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("chunk parses");
        assert_eq!(chunk.object, "chat.completion.chunk");
        ids.push(chunk.id.clone());
        if let Some(u) = chunk.usage {
            assert!(chunk.choices.is_empty(), "the usage chunk has no choices");
            usage = Some(u.completion_tokens);
        }
        for choice in chunk.choices {
            if first {
                assert_eq!(
                    choice.delta.role,
                    Some(async_openai::types::chat::Role::Assistant),
                    "the first delta carries the role"
                );
                first = false;
            }
            if let Some(t) = choice.delta.content {
                assert!(!t.contains('\u{FFFD}'), "a delta split a character: {t:?}");
                text.push_str(&t);
            }
            if choice.finish_reason.is_some() {
                finish = choice.finish_reason;
            }
        }
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one id for the whole stream");
    (text, finish, usage)
}

#[tokio::test]
async fn answers_a_question_with_usage() {
    let response = client()
        .chat()
        .create(request("What is the capital of France?", 24))
        .await
        .expect("chat completion");
    assert_eq!(response.object, "chat.completion");
    assert_eq!(response.model, MODEL);
    let choice = &response.choices[0];
    let text = choice.message.content.clone().unwrap_or_default();
    assert!(!text.trim().is_empty(), "empty answer");
    assert!(matches!(
        choice.finish_reason,
        Some(FinishReason::Stop) | Some(FinishReason::Length)
    ));
    let usage = response.usage.expect("usage");
    assert!(
        usage.prompt_tokens > 10,
        "prompt tokens: {}",
        usage.prompt_tokens
    );
    assert!(usage.completion_tokens >= 1 && usage.completion_tokens <= 24);
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );
}

#[tokio::test]
async fn stream_text_equals_non_stream_text_at_temperature_zero() {
    let req = request("Name three colours of the rainbow.", 32);
    let whole = client()
        .chat()
        .create(req.clone())
        .await
        .expect("completion");
    let whole_text = whole.choices[0].message.content.clone().unwrap_or_default();
    let (streamed, finish, usage) = stream_text(req).await;
    assert_eq!(streamed, whole_text);
    assert_eq!(
        finish.map(|f| format!("{f:?}")),
        whole.choices[0].finish_reason.map(|f| format!("{f:?}"))
    );
    assert_eq!(usage, whole.usage.map(|u| u.completion_tokens));
}

#[tokio::test]
async fn max_tokens_ends_with_length_after_exactly_that_many_tokens() {
    let mut req = request("Write a long story about a dragon.", 5);
    req.max_tokens = Some(5);
    let response = client()
        .chat()
        .create(req.clone())
        .await
        .expect("completion");
    assert_eq!(
        response.choices[0].finish_reason,
        Some(FinishReason::Length)
    );
    assert_eq!(response.usage.unwrap().completion_tokens, 5);
    let (_, finish, usage) = stream_text(req).await;
    assert_eq!(finish, Some(FinishReason::Length));
    assert_eq!(usage, Some(5));
}

#[tokio::test]
async fn stop_string_ends_the_answer_and_is_never_emitted() {
    let req = request("Count from one to ten in words, separated by commas.", 40);
    let free = client()
        .chat()
        .create(req.clone())
        .await
        .expect("completion");
    let text = free.choices[0].message.content.clone().unwrap_or_default();
    // Stop on three characters from the answer's middle, which may straddle tokens.
    let chars: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    assert!(chars.len() >= 8, "answer too short to test stop: {text:?}");
    let (from, to) = (chars[chars.len() / 2], chars[chars.len() / 2 + 3]);
    let stop = text[from..to].to_string();
    let expected = text[..text.find(&stop).unwrap()].to_string();

    let mut stopped = req.clone();
    stopped.stop = Some(StopConfiguration::StringArray(vec![
        stop.clone(),
        "never-appears-1".into(),
    ]));
    let response = client()
        .chat()
        .create(stopped.clone())
        .await
        .expect("completion");
    let got = response.choices[0]
        .message
        .content
        .clone()
        .unwrap_or_default();
    assert_eq!(got, expected, "stop {stop:?}");
    assert_eq!(response.choices[0].finish_reason, Some(FinishReason::Stop));
    let (streamed, finish, _) = stream_text(stopped).await;
    assert_eq!(streamed, expected);
    assert_eq!(finish, Some(FinishReason::Stop));
}

#[tokio::test]
async fn same_seed_gives_the_same_answer() {
    let mut req = request("Invent a name for a cat.", 16);
    req.temperature = Some(1.0);
    req.seed = Some(1234);
    let a = client().chat().create(req.clone()).await.expect("first");
    let b = client().chat().create(req.clone()).await.expect("second");
    assert_eq!(a.choices[0].message.content, b.choices[0].message.content);
}

#[tokio::test]
async fn concurrent_requests_are_all_answered() {
    let questions = [
        "What is 2 + 2?",
        "Name a fruit.",
        "Say hello.",
        "What colour is the sky?",
        "Name a planet.",
        "What is ice made of?",
    ];
    let tasks: Vec<_> = questions
        .iter()
        .map(|q| {
            let req = request(q, 12);
            tokio::spawn(async move { client().chat().create(req).await })
        })
        .collect();
    for task in tasks {
        let response = task.await.unwrap().expect("answered");
        let usage = response.usage.expect("usage");
        assert!(usage.completion_tokens >= 1);
    }
}

#[tokio::test]
async fn model_may_be_omitted() {
    let (status, body) = post_raw(
        "/v1/chat/completions",
        r#"{"messages":[{"role":"user","content":"Hi"}],"max_tokens":4,"temperature":0}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
}

#[tokio::test]
async fn a_client_that_disconnects_frees_the_engine() {
    let cancelled = |h: &serde_json::Value| h["models"][0]["engine"]["cancelled"].as_u64().unwrap();
    let before = cancelled(&get_json("/health").await.1);
    let req = request("Write a very long essay about the history of Rome.", 1000);
    let mut stream = client()
        .chat()
        .create_stream(req)
        .await
        .expect("stream opens");
    // Read a little, then hang up.
    for _ in 0..3 {
        stream.next().await.expect("a chunk").expect("chunk parses");
    }
    drop(stream);
    // The engine notices between steps and retires the request long before its 1000 tokens
    // (minutes at this model's speed); wait a bounded while for it to count the cancel.
    let mut freed = false;
    for _ in 0..600 {
        if cancelled(&get_json("/health").await.1) > before {
            freed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(freed, "the abandoned request was not cancelled");
}

#[tokio::test]
async fn models_lists_the_catalog() {
    let models = client().models().list().await.expect("models");
    let ids: Vec<&str> = models.data.iter().map(|m| m.id.as_str()).collect();
    assert!(ids.contains(&MODEL), "{ids:?}");
    assert!(
        ids.len() >= 2,
        "catalog lists more than the default: {ids:?}"
    );
    let (status, body) = get_json("/v1/models").await;
    assert_eq!(status, 200);
    let default = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == MODEL)
        .unwrap();
    assert_eq!(default["loaded"], true);
    assert_eq!(default["tier"], "tier_1");
}

#[tokio::test]
async fn health_reports_ok() {
    let (status, body) = get_json("/health").await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["models"][0]["id"], MODEL);
    // The test server names no --device: a CPU-only build runs on the CPU.
    #[cfg(not(any(feature = "cuda", feature = "metal")))]
    assert_eq!(body["device"], "cpu");
    let device = body["device"].as_str().expect("a device name");
    assert!(
        device.parse::<wick::device::DeviceChoice>().is_ok(),
        "{device}"
    );
}
