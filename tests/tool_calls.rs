//! Tool calling and structured output with the real models, through a real OpenAI client:
//! forced calls whose arguments validate against their schema at temperature 1 across seeds
//! (SmolLM2-135M, whose template knows no tools, and Qwen2.5-Coder-0.5B, whose template does),
//! `tool_choice: none`, streamed call deltas, a full call → result → answer round trip,
//! `parallel_tool_calls`, JSON modes, every bad-input error, and /v2's routing mechanisms.

// `max_tokens` and `seed` are deprecated in OpenAI's schema but still what most clients send.
#![allow(deprecated)]

mod common;

use async_openai::types::chat::{
    ChatCompletionMessageToolCall, ChatCompletionMessageToolCalls, ChatCompletionNamedToolChoice,
    ChatCompletionRequestAssistantMessageArgs, ChatCompletionRequestMessage,
    ChatCompletionRequestToolMessageArgs, ChatCompletionRequestUserMessageArgs, ChatCompletionTool,
    ChatCompletionToolChoiceOption, ChatCompletionTools, CreateChatCompletionRequest,
    CreateChatCompletionRequestArgs, CreateChatCompletionResponse, FinishReason, FunctionName,
    FunctionObject, ResponseFormat, ResponseFormatJsonSchema, ToolChoiceOptions,
};
use futures::StreamExt;
use serde_json::{json, Value};

use common::{client, post_raw};

const SMOL: &str = "smollm2-135m-instruct";
const QWEN: &str = "qwen2.5-coder-0.5b-instruct";

fn weather_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "city": { "type": "string", "maxLength": 40 },
            "unit": { "type": "string", "enum": ["celsius", "fahrenheit"] }
        },
        "required": ["city", "unit"],
        "additionalProperties": false
    })
}

fn time_schema() -> Value {
    json!({
        "type": "object",
        "properties": { "timezone": { "type": "string", "maxLength": 40 } },
        "required": ["timezone"]
    })
}

fn tool(name: &str, description: &str, schema: Value) -> ChatCompletionTools {
    ChatCompletionTools::Function(ChatCompletionTool {
        function: FunctionObject {
            name: name.into(),
            description: Some(description.into()),
            parameters: Some(schema),
            strict: None,
        },
    })
}

fn tools() -> Vec<ChatCompletionTools> {
    vec![
        tool("get_weather", "Current weather in a city", weather_schema()),
        tool("get_time", "Current time in a timezone", time_schema()),
    ]
}

fn schema_of(name: &str) -> Value {
    match name {
        "get_weather" => weather_schema(),
        "get_time" => time_schema(),
        other => panic!("the model called a tool that was not offered: {other}"),
    }
}

fn user(text: &str) -> ChatCompletionRequestMessage {
    ChatCompletionRequestUserMessageArgs::default()
        .content(text)
        .build()
        .unwrap()
        .into()
}

fn named(name: &str) -> ChatCompletionToolChoiceOption {
    ChatCompletionToolChoiceOption::Function(ChatCompletionNamedToolChoice {
        function: FunctionName { name: name.into() },
    })
}

fn tool_request(
    model: &str,
    messages: Vec<ChatCompletionRequestMessage>,
    choice: ChatCompletionToolChoiceOption,
    seed: i64,
) -> CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model(model)
        .messages(messages)
        .tools(tools())
        .tool_choice(choice)
        .temperature(1.0)
        .seed(seed)
        // Room for a few parallel calls: `required` lets the 135M model call the tools up to
        // four times here (110 tokens at seed 2), and a budget that cuts the last call ends
        // the answer with `length` however valid the calls were.
        .max_tokens(256u32)
        .build()
        .unwrap()
}

fn assert_valid(schema: &Value, instance: &Value) {
    if let Err(e) = jsonschema::validate(schema, instance) {
        panic!("{instance} does not validate against {schema}: {e}");
    }
}

