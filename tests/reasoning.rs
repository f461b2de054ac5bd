//! Thinking models: their thinking comes back as `reasoning_content` (chat) and as a reasoning
//! item (Responses), never as the answer; `chat_template_kwargs` and `reasoning_effort` reach
//! the template; earlier thinking is accepted under either name. The model is SmolLM2 served
//! with real thinking templates (tests/common/thinking.rs); what it "thinks" is whatever it
//! writes after a prompt that opens the think block, checked against the raw completion of
//! the same prompt.

mod common;

use std::net::SocketAddr;

use async_openai::types::responses::{
    CreateResponse, OutputItem, ReasoningItemContent, ResponseStreamEvent,
};
use common::thinking::{self, DECIDES, OPENS, PLAIN};
use futures::StreamExt;
use serde_json::{json, Value};
use wick::reasoning::{self as think, Start};
use wick::template::{ChatMessage, ChatTemplate, TemplateVars};

const QUESTION: &str = "What is the capital of France?";
/// A question SmolLM2 answers at length, so a small budget runs out.
const LONG: &str = "Tell me a long story about a brave knight and a dragon.";

fn addr() -> SocketAddr {
    thinking::server()
}

async fn post(path: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{}{path}", addr()))
        .json(body)
        .send()
        .await
        .expect("request sent");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON body"))
}

/// The `data:` payloads of an SSE response, `[DONE]` left out.
async fn post_sse(path: &str, body: &Value) -> Vec<Value> {
    let r = reqwest::Client::new()
        .post(format!("http://{}{path}", addr()))
        .json(body)
        .send()
        .await
        .expect("request sent");
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await.expect("body");
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("chunk is JSON"))
        .collect()
}

/// Qwen3.5's prompt for one user question, with these template variables.
fn prompt(question: &str, vars: &TemplateVars) -> String {
    let template = ChatTemplate::new(&thinking::template("qwen3.5-4b.jinja"), None, None).unwrap();
    template
        .render_with(&[ChatMessage::new("user", question)], None, true, vars)
        .unwrap()
}

/// What the model writes after `prompt`, greedily (the raw completions endpoint, no template).
async fn raw_completion(prompt: &str, max_tokens: u32) -> String {
    let (status, body) = post(
        "/v1/completions",
        &json!({ "model": OPENS, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0 }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["choices"][0]["text"].as_str().unwrap().to_string()
}

fn chat_body(model: &str, max_tokens: u32, extra: Value) -> Value {
    ask(model, QUESTION, max_tokens, extra)
}

fn ask(model: &str, question: &str, max_tokens: u32, extra: Value) -> Value {
    let mut body = json!({
        "model": model, "max_tokens": max_tokens, "temperature": 0,
        "messages": [{ "role": "user", "content": question }],
    });
    if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
        b.extend(e);
    }
    body
}

#[tokio::test]
async fn a_prompt_that_opens_the_block_makes_the_whole_output_thinking() {
    let mut vars = TemplateVars::new();
    vars.insert("enable_thinking".into(), true.into());
    let opened = prompt(LONG, &vars);
    assert!(
        opened.ends_with("<|im_start|>assistant\n<think>\n"),
        "{opened}"
    );
    let generated = raw_completion(&opened, 12).await;

    let (status, body) = post("/v1/chat/completions", &ask(OPENS, LONG, 12, json!({}))).await;
    assert_eq!(status, 200, "{body}");
    only_thought(&body, "length", &generated);
    // The budget ran out inside the block: every generated token was thinking.
    let usage = &body["usage"];
    assert_eq!(usage["completion_tokens"], 12);
    assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 12);

    // A model that ends its turn inside the block has still only thought.
    let generated = raw_completion(&prompt(QUESTION, &vars), 40).await;
    let (_, body) = post("/v1/chat/completions", &chat_body(OPENS, 40, json!({}))).await;
    only_thought(&body, "stop", &generated);
}

