//! POST /v1/completions through a real OpenAI client (async-openai's completions API):
//! raw prompts with no chat template, several prompts and `n`, echo, stop, streaming,
//! legacy logprobs, and `suffix` (fill-in-the-middle on Qwen2.5-Coder, a 400 elsewhere).

mod common;

use async_openai::types::completions::{CreateCompletionRequest, CreateCompletionResponse};
use common::{client, post_raw};
use futures::StreamExt;
use serde_json::{json, Value};

const MODEL: &str = "smollm2-135m-instruct";

async fn create(body: Value) -> CreateCompletionResponse {
    client()
        .completions()
        .create(common::sdk_request(body))
        .await
        .expect("completion answers")
}

#[tokio::test]
async fn a_raw_prompt_gets_no_chat_template_and_echo_returns_it() {
    let prompt = "The capital of France is";
    let r =
        create(json!({ "prompt": prompt, "max_tokens": 5, "temperature": 0, "echo": true })).await;
    assert_eq!(r.object, "text_completion");
    let usage = r.usage.expect("usage");
    // Six words of plain text: a chat template would add a dozen tokens or more.
    assert!(
        usage.prompt_tokens <= 8,
        "prompt tokens: {}",
        usage.prompt_tokens
    );
    let text = &r.choices[0].text;
    assert!(text.starts_with(prompt), "{text:?}");
    assert!(
        text.len() > prompt.len(),
        "something was generated: {text:?}"
    );
    // The default budget is OpenAI's 16 tokens.
    let default = create(json!({ "prompt": prompt, "temperature": 0 })).await;
    assert!(default.usage.unwrap().completion_tokens <= 16);
    assert!(text[prompt.len()..].starts_with(&default.choices[0].text[..3]));
}

#[tokio::test]
async fn several_prompts_and_n_give_choices_in_order() {
    let r = create(json!({
        "prompt": ["One, two, three,", "Monday, Tuesday,"], "n": 2, "max_tokens": 4,
        "temperature": 0, "stop": "\n"
    }))
    .await;
    assert_eq!(r.choices.len(), 4);
    for (i, c) in r.choices.iter().enumerate() {
        assert_eq!(c.index as usize, i);
        assert!(!c.text.contains('\n'), "stop string: {:?}", c.text);
    }
    // Greedy: the two choices of one prompt agree; the prompts differ.
    assert_eq!(r.choices[0].text, r.choices[1].text);
    assert_eq!(r.choices[2].text, r.choices[3].text);
    assert_ne!(r.choices[0].text, r.choices[2].text);
}

#[tokio::test]
async fn streaming_and_legacy_logprobs() {
    let body = json!({
        "prompt": "Once upon a time", "max_tokens": 6, "temperature": 0, "logprobs": 3,
        "stream_options": { "include_usage": true }
    });
    let whole = create(body.clone()).await;
    let logprobs = whole.choices[0].logprobs.as_ref().expect("logprobs");
    let n = logprobs.tokens.len();
    assert_eq!(n as u32, whole.usage.unwrap().completion_tokens);
    assert_eq!(logprobs.tokens.concat(), whole.choices[0].text);
    assert_eq!(logprobs.token_logprobs.len(), n);
    assert_eq!(logprobs.text_offset[0], 0);
    for i in 0..n {
        let chosen = logprobs.token_logprobs[i].unwrap();
        let top = logprobs.top_logprobs[i].as_object().unwrap();
        assert_eq!(top.len(), 3);
        let best = top
            .values()
            .map(|v| v.as_f64().unwrap())
            .fold(f64::MIN, f64::max);
        assert!(
            (best - f64::from(chosen)).abs() < 1e-6,
            "greedy picks the top"
        );
        assert_eq!(top[&logprobs.tokens[i]].as_f64().unwrap(), best);
        if i > 0 {
            let expected = logprobs.text_offset[i - 1] as usize + logprobs.tokens[i - 1].len();
            assert_eq!(logprobs.text_offset[i] as usize, expected);
        }
    }

    let mut req: CreateCompletionRequest = common::sdk_request(body);
    req.stream = Some(true);
    let mut stream = client()
        .completions()
        .create_stream(req)
        .await
        .expect("stream opens");
    let (mut text, mut tokens, mut finish, mut usage) = (String::new(), Vec::new(), None, None);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("chunk parses");
        assert_eq!(chunk.object, "text_completion");
        usage = usage.or(chunk.usage);
        for c in chunk.choices {
            text.push_str(&c.text);
            if let Some(l) = c.logprobs {
                tokens.extend(l.tokens);
            }
            finish = finish.or(c.finish_reason);
        }
    }
    assert_eq!(text, whole.choices[0].text, "streamed greedy text = whole");
    assert_eq!(tokens, logprobs.tokens);
    assert!(finish.is_some());
    assert_eq!(usage.expect("usage chunk").completion_tokens, n as u32);
}

#[tokio::test]
async fn suffix_needs_a_fill_in_the_middle_model() {
    let (status, body) = post_raw(
        "/v1/completions",
        &json!({ "model": MODEL, "prompt": "def add(a, b):", "suffix": "    return c" })
            .to_string(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "suffix");

    // Qwen2.5-Coder has FIM tokens: the middle it writes uses what the suffix needs.
    let r = create(json!({
        "model": "qwen2.5-coder-0.5b-instruct",
        "prompt": "def add(a, b):\n    c = ",
        "suffix": "\n    return c\n",
        "max_tokens": 8, "temperature": 0, "stop": "\n"
    }))
    .await;
    let middle = &r.choices[0].text;
    assert!(middle.contains('a') && middle.contains('b'), "{middle:?}");
}

#[tokio::test]
async fn bad_completions_requests_are_400s() {
    for (body, param) in [
        (json!({ "prompt": [] }), "prompt"),
        (json!({ "prompt": [[99999999]] }), "prompt"),
        (json!({ "prompt": "hi", "logprobs": 21 }), "logprobs"),
        (json!({ "prompt": "hi", "n": 0 }), "n"),
        (json!({ "prompt": 5 }), "prompt"),
        (json!({ "prompt": "hi", "max_tokens": 99999 }), "prompt"),
    ] {
        let (status, answer) = post_raw("/v1/completions", &body.to_string()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["param"], param, "{body}");
    }
    // Token-id prompts are accepted, and unknown fields ignored.
    let (status, answer) = post_raw(
        "/v1/completions",
        &json!({ "prompt": [[28, 29]], "max_tokens": 2, "some_new_field": true }).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
}
