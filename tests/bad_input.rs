//! Property tests that try to break wick with bad input: arbitrary bytes and JSON into the
//! request decoders and through every endpoint of the real server, arbitrary prompts and
//! stop strings through the SSE writer, and arbitrary token ids (invalid UTF-8 pieces, ids
//! outside the vocabulary) through the incremental detokenizer. Nothing may panic, and every
//! rejected request must get a 4xx with an OpenAI-shaped body. Case counts are bounded so
//! the suite stays quick in CI.

mod common;

use std::sync::OnceLock;

use candle_core::quantized::gguf_file;
use proptest::prelude::*;
use serde_json::{Map, Value};
use wick::api::fields::GenerationFields;
use wick::api::request::{parse_json, ChatRequest};
use wick::tokenizer::{StreamDecoder, Tokenizer};

/// Field names the decoders look at, so random objects often hit real fields.
const FIELDS: &[&str] = &[
    "model",
    "messages",
    "role",
    "content",
    "name",
    "type",
    "text",
    "max_tokens",
    "max_completion_tokens",
    "stream",
    "stream_options",
    "include_usage",
    "stop",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "n",
    "tools",
    "tool_choice",
    "ignore_eos",
    "auto_routing",
    "model_family",
    "tradition",
    "response_format",
    "x",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
        prop::sample::select(vec!["user", "system", "assistant", "tool", "text", ""])
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            prop::collection::vec((prop::sample::select(FIELDS), inner), 0..6).prop_map(|pairs| {
                let map: Map<String, Value> =
                    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
                Value::Object(map)
            }),
        ]
    })
}

/// A request-like object: mostly the right top-level fields with random values.
fn request_like() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec((prop::sample::select(FIELDS), json_value()), 0..8),
        prop::collection::vec(json_value(), 0..4),
    )
        .prop_map(|(pairs, messages)| {
            let mut map: Map<String, Value> =
                pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            map.entry("messages").or_insert(Value::from(messages));
            Value::Object(map)
        })
}

/// What a body can be: raw bytes (often invalid UTF-8 or JSON), any JSON, or request-like.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        request_like().prop_map(|v| v.to_string().into_bytes()),
    ]
}

/// Decode a body the way the chat endpoints do, up to rendering.
fn decode(bytes: &[u8]) {
    if let Ok(request) = parse_json::<ChatRequest>(bytes) {
        if let Ok(fields) = parse_json::<GenerationFields>(bytes) {
            let _ = request.settings(&fields);
        }
        let _ = request.tool_spec();
        let _ = request.template_messages();
        let _ = request.has_tools();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_request_decoders_never_panic(bytes in body()) {
        decode(&bytes);
    }
}

/// Keep what the server is asked to generate tiny, whatever the random body says.
fn keep_small(bytes: Vec<u8>) -> Vec<u8> {
    let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(&bytes) else {
        return bytes;
    };
    for field in ["max_tokens", "max_completion_tokens"] {
        if map
            .get(field)
            .is_some_and(|v| v.as_u64().is_some_and(|n| n > 3))
        {
            map.insert(field.into(), Value::from(3));
        }
    }
    if !map.contains_key("max_tokens") && !map.contains_key("max_completion_tokens") {
        map.insert("max_tokens".into(), Value::from(3));
    }
    Value::Object(map).to_string().into_bytes()
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Runtime::new().unwrap())
}