/// The calls of an answer, each checked: a call id, a function that was offered, arguments
/// that parse and validate against that function's schema, `finish_reason: tool_calls`.
fn checked_calls(r: &CreateChatCompletionResponse) -> Vec<(String, Value)> {
    let choice = &r.choices[0];
    assert_eq!(choice.finish_reason, Some(FinishReason::ToolCalls), "{r:?}");
    let calls = choice.message.tool_calls.as_ref().expect("tool_calls");
    assert!(!calls.is_empty());
    assert!(
        choice
            .message
            .content
            .as_deref()
            .is_none_or(|c| !c.contains("tool_call")),
        "no call text in content: {r:?}"
    );
    calls
        .iter()
        .map(|c| {
            let ChatCompletionMessageToolCalls::Function(c) = c else {
                panic!("not a function call: {c:?}")
            };
            assert!(c.id.starts_with("call_"), "{c:?}");
            let args: Value = serde_json::from_str(&c.function.arguments)
                .unwrap_or_else(|e| panic!("arguments are not JSON ({e}): {c:?}"));
            assert_valid(&schema_of(&c.function.name), &args);
            (c.function.name.clone(), args)
        })
        .collect()
}

#[tokio::test]
async fn forced_calls_always_validate_on_the_135m_model() {
    let ask = || vec![user("What is the weather like in Paris right now?")];
    for seed in 1..=4 {
        let r = client()
            .chat()
            .create(tool_request(
                SMOL,
                ask(),
                ChatCompletionToolChoiceOption::Mode(ToolChoiceOptions::Required),
                seed,
            ))
            .await
            .expect("required call");
        checked_calls(&r);

        let r = client()
            .chat()
            .create(tool_request(SMOL, ask(), named("get_time"), seed))
            .await
            .expect("named call");
        let calls = checked_calls(&r);
        assert_eq!(calls.len(), 1, "a named choice makes exactly one call");
        assert_eq!(calls[0].0, "get_time");
    }
}

#[tokio::test]
async fn tool_choice_none_answers_in_text() {
    let r = client()
        .chat()
        .create(tool_request(
            SMOL,
            vec![user("Say hello.")],
            ChatCompletionToolChoiceOption::Mode(ToolChoiceOptions::None),
            1,
        ))
        .await
        .expect("answer");
    let choice = &r.choices[0];
    assert!(choice.message.tool_calls.is_none(), "{r:?}");
    assert_ne!(choice.finish_reason, Some(FinishReason::ToolCalls));
    assert!(choice
        .message
        .content
        .as_deref()
        .is_some_and(|c| !c.trim().is_empty()));
}

/// Streams a request and reassembles its calls by index, checking OpenAI's delta order: the
/// first delta of a call has its id, type and name; later ones only argument fragments.
async fn streamed_calls(
    req: CreateChatCompletionRequest,
) -> (String, Vec<(String, String)>, FinishReason) {
    let mut stream = client().chat().create_stream(req).await.expect("stream");
    let (mut content, mut calls, mut finish) =
        (String::new(), Vec::<(String, String)>::new(), None);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("chunk parses");
        for choice in chunk.choices {
            if let Some(c) = choice.delta.content {
                content.push_str(&c);
            }
            for d in choice.delta.tool_calls.unwrap_or_default() {
                let f = d.function.expect("function delta");
                let index = d.index as usize;
                if index == calls.len() {
                    assert!(d.id.is_some_and(|id| id.starts_with("call_")));
                    assert!(d.r#type.is_some());
                    calls.push((
                        f.name.expect("a new call names its function"),
                        String::new(),
                    ));
                } else {
                    assert_eq!(index + 1, calls.len(), "deltas of the latest call");
                    assert!(d.id.is_none() && f.name.is_none());
                }
                calls[index].1.push_str(&f.arguments.unwrap_or_default());
            }
            finish = finish.or(choice.finish_reason);
        }
    }
    (content, calls, finish.expect("a finish reason"))
}

#[tokio::test]
async fn streamed_calls_reassemble_and_never_leak_into_content() {
    let mut req = tool_request(
        SMOL,
        vec![user("Weather in Oslo, in celsius?")],
        named("get_weather"),
        3,
    );
    req.stream = Some(true);
    let (content, calls, finish) = streamed_calls(req).await;
    assert_eq!(finish, FinishReason::ToolCalls);
    assert!(!content.contains("tool_call"), "{content:?}");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0, "get_weather");
    assert_valid(
        &weather_schema(),
        &serde_json::from_str(&calls[0].1).unwrap(),
    );
}