/// The answer is all thinking: no content, the reasoning exactly what the model wrote.
fn only_thought(body: &Value, finish: &str, generated: &str) {
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], finish, "{body}");
    assert_eq!(choice["message"]["content"], Value::Null, "{body}");
    assert_eq!(
        choice["message"]["reasoning_content"].as_str(),
        Some(generated.trim()),
        "{body}"
    );
}

#[tokio::test]
async fn streamed_thinking_is_reasoning_content_deltas_and_never_content() {
    let (_, whole) = post("/v1/chat/completions", &ask(OPENS, LONG, 10, json!({}))).await;
    let want = whole["choices"][0]["message"]["reasoning_content"]
        .as_str()
        .unwrap()
        .to_string();
    let body = ask(
        OPENS,
        LONG,
        10,
        json!({ "stream": true, "stream_options": { "include_usage": true } }),
    );
    let chunks = post_sse("/v1/chat/completions", &body).await;
    let mut thinking = String::new();
    for chunk in &chunks {
        let Some(choice) = chunk["choices"].get(0) else {
            continue;
        };
        let delta = &choice["delta"];
        assert!(
            delta["content"].is_null() || delta["content"] == "",
            "content in a thinking-only answer: {chunk}"
        );
        if let Some(t) = delta["reasoning_content"].as_str() {
            thinking.push_str(t);
        }
    }
    assert_eq!(thinking, want);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(
        usage["completion_tokens_details"]["reasoning_tokens"], 10,
        "{usage}"
    );
}

#[tokio::test]
async fn enable_thinking_false_closes_the_block_and_the_output_is_the_answer() {
    let mut vars = TemplateVars::new();
    vars.insert("enable_thinking".into(), false.into());
    let closed = prompt(QUESTION, &vars);
    assert!(closed.ends_with("<think>\n\n</think>\n\n"), "{closed}");
    let generated = raw_completion(&closed, 12).await;

    for extra in [
        json!({ "chat_template_kwargs": { "enable_thinking": false } }),
        // OpenAI's way of asking for no thinking.
        json!({ "reasoning_effort": "none" }),
    ] {
        let (status, body) = post("/v1/chat/completions", &chat_body(OPENS, 12, extra)).await;
        assert_eq!(status, 200, "{body}");
        let message = &body["choices"][0]["message"];
        assert_eq!(
            message["content"].as_str(),
            Some(generated.as_str()),
            "{body}"
        );
        assert!(message.get("reasoning_content").is_none(), "{body}");
        assert_eq!(
            body["usage"]["completion_tokens_details"]["reasoning_tokens"],
            0
        );
    }
    // An explicit kwarg wins over reasoning_effort.
    let extra =
        json!({ "reasoning_effort": "none", "chat_template_kwargs": { "enable_thinking": true } });
    let (_, body) = post("/v1/chat/completions", &chat_body(OPENS, 12, extra)).await;
    assert!(
        body["choices"][0]["message"]["reasoning_content"].is_string(),
        "{body}"
    );
}

#[tokio::test]
async fn a_model_left_to_open_the_block_itself_answers_as_before() {
    // Qwen3's hybrid template: SmolLM2 never writes <think>, so its answer is all content,
    // exactly the raw completion of the same prompt.
    let template = ChatTemplate::new(&thinking::template("qwen3-0.6b.jinja"), None, None).unwrap();
    let mut vars = TemplateVars::new();
    vars.insert("enable_thinking".into(), true.into());
    let prompt = template
        .render_with(&[ChatMessage::new("user", QUESTION)], None, true, &vars)
        .unwrap();
    assert!(prompt.ends_with("<|im_start|>assistant\n"), "{prompt}");
    let (_, raw) = post(
        "/v1/completions",
        &json!({ "model": DECIDES, "prompt": prompt, "max_tokens": 12, "temperature": 0 }),
    )
    .await;
    let (status, body) = post("/v1/chat/completions", &chat_body(DECIDES, 12, json!({}))).await;
    assert_eq!(status, 200, "{body}");
    let message = &body["choices"][0]["message"];
    assert_eq!(message["content"], raw["choices"][0]["text"], "{body}");
    assert!(message.get("reasoning_content").is_none(), "{body}");
}