/// POST `body` to `path`; a rejection must be a 4xx with OpenAI's error object.
fn check_endpoint(path: &str, body: Vec<u8>) -> Result<(), TestCaseError> {
    let url = format!("{}{path}", common::base_url());
    let (status, text) = runtime().block_on(async move {
        let response = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("the server answers");
        let status = response.status().as_u16();
        (status, response.text().await.expect("the body arrives"))
    });
    prop_assert!(status < 500, "status {status}: {text}");
    if status >= 400 {
        let json: Value = serde_json::from_str(&text)
            .map_err(|_| TestCaseError::fail(format!("{status}: not JSON: {text}")))?;
        let error = &json["error"];
        prop_assert!(error["message"].is_string(), "{json}");
        prop_assert!(error["type"].is_string(), "{json}");
        prop_assert!(
            error.get("param").is_some() && error.get("code").is_some(),
            "{json}"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_endpoint_rejects_bad_bodies_with_an_openai_4xx(
        path in prop::sample::select(vec![
            "/v1/chat/completions",
            "/v2/chat/completions",
            "/ai/v1/chat/completions",
            "/ai/v2/chat/completions",
            "/v1/models",
            "/v1/nope",
        ]),
        bytes in body(),
    ) {
        check_endpoint(path, keep_small(bytes))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Any prompt and stop strings: the stream is well-formed SSE, every event JSON, one
    /// finish reason, `[DONE]` last, and no stop string in the text.
    #[test]
    fn streams_stay_well_formed_for_any_prompt_and_stops(
        prompt in "\\PC{1,40}|[\\x00-\\x1f\"\\\\\n]{1,10}",
        stops in prop::collection::vec("[a-z .,\n\\u{e9}]{1,3}", 0..4),
    ) {
        let body = serde_json::json!({
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 8, "stop": stops, "stream": true, "temperature": 0.9, "seed": 1,
        });
        let url = format!("{}/v1/chat/completions", common::base_url());
        let text = runtime().block_on(async move {
            reqwest::Client::new().post(url).json(&body).send().await.unwrap().text().await.unwrap()
        });
        let data: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
        prop_assert_eq!(data.last().copied(), Some("[DONE]"), "{}", text);
        let mut content = String::new();
        let mut finishes = 0;
        for event in &data[..data.len() - 1] {
            let chunk: Value = serde_json::from_str(event)
                .map_err(|_| TestCaseError::fail(format!("not JSON: {event}")))?;
            if let Some(t) = chunk["choices"][0]["delta"]["content"].as_str() {
                content.push_str(t);
            }
            if chunk["choices"][0]["finish_reason"].is_string() {
                finishes += 1;
            }
        }
        prop_assert_eq!(finishes, 1, "{}", text);
        for stop in &stops {
            prop_assert!(!content.contains(stop.as_str()), "{:?} in {:?}", stop, content);
        }
    }
}

fn tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let path = common::model_file("SmolLM2-135M-Instruct.Q4_1.gguf");
        let mut file = std::fs::File::open(path).unwrap();
        let content = gguf_file::Content::read(&mut file).unwrap();
        Tokenizer::from_gguf(&content).unwrap()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Any ids, in the vocabulary or far outside it: each push returns text or an error,
    /// never a panic; ids in the vocabulary never fail, and their pieces add up to the
    /// decoding of the whole sequence.
    #[test]
    fn the_detokenizer_survives_any_ids(
        ids in prop::collection::vec(prop_oneof![0u32..49152, any::<u32>()], 0..40),
    ) {
        let tok = tokenizer();
        let mut stream = StreamDecoder::new();
        let mut all_in_vocab = true;
        let mut text = String::new();
        let ids_seen = ids.clone();
        for id in ids {
            all_in_vocab &= (id as usize) < tok.vocab_size();
            match stream.push(tok, id) {
                Ok(piece) => text.push_str(&piece),
                Err(_) => prop_assert!(!all_in_vocab, "an error for ids in the vocabulary"),
            }
        }
        match stream.finish(tok) {
            Ok(rest) => text.push_str(&rest),
            Err(_) => prop_assert!(!all_in_vocab, "an error for ids in the vocabulary"),
        }
        if all_in_vocab {
            // Nothing is lost or invented: the pieces decode back to the same characters.
            let whole = tok.decode(&ids_seen).unwrap();
            prop_assert_eq!(text.replace('\u{FFFD}', ""), whole.replace('\u{FFFD}', ""));
        }
    }
}