/// call → tool result → answer, on a model whose template renders tools (Qwen) and on one
/// that gets the fallback format (SmolLM2).
#[tokio::test]
async fn a_full_round_trip_ends_in_an_answer() {
    for model in [QWEN, SMOL] {
        let question = user("What is the weather in Rome? Use celsius.");
        let first = client()
            .chat()
            .create(tool_request(
                model,
                vec![question.clone()],
                named("get_weather"),
                5,
            ))
            .await
            .expect("call");
        let calls = checked_calls(&first);
        let Some(ChatCompletionMessageToolCalls::Function(call)) = first.choices[0]
            .message
            .tool_calls
            .as_ref()
            .map(|c| c[0].clone())
        else {
            panic!("a call")
        };
        let assistant = ChatCompletionRequestAssistantMessageArgs::default()
            .tool_calls(vec![ChatCompletionMessageToolCalls::Function(
                ChatCompletionMessageToolCall {
                    id: call.id.clone(),
                    function: call.function.clone(),
                },
            )])
            .build()
            .unwrap()
            .into();
        let result = ChatCompletionRequestToolMessageArgs::default()
            .tool_call_id(call.id.clone())
            .content(format!(
                "{{\"city\": {}, \"temperature\": 21, \"sky\": \"sunny\"}}",
                calls[0].1["city"]
            ))
            .build()
            .unwrap()
            .into();
        let mut req = tool_request(
            model,
            vec![question, assistant, result],
            ChatCompletionToolChoiceOption::Mode(ToolChoiceOptions::None),
            5,
        );
        req.temperature = Some(0.0);
        req.max_tokens = Some(40);
        let answer = client().chat().create(req).await.expect("answer");
        let message = &answer.choices[0].message;
        assert!(message.tool_calls.is_none(), "{model}: {answer:?}");
        let text = message.content.clone().unwrap_or_default();
        assert!(!text.trim().is_empty(), "{model}: {answer:?}");
        // The call and its result reached the prompt (what the model makes of them is its
        // own affair: greedy Qwen2.5-Coder-0.5B sometimes repeats the call).
        let mut alone = tool_request(
            model,
            vec![user("What is the weather in Rome? Use celsius.")],
            ChatCompletionToolChoiceOption::Mode(ToolChoiceOptions::None),
            5,
        );
        alone.max_tokens = Some(1);
        let alone = client().chat().create(alone).await.expect("question alone");
        let before = alone.usage.as_ref().unwrap().prompt_tokens;
        let after = answer.usage.as_ref().unwrap().prompt_tokens;
        assert!(
            after > before + 20,
            "{model}: {before} → {after} prompt tokens"
        );
    }
}

#[tokio::test]
async fn parallel_tool_calls_false_makes_exactly_one_call() {
    for seed in 1..=2 {
        let mut req = tool_request(
            SMOL,
            vec![user(
                "Weather in Paris and in Tokyo, and the time in Tokyo?",
            )],
            ChatCompletionToolChoiceOption::Mode(ToolChoiceOptions::Required),
            seed,
        );
        req.parallel_tool_calls = Some(false);
        let r = client().chat().create(req).await.expect("call");
        assert_eq!(checked_calls(&r).len(), 1, "{r:?}");
    }
}

#[tokio::test]
async fn previous_parallel_calls_and_their_results_render() {
    // An assistant turn with two calls, then both results: accepted by both kinds of prompt.
    for model in [QWEN, SMOL] {
        let body = json!({
            "model": model,
            "max_tokens": 8,
            "temperature": 0,
            "tools": [{ "type": "function", "function": { "name": "get_time", "parameters": time_schema() } }],
            "messages": [
                { "role": "user", "content": "Time in Paris and Tokyo?" },
                { "role": "assistant", "content": null, "tool_calls": [
                    { "id": "call_a", "type": "function", "function": { "name": "get_time", "arguments": "{\"timezone\": \"Europe/Paris\"}" } },
                    { "id": "call_b", "type": "function", "function": { "name": "get_time", "arguments": "{\"timezone\": \"Asia/Tokyo\"}" } }
                ]},
                { "role": "tool", "tool_call_id": "call_a", "content": "10:00" },
                { "role": "tool", "tool_call_id": "call_b", "content": "17:00" }
            ]
        });
        let (status, r) = post_raw("/v1/chat/completions", &body.to_string()).await;
        assert_eq!(status, 200, "{model}: {r}");
        assert!(r["choices"][0]["finish_reason"].is_string(), "{r}");
    }
}