#[tokio::test]
async fn a_model_that_does_not_think_has_no_reasoning_fields() {
    let (status, body) = post("/v1/chat/completions", &chat_body(PLAIN, 8, json!({}))).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["choices"][0]["message"]
        .get("reasoning_content")
        .is_none());
    assert!(
        body["usage"].get("completion_tokens_details").is_none()
            || body["usage"]["completion_tokens_details"].is_null()
    );
    // The fields are accepted (and ignored by a template that does not read them).
    let extra =
        json!({ "reasoning_effort": "high", "chat_template_kwargs": { "enable_thinking": true } });
    let (status, with) = post("/v1/chat/completions", &chat_body(PLAIN, 8, extra)).await;
    assert_eq!(status, 200, "{with}");
    assert_eq!(with["choices"][0]["message"], body["choices"][0]["message"]);
}

#[tokio::test]
async fn wrong_reasoning_fields_are_400s_that_name_the_field() {
    for (extra, param) in [
        (
            json!({ "chat_template_kwargs": "enable_thinking=false" }),
            "chat_template_kwargs",
        ),
        (
            json!({ "chat_template_kwargs": { "enable_thinking": "no" } }),
            "chat_template_kwargs.enable_thinking",
        ),
        (
            json!({ "chat_template_kwargs": { "messages": [] } }),
            "chat_template_kwargs.messages",
        ),
        (json!({ "reasoning_effort": 3 }), "reasoning_effort"),
        (json!({ "reasoning_effort": "extreme" }), "reasoning_effort"),
        (
            json!({ "messages": [
                { "role": "user", "content": "hi" },
                { "role": "assistant", "content": "x", "reasoning_content": ["a"] },
                { "role": "user", "content": "hi" }
            ] }),
            "messages[1].reasoning_content",
        ),
    ] {
        let (status, body) =
            post("/v1/chat/completions", &chat_body(OPENS, 4, extra.clone())).await;
        assert_eq!(status, 400, "{extra}: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        assert_eq!(body["error"]["param"], param, "{extra}: {body}");
    }
    let (status, body) = post(
        "/v1/responses",
        &json!({ "model": OPENS, "input": "hi", "reasoning": { "effort": 1 } }),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "reasoning.effort", "{body}");
}

#[tokio::test]
async fn earlier_thinking_is_accepted_under_both_names_and_reaches_the_template() {
    // After the last user turn, Qwen3.5's template writes an assistant turn's thinking into
    // the prompt, so the prompt grows by it.
    let history = |field: Option<&str>| {
        let mut assistant = json!({ "role": "assistant", "content": "Paris." });
        if let Some(field) = field {
            assistant[field] = json!("The capital of France is Paris, a well known fact.");
        }
        json!({ "messages": [{ "role": "user", "content": QUESTION }, assistant] })
    };
    let mut prompt_tokens = Vec::new();
    for field in [None, Some("reasoning_content"), Some("reasoning")] {
        let (status, body) =
            post("/v1/chat/completions", &chat_body(OPENS, 2, history(field))).await;
        assert_eq!(status, 200, "{body}");
        prompt_tokens.push(body["usage"]["prompt_tokens"].as_u64().unwrap());
    }
    assert!(prompt_tokens[1] > prompt_tokens[0] + 5, "{prompt_tokens:?}");
    assert_eq!(prompt_tokens[1], prompt_tokens[2], "{prompt_tokens:?}");
}

#[tokio::test]
async fn tools_and_formats_still_work_on_a_thinking_model() {
    let tools = json!([{ "type": "function", "function": {
        "name": "get_weather", "parameters": { "type": "object",
            "properties": { "city": { "type": "string" } }, "required": ["city"] } } }]);
    for extra in [
        json!({ "tools": tools }),
        json!({ "tools": tools, "tool_choice": "required" }),
        json!({ "response_format": { "type": "json_object" } }),
    ] {
        // Thinking first: within a small budget the model is still thinking.
        let (status, body) =
            post("/v1/chat/completions", &chat_body(OPENS, 8, extra.clone())).await;
        assert_eq!(status, 200, "{extra}: {body}");
        let message = &body["choices"][0]["message"];
        assert!(message["reasoning_content"].is_string(), "{body}");
        assert!(message.get("tool_calls").is_none() || message["tool_calls"].is_null());
        // Thinking switched off: the constrained answer comes at once.
        let mut off = extra.clone();
        off["chat_template_kwargs"] = json!({ "enable_thinking": false });
        let (status, body) = post("/v1/chat/completions", &chat_body(OPENS, 60, off)).await;
        assert_eq!(status, 200, "{extra}: {body}");
        let message = &body["choices"][0]["message"];
        assert!(message.get("reasoning_content").is_none(), "{body}");
        if extra.get("tool_choice").is_some() {
            assert_eq!(
                message["tool_calls"][0]["function"]["name"], "get_weather",
                "{body}"
            );
        }
        if extra.get("response_format").is_some() {
            let content = message["content"].as_str().unwrap();
            assert!(
                serde_json::from_str::<Value>(content).unwrap().is_object(),
                "{body}"
            );
        }
    }
}

/// The grammar of a constrained answer lets the model think first, ends the thinking at the
/// first `</think>`, and holds what follows to the original grammar.
#[test]
fn a_grammar_after_thinking_accepts_thinking_then_the_answer() {
    let model = common::load_smollm2(512);
    let tokenizer = &model.frontend.tokenizer;
    let compiler = wick::engine::GrammarCompiler::default();
    let json = wick::tools::json_grammar(&json!({ "type": "object",
        "properties": { "a": { "type": "integer" } }, "required": ["a"] }));
    // Walk `text`'s tokens through the grammar: whether each was allowed, and whether the
    // grammar is complete at the end.
    let walk = |start: Start, text: &str| -> (bool, bool) {
        let lark = think::grammar_after_thinking(&json, start);
        let mut c = compiler
            .compile(tokenizer, &lark)
            .expect("grammar compiles");
        for id in tokenizer.encode(text).unwrap() {
            let mut logits = vec![0.0f32; tokenizer.vocab_size()];
            c.mask(&mut logits).unwrap();
            if logits[id as usize] == f32::NEG_INFINITY {
                return (false, false);
            }
            c.commit(id).unwrap();
        }
        (true, c.is_finished())
    };
    let answer = "{\"a\": 1}";
    assert_eq!(
        walk(
            Start::Inside,
            &format!("Let me think {{a}}.</think>\n\n{answer}")
        ),
        (true, true)
    );
    // Inside the block, JSON is just thinking: the answer has not come yet.
    assert_eq!(walk(Start::Inside, answer), (true, false));
    // After </think> only the answer may follow.
    assert!(!walk(Start::Inside, "x</think>\n\nhello").0);
    assert_eq!(walk(Start::Before, answer), (true, true));
    assert_eq!(
        walk(Start::Before, &format!("<think>\nhm</think>\n\n{answer}")),
        (true, true)
    );
    assert!(!walk(Start::Before, "hello").0);
}

#[tokio::test]
async fn responses_returns_a_reasoning_item_before_the_message() {
    let client = common::client_for(addr());
    let request = |stream: bool| {
        let mut r = common::sdk_request::<CreateResponse>(json!({
            "model": OPENS, "input": LONG, "max_output_tokens": 10, "temperature": 0,
            "store": false
        }));
        r.stream = stream.then_some(true);
        r
    };
    let response = client
        .responses()
        .create(request(false))
        .await
        .expect("response");
    let thought = match &response.output[0] {
        OutputItem::Reasoning(item) => {
            let content = item.content.as_ref().expect("reasoning content");
            let ReasoningItemContent::ReasoningText(t) = &content[0];
            assert!(item.id.as_deref().unwrap().starts_with("rs_"));
            t.text.clone()
        }
        other => panic!("expected a reasoning item first, got {other:?}"),
    };
    assert!(!thought.is_empty());
    assert!(
        matches!(response.output[1], OutputItem::Message(_)),
        "{:?}",
        response.output
    );
    assert_eq!(response.output_text().unwrap_or_default(), "");
    let usage = response.usage.expect("usage");
    assert_eq!(
        usage.output_tokens_details.reasoning_tokens,
        usage.output_tokens
    );

    let mut stream = client
        .responses()
        .create_stream(request(true))
        .await
        .expect("stream opens");
    let (mut kinds, mut deltas, mut done, mut last) = (Vec::new(), String::new(), None, None);
    while let Some(event) = stream.next().await {
        let event = event.expect("event parses");
        let value = serde_json::to_value(&event).unwrap();
        kinds.push(value["type"].as_str().unwrap().to_string());
        match event {
            ResponseStreamEvent::ResponseReasoningTextDelta(d) => {
                assert_eq!(d.output_index, 0);
                deltas.push_str(&d.delta)
            }
            ResponseStreamEvent::ResponseReasoningTextDone(d) => done = Some(d.text),
            ResponseStreamEvent::ResponseOutputTextDelta(d) => panic!("answer text {d:?}"),
            ResponseStreamEvent::ResponseIncomplete(r) => last = Some(r.response),
            _ => {}
        }
    }
    assert_eq!(deltas, thought);
    assert_eq!(done.as_deref(), Some(thought.as_str()));
    assert_eq!(
        &kinds[..4],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added"
        ]
    );
    let first_message = kinds
        .iter()
        .rposition(|k| k == "response.output_item.added")
        .unwrap();
    let reasoning_done = kinds
        .iter()
        .position(|k| k == "response.reasoning_text.done")
        .unwrap();
    assert!(reasoning_done < first_message, "{kinds:?}");
    let last = last.expect("incomplete: the budget ran out while thinking");
    assert_eq!(last.output.len(), 2, "{:?}", last.output);
    match &last.output[0] {
        OutputItem::Reasoning(item) => {
            let ReasoningItemContent::ReasoningText(t) = &item.content.as_ref().unwrap()[0];
            assert_eq!(t.text, thought);
        }
        other => panic!("expected a reasoning item first, got {other:?}"),
    }
    assert!(matches!(last.output[1], OutputItem::Message(_)));
}

