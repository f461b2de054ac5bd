//! The Responses API through a real OpenAI client (async-openai's responses API): string and
//! item input, instructions, max_output_tokens, usage, the streaming event sequence, store /
//! previous_response_id / GET / DELETE, function_call and function_call_output items,
//! tools and text.format accepted, and the /v2 routing fields.

mod common;

use async_openai::types::responses::{
    CreateResponse, OutputItem, Response, ResponseStreamEvent, Status,
};
use common::{base_url, client, get_json, post_raw};
use futures::StreamExt;
use serde_json::{json, Value};

const MODEL: &str = "smollm2-135m-instruct";

async fn create(body: Value) -> Response {
    client()
        .responses()
        .create(common::sdk_request(body))
        .await
        .expect("response answers")
}

#[tokio::test]
async fn string_input_with_instructions_and_usage() {
    let r = create(json!({
        "input": "What is the capital of France?",
        "instructions": "Answer in one word.",
        "max_output_tokens": 6, "temperature": 0
    }))
    .await;
    assert_eq!(r.object, "response");
    assert!(r.id.starts_with("resp_"));
    let text = r.output_text().expect("output text");
    assert!(!text.is_empty());
    let usage = r.usage.expect("usage");
    assert!(usage.input_tokens > 10 && usage.output_tokens >= 1 && usage.output_tokens <= 6);
    assert_eq!(usage.total_tokens, usage.input_tokens + usage.output_tokens);
    assert!(matches!(r.status, Status::Completed | Status::Incomplete));
    assert!(matches!(r.output[0], OutputItem::Message(_)));
    // The same through chat gives the same greedy text: Responses is a layer over chat.
    let (status, chat) = post_raw(
        "/v1/chat/completions",
        &json!({
            "model": MODEL, "max_tokens": 6, "temperature": 0,
            "messages": [
                { "role": "system", "content": "Answer in one word." },
                { "role": "user", "content": "What is the capital of France?" }
            ]
        })
        .to_string(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(chat["choices"][0]["message"]["content"], json!(text));
    assert_eq!(chat["usage"]["prompt_tokens"], json!(usage.input_tokens));
}

#[tokio::test]
async fn streaming_follows_the_documented_event_sequence() {
    let mut req = common::sdk_request::<CreateResponse>(json!({
        "input": [{ "role": "user", "content": [{ "type": "input_text", "text": "Say hello." }] }],
        "max_output_tokens": 8, "temperature": 0, "store": false
    }));
    req.stream = Some(true);
    let mut stream = client()
        .responses()
        .create_stream(req)
        .await
        .expect("stream opens");
    let (mut kinds, mut deltas, mut done_text, mut last) = (Vec::new(), String::new(), None, None);
    let mut sequence = Vec::new();
    while let Some(event) = stream.next().await {
        let event = event.expect("event parses");
        let value = serde_json::to_value(&event).unwrap();
        kinds.push(value["type"].as_str().unwrap().to_string());
        sequence.push(value["sequence_number"].as_u64().unwrap());
        match event {
            ResponseStreamEvent::ResponseOutputTextDelta(d) => deltas.push_str(&d.delta),
            ResponseStreamEvent::ResponseOutputTextDone(d) => done_text = Some(d.text),
            ResponseStreamEvent::ResponseCompleted(c) => last = Some(c.response),
            ResponseStreamEvent::ResponseIncomplete(c) => last = Some(c.response),
            _ => {}
        }
    }
    let n = kinds.len();
    assert_eq!(
        &kinds[..4],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added"
        ]
    );
    assert!(kinds[4..n - 4]
        .iter()
        .all(|k| k == "response.output_text.delta"));
    assert!(n > 8, "at least one delta");
    assert_eq!(
        &kinds[n - 4..n - 1],
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done"
        ]
    );
    assert!(kinds[n - 1] == "response.completed" || kinds[n - 1] == "response.incomplete");
    assert_eq!(sequence, (0..n as u64).collect::<Vec<_>>());
    assert_eq!(done_text.as_deref(), Some(deltas.as_str()));
    let last = last.expect("final response");
    assert_eq!(last.output_text().as_deref(), Some(deltas.as_str()));
    assert!(last.usage.unwrap().output_tokens >= 1);
    // store: false keeps nothing.
    let (status, _) = get_json(&format!("/v1/responses/{}", last.id)).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn stored_responses_continue_and_can_be_fetched_and_deleted() {
    let first = create(json!({
        "input": "My name is Ada. Remember it.", "max_output_tokens": 8, "temperature": 0
    }))
    .await;
    let fetched = client()
        .responses()
        .retrieve(&first.id)
        .await
        .expect("stored");
    assert_eq!(fetched.output_text(), first.output_text());

    let second = create(json!({
        "input": "What is my name?", "previous_response_id": first.id,
        "max_output_tokens": 8, "temperature": 0
    }))
    .await;
    // The continuation saw the whole conversation: its prompt is longer than the question's.
    let alone = create(json!({ "input": "What is my name?", "max_output_tokens": 1 })).await;
    assert!(
        second.usage.unwrap().input_tokens > alone.usage.unwrap().input_tokens + 10,
        "the earlier turns are in the prompt"
    );
    assert_eq!(
        second.previous_response_id.as_deref(),
        Some(first.id.as_str())
    );

    let deleted = client()
        .responses()
        .delete(&first.id)
        .await
        .expect("deleted");
    assert!(deleted.deleted);
    let (status, body) = get_json(&format!("/v1/responses/{}", first.id)).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = post_raw(
        "/v1/responses",
        &json!({ "input": "hi", "previous_response_id": first.id }).to_string(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "previous_response_id");
}

#[tokio::test]
async fn function_call_items_tools_and_text_format_are_accepted() {
    let r = create(json!({
        "input": [
            { "role": "user", "content": "What is the weather in Paris?" },
            { "type": "function_call", "call_id": "call_1", "name": "get_weather",
              "arguments": "{\"city\":\"Paris\"}" },
            { "type": "function_call_output", "call_id": "call_1", "output": "22 C and sunny" }
        ],
        "tools": [{
            "type": "function", "name": "get_weather", "description": "Weather of a city",
            "parameters": { "type": "object", "properties": { "city": { "type": "string" } },
                            "required": ["city"] }
        }],
        "tool_choice": "auto",
        "text": { "format": { "type": "json_schema", "name": "weather",
                              "schema": { "type": "object" }, "strict": false } },
        "max_output_tokens": 12, "temperature": 0
    }))
    .await;
    assert!(!r.output.is_empty());
    // The tool result reached the prompt: it is longer than the question alone.
    let alone =
        create(json!({ "input": "What is the weather in Paris?", "max_output_tokens": 1 })).await;
    assert!(r.usage.unwrap().input_tokens > alone.usage.unwrap().input_tokens);
    assert_eq!(r.tools.as_ref().map(Vec::len), Some(1), "tools are echoed");
}

#[tokio::test]
async fn v2_routing_fields_and_bad_input() {
    let (status, body) = post_raw(
        "/v1/responses",
        &json!({ "auto_routing": true, "input": "Hi!", "max_output_tokens": 2, "store": false })
            .to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["routing_mechanism"], "auto_routing");
    assert!(body["routing_tier"].is_string());
    let _: Response = serde_json::from_value(body).expect("still an SDK-shaped response");

    for (body, param) in [
        (json!({ "input": [] }), "input"),
        (
            json!({ "input": [{ "type": "web_search_call", "id": "ws_1" }] }),
            "input[0].type",
        ),
        (json!({ "input": [{ "role": "user" }] }), "input[0].content"),
        (json!({ "input": "hi", "temperature": 3 }), "temperature"),
        (
            json!({ "input": "hi", "auto_routing": true, "model": MODEL }),
            "auto_routing, model",
        ),
    ] {
        let (status, answer) = post_raw("/v1/responses", &body.to_string()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["param"], param, "{body}");
    }
    let response = reqwest::Client::new()
        .delete(format!("{}/v1/responses/resp_nope", base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn a_named_tool_comes_back_as_a_function_call_item_plain_and_streamed() {
    let request = json!({
        "model": MODEL,
        "input": "What is the weather in Paris?",
        "tools": [{
            "type": "function", "name": "get_weather", "description": "Weather of a city",
            "parameters": { "type": "object", "properties": { "city": { "type": "string" } },
                            "required": ["city"] }
        }],
        "tool_choice": { "type": "function", "name": "get_weather" },
        "max_output_tokens": 40, "temperature": 0, "store": false
    });
    let (status, body) = post_raw("/v1/responses", &request.to_string()).await;
    assert_eq!(status, 200, "{body}");
    let calls: Vec<&Value> = body["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["type"] == "function_call")
        .collect();
    assert_eq!(calls.len(), 1, "{body}");
    assert_eq!(calls[0]["name"], "get_weather");
    assert!(calls[0]["call_id"]
        .as_str()
        .is_some_and(|id| !id.is_empty()));
    let arguments: Value =
        serde_json::from_str(calls[0]["arguments"].as_str().unwrap()).expect("JSON arguments");
    assert!(arguments["city"].is_string(), "{arguments}");
    let _: Response = serde_json::from_value(body.clone()).expect("an SDK-shaped response");

    // Streamed: the call arrives as its own output item with its arguments events.
    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    let text = reqwest::Client::new()
        .post(format!("{}/v1/responses", base_url()))
        .json(&streamed)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).expect("JSON event"))
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let done = events
        .iter()
        .find(|e| e["type"] == "response.function_call_arguments.done")
        .unwrap_or_else(|| panic!("no arguments event in {kinds:?}"));
    assert_eq!(
        done["arguments"], calls[0]["arguments"],
        "greedy: the same call"
    );
    assert!(
        !text.contains("<tool_call>"),
        "no call markup leaks: {text}"
    );
    assert_eq!(kinds.last(), Some(&"response.completed"), "{kinds:?}");
}

/// With keys on, a stored response belongs to the key that created it: for another key it
/// does not exist (GET and DELETE 404, `previous_response_id` 400), through the official
/// client with each key.
#[tokio::test]
async fn a_stored_response_is_read_and_continued_only_with_the_key_that_made_it() {
    let mut args = wick::config::ServeArgs::local_ephemeral();
    args.ctx_size = Some(1024);
    args.service.api_keys = vec!["key-alice".into(), "key-bob".into()];
    let addr = common::start_server(args);
    let client_with = |key: &str| {
        async_openai::Client::with_config(
            async_openai::config::OpenAIConfig::new()
                .with_api_base(format!("http://{addr}/v1"))
                .with_api_key(key),
        )
    };
    let (alice, bob) = (client_with("key-alice"), client_with("key-bob"));
    let made = alice
        .responses()
        .create(common::sdk_request(json!({
            "input": "Say hello.", "max_output_tokens": 4, "store": true,
        })))
        .await
        .expect("alice's response");
    let raw = |key: &'static str, method: reqwest::Method| {
        let id = made.id.clone();
        async move {
            reqwest::Client::new()
                .request(method, format!("http://{addr}/v1/responses/{id}"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(raw("key-bob", reqwest::Method::GET).await, 404);
    assert_eq!(raw("key-bob", reqwest::Method::DELETE).await, 404);
    let continued = bob
        .responses()
        .create(common::sdk_request(json!({
            "input": "And again.", "max_output_tokens": 4,
            "previous_response_id": made.id,
        })))
        .await;
    match continued {
        Err(async_openai::error::OpenAIError::ApiError(e)) => {
            assert_eq!(
                e.api_error.code.as_deref(),
                Some("previous_response_not_found"),
                "{e:?}"
            )
        }
        other => panic!("bob continued alice's response: {other:?}"),
    }
    // Alice still has it, whole.
    let fetched = alice
        .responses()
        .retrieve(&made.id)
        .await
        .expect("alice reads hers");
    assert_eq!(fetched.id, made.id);
    assert_eq!(raw("key-alice", reqwest::Method::DELETE).await, 200);
}