fn json_request(format: ResponseFormat, seed: i64) -> CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model(SMOL)
        .messages(vec![user(
            "Describe a person called Ada who is 36 years old, as JSON.",
        )])
        .response_format(format)
        .temperature(1.0)
        .seed(seed)
        .max_tokens(96u32)
        .build()
        .unwrap()
}

fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": { "type": "string", "maxLength": 30 },
            "age": { "type": "integer", "minimum": 0, "maximum": 150 },
            "languages": { "type": "array", "items": { "type": "string", "maxLength": 20 }, "maxItems": 3 }
        },
        "required": ["name", "age", "languages"],
        "additionalProperties": false
    })
}

#[tokio::test]
async fn json_modes_always_parse_and_validate_on_the_135m_model() {
    for seed in 1..=4 {
        let schema = ResponseFormat::JsonSchema {
            json_schema: ResponseFormatJsonSchema {
                description: None,
                name: "person".into(),
                schema: person_schema(),
                strict: Some(true),
            },
        };
        let r = client()
            .chat()
            .create(json_request(schema, seed))
            .await
            .expect("json_schema answer");
        assert_eq!(
            r.choices[0].finish_reason,
            Some(FinishReason::Stop),
            "{r:?}"
        );
        let text = r.choices[0].message.content.clone().unwrap();
        let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_valid(&person_schema(), &value);
    }
    for seed in 1..=2 {
        let r = client()
            .chat()
            .create(json_request(ResponseFormat::JsonObject, seed))
            .await
            .expect("json_object answer");
        let text = r.choices[0].message.content.clone().unwrap();
        match r.choices[0].finish_reason {
            Some(FinishReason::Stop) => {
                let value: Value =
                    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
                assert!(value.is_object(), "{text}");
            }
            // Cut by max_tokens: still JSON so far, reported as `length`.
            Some(FinishReason::Length) => assert!(text.starts_with('{'), "{text}"),
            other => panic!("{other:?}"),
        }
    }
}