#[tokio::test]
async fn responses_passes_the_thinking_switches_and_keeps_earlier_thinking() {
    for extra in [
        json!({ "reasoning": { "effort": "none" } }),
        json!({ "chat_template_kwargs": { "enable_thinking": false } }),
    ] {
        let mut body = json!({ "model": OPENS, "input": QUESTION, "max_output_tokens": 6,
            "temperature": 0 });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, first) = post("/v1/responses", &body).await;
        assert_eq!(status, 200, "{first}");
        assert_eq!(first["output"][0]["type"], "message", "{first}");
        assert_eq!(
            first["usage"]["output_tokens_details"]["reasoning_tokens"],
            0
        );
    }
    // A stored thinking answer continues, and reasoning items are accepted as input.
    let (status, first) = post(
        "/v1/responses",
        &json!({ "model": OPENS, "input": QUESTION, "max_output_tokens": 6, "temperature": 0 }),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["output"][0]["type"], "reasoning");
    let (status, second) = post(
        "/v1/responses",
        &json!({ "model": OPENS, "previous_response_id": first["id"], "input": "And Spain?",
            "max_output_tokens": 4 }),
    )
    .await;
    assert_eq!(status, 200, "{second}");
    let mut replay = vec![json!({ "role": "user", "content": QUESTION })];
    replay.extend(first["output"].as_array().unwrap().iter().cloned());
    replay.push(json!({ "role": "user", "content": "And Spain?" }));
    let (status, third) = post(
        "/v1/responses",
        &json!({ "model": OPENS, "input": replay, "max_output_tokens": 4 }),
    )
    .await;
    assert_eq!(status, 200, "{third}");
}