/// Status 400 with an OpenAI error naming `param`; returns the message.
async fn rejected(body: Value, param: &str) -> String {
    let (status, r) = post_raw("/v1/chat/completions", &body.to_string()).await;
    assert_eq!(status, 400, "{r}");
    assert_eq!(r["error"]["type"], "invalid_request_error", "{r}");
    assert_eq!(r["error"]["param"], param, "{r}");
    r["error"]["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn bad_tools_and_formats_are_400s_that_say_what_is_wrong() {
    let ask = json!([{ "role": "user", "content": "hi" }]);
    let weather = json!({ "type": "function", "function": { "name": "get_weather", "parameters": weather_schema() } });

    let m = rejected(
        json!({ "messages": ask, "tools": [{ "type": "function", "function": { "parameters": {} } }] }),
        "tools[0].function.name",
    )
    .await;
    assert!(m.contains("no name"), "{m}");

    let m = rejected(
        json!({ "messages": ask, "tools": [{ "type": "function", "function": {
            "name": "f", "parameters": { "type": "object", "properties": { "x": { "type": "strnig" } } } } }] }),
        "tools[0].function.parameters",
    )
    .await;
    assert!(m.contains("not a valid JSON Schema"), "{m}");

    let m = rejected(
        json!({ "messages": ask, "tools": [weather],
                "tool_choice": { "type": "function", "function": { "name": "get_time" } } }),
        "tool_choice",
    )
    .await;
    assert!(m.contains("'get_time'"), "{m}");

    let m = rejected(
        json!({ "messages": ask, "response_format": { "type": "json_schema", "json_schema": {
            "name": "x", "schema": { "type": "object", "if": { "required": ["a"] }, "then": { "required": ["b"] } } } } }),
        "response_format",
    )
    .await;
    assert!(m.contains("cannot be enforced"), "{m}");

    let m = rejected(
        json!({ "messages": ask, "tool_choice": "required" }),
        "tool_choice",
    )
    .await;
    assert!(m.contains("no tools"), "{m}");
}

/// /v2: every routing mechanism serves tool calls and response_format.
#[tokio::test]
async fn every_v2_routing_mechanism_serves_tools_and_formats() {
    let weather = json!({ "type": "function", "function": { "name": "get_weather", "parameters": weather_schema() } });
    for routing in [
        json!({ "model": SMOL }),
        json!({ "model_family": "open source" }),
        json!({ "auto_routing": true }),
    ] {
        let mut tools_body = json!({
            "messages": [{ "role": "user", "content": "Weather in Lima?" }],
            "tools": [weather],
            "tool_choice": { "type": "function", "function": { "name": "get_weather" } },
            "max_tokens": 48, "temperature": 0
        });
        let mut json_body = json!({
            "messages": [{ "role": "user", "content": "Hi! A person as JSON please." }],
            "response_format": { "type": "json_schema", "json_schema": { "name": "person", "schema": person_schema() } },
            "max_tokens": 64, "temperature": 0
        });
        for (k, v) in routing.as_object().unwrap() {
            tools_body[k] = v.clone();
            json_body[k] = v.clone();
        }
        let (status, r) = post_raw("/v2/chat/completions", &tools_body.to_string()).await;
        assert_eq!(status, 200, "{routing}: {r}");
        assert!(r["routing_mechanism"].is_string(), "{r}");
        assert_eq!(
            r["choices"][0]["finish_reason"], "tool_calls",
            "{routing}: {r}"
        );
        let call = &r["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["name"], "get_weather");
        let args: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_valid(&weather_schema(), &args);

        let (status, r) = post_raw("/v2/chat/completions", &json_body.to_string()).await;
        assert_eq!(status, 200, "{routing}: {r}");
        let text = r["choices"][0]["message"]["content"].as_str().unwrap();
        assert_valid(
            &person_schema(),
            &serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}")),
        );
    }
}

/// With `auto`, Qwen2.5-Coder-0.5B answers a weather question with the call's bare JSON (no
/// `<tool_call>` markers): it still arrives as a call, not as content.
#[tokio::test]
async fn auto_reads_the_call_the_model_chose_to_make() {
    let mut req = tool_request(
        QWEN,
        vec![user("What's the weather in Paris?")],
        ChatCompletionToolChoiceOption::Mode(ToolChoiceOptions::Auto),
        1,
    );
    req.temperature = Some(0.0);
    req.max_tokens = Some(60);
    let r = client().chat().create(req).await.expect("answer");
    let calls = checked_calls(&r);
    assert_eq!(calls[0].0, "get_weather", "{r:?}");
}

/// Under `tool_choice: auto` the call grammar is lazy: text stays free, and a call, marked or
/// opening the answer as (fenced) JSON, is held to an offered function with arguments its
/// schema declares. Walked token by token over SmolLM2's real vocabulary.
#[test]
fn an_auto_call_is_held_to_the_offered_functions_once_it_starts() {
    use wick::engine::{Preamble, Trigger};
    use wick::tools::{lazy_call_grammar, CallFormat, ToolSpec};
    let model = common::load_smollm2(512);
    let tokenizer = &model.frontend.tokenizer;
    let compiler = wick::engine::GrammarCompiler::default();
    let offered = serde_json::to_value(tools()).unwrap();
    let spec = ToolSpec::parse(Some(&offered), Some(&json!("auto")), None, None).unwrap();
    let lark = lazy_call_grammar(&spec, CallFormat::HERMES).expect("auto with tools is lazy");
    let trigger = Trigger {
        text: "<tool_call>".into(),
        opening_call: true,
        preamble: Preamble::None,
    };
    // Walk `text`'s tokens: for each, whether the grammar allowed it and whether it held
    // the output (masked anything); then the same for ending the answer there.
    let end = tokenizer.stop_ids()[0];
    let walk = |text: &str| -> (Vec<(bool, bool)>, (bool, bool)) {
        let mut c = compiler
            .compile_lazy(tokenizer, &lark, &trigger)
            .expect("grammar compiles");
        let step = |c: &mut wick::engine::Constraint, id: u32| {
            let mut logits = vec![0.0f32; tokenizer.vocab_size()];
            c.mask(&mut logits).unwrap();
            let held = logits.iter().any(|l| l.is_infinite());
            (logits[id as usize].is_finite(), held)
        };
        let mut steps = Vec::new();
        for id in tokenizer.encode(text).unwrap() {
            steps.push(step(&mut c, id));
            if !steps.last().unwrap().0 {
                return (steps, (false, true));
            }
            c.commit(id).unwrap();
        }
        let ending = step(&mut c, end);
        (steps, ending)
    };
    let allowed = |text: &str| walk(text).0.iter().all(|s| s.0);
    // Text alone, JSON that is not a call, and code: nothing is ever masked.
    for text in [
        "It is sunny in Paris, no <tool> needed.",
        "{\"names\": [\"Paris\"]}",
        "```python\nprint({\"name\": 1})\n```",
    ] {
        let (steps, ending) = walk(text);
        assert!(
            steps.iter().all(|&s| s == (true, false)),
            "{text}: {steps:?}"
        );
        assert_eq!(ending, (true, false));
    }
    // Text, then a marked call: free until the marker, held after it, complete at the end.
    let marked = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}\n</tool_call>";
    let (steps, ending) = walk(&format!("Let me look.\n{marked}"));
    assert!(steps.iter().all(|s| s.0), "{steps:?}");
    assert!(!steps[0].1 && steps.last().unwrap().1, "{steps:?}");
    assert_eq!(ending, (true, true));
    // An answer that opens as a call, fenced and indented as Qwen2.5-Coder writes it, or bare.
    let fenced = "```json\n{\n  \"name\": \"get_weather\",\n  \"arguments\": {\n    \"city\": \"Paris\",\n    \"unit\": \"celsius\"\n  }\n}\n```";
    let bare = "{\"name\": \"get_time\", \"arguments\": {\"timezone\": \"UTC\"}}";
    for text in [fenced, bare] {
        let (steps, ending) = walk(text);
        assert!(steps.iter().all(|s| s.0), "{text}: {steps:?}");
        assert_eq!(ending, (true, true), "{text}");
    }
    // A function that was not offered, or an argument the schema does not declare, is not
    // allowed, in either form.
    for text in [
        "<tool_call>\n{\"name\": \"get_news\", \"arguments\": {}}\n</tool_call>",
        "```json\n{\n  \"name\": \"get_news\",\n  \"arguments\": {}\n}\n```",
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"properties\": {}}}\n</tool_call>",
        "```json\n{\n  \"name\": \"get_weather\",\n  \"arguments\": {\n    \"properties\": {}\n  }\n}\n```",
    ] {
        assert!(!allowed(text), "{text}");
    }
}

/// Through the server, under `auto`: three Seal-Tools tasks (data/routing/queries.jsonl) on
/// which Qwen2.5-Coder-0.5B, left free, answered with a fenced call whose arguments were the
/// function's schema itself (`{"properties": {}, "required": [], "type": "object"}`). Held
/// to the schema once its call starts, each call now names an offered function, with only
/// declared arguments and every required one.
#[tokio::test]
async fn auto_calls_keep_to_the_offered_schemas() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/routing/queries.jsonl");
    let rows: Vec<Value> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for id in [
        "sealtools-dev-easy-175",
        "sealtools-dev-easy-198",
        "sealtools-dev-easy-32",
    ] {
        let row = rows.iter().find(|r| r["id"] == id).expect("task");
        let req: CreateChatCompletionRequest = serde_json::from_value(json!({
            "model": QWEN,
            "messages": [{ "role": "user", "content": row["message"] }],
            "tools": row["tools"],
            "tool_choice": "auto",
            "temperature": 0.0,
            "max_tokens": 256,
        }))
        .unwrap();
        let r = client().chat().create(req).await.expect("answer");
        let choice = &r.choices[0];
        assert_eq!(
            choice.finish_reason,
            Some(FinishReason::ToolCalls),
            "{id}: {r:?}"
        );
        for call in choice.message.tool_calls.as_ref().unwrap() {
            let ChatCompletionMessageToolCalls::Function(call) = call else {
                panic!("not a function call: {call:?}")
            };
            let offered = row["tools"].as_array().unwrap().iter();
            let schema = offered
                .map(|t| &t["function"])
                .find(|f| f["name"] == call.function.name.as_str())
                .unwrap_or_else(|| panic!("{id}: not offered: {call:?}"))
                .get("parameters")
                .unwrap();
            let args: Value = serde_json::from_str(&call.function.arguments).unwrap();
            let args = args.as_object().expect("arguments are an object");
            let declared = schema["properties"].as_object().unwrap();
            assert!(
                args.keys().all(|k| declared.contains_key(k)),
                "{id}: undeclared arguments in {args:?}"
            );
            for required in schema["required"].as_array().unwrap() {
                let required = required.as_str().unwrap();
                assert!(
                    args.contains_key(required),
                    "{id}: {required} missing: {args:?}"
                );
            }
            assert_valid(schema, &Value::Object(args.clone()));
        }
    }
}
