//! The GGUF-built tokenizer against llama.cpp's own token ids
//! (`tests/fixtures/llamacpp_reference.json`) on real models from the wick cache.

mod common;

use candle_core::quantized::gguf_file;
use serde::Deserialize;
use wick::tokenizer::{StreamDecoder, Tokenizer};

const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const QWEN_CODER: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";

#[derive(Deserialize)]
struct Fixture {
    models: std::collections::HashMap<String, ModelFixture>,
}

#[derive(Deserialize)]
struct ModelFixture {
    tokenize: Vec<TokenizeCase>,
    greedy: Vec<GreedyCase>,
}

#[derive(Deserialize)]
struct TokenizeCase {
    text: String,
    ids: Vec<u32>,
}

/// A raw ChatML prompt and llama.cpp's greedy continuation of it.
#[derive(Deserialize)]
struct GreedyCase {
    prompt: String,
    prompt_ids: Vec<u32>,
    output_ids: Vec<u32>,
    output_text: String,
}

fn load(file: &str) -> Tokenizer {
    let path = common::model_file(file);
    let mut f = std::fs::File::open(&path).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    Tokenizer::from_gguf(&content).unwrap()
}

fn fixture(file: &str) -> ModelFixture {
    let json = include_str!("fixtures/llamacpp_reference.json");
    let mut fixture: Fixture = serde_json::from_str(json).unwrap();
    fixture.models.remove(file).expect("model in fixture")
}

/// Every fixture text encodes to llama.cpp's ids, decodes back to itself, and streams back
/// to itself without a broken character in any delta.
fn check_against_reference(file: &str) {
    let tok = load(file);
    let fixture = fixture(file);
    let mut failures = Vec::new();
    for case in fixture.tokenize {
        let ids = tok.encode(&case.text).unwrap();
        assert!(
            tok.fewest_tokens(&case.text) <= ids.len(),
            "bound for {:?}",
            case.text
        );
        if ids != case.ids {
            failures.push(format!(
                "{:?}\n  ours:      {ids:?}\n  llama.cpp: {:?}",
                case.text, case.ids
            ));
        }
        // Special tokens are dropped by decode, so only plain texts round-trip exactly.
        if !case.text.contains("<|") {
            assert_eq!(tok.decode(&ids).unwrap(), case.text, "round trip");
            let mut stream = StreamDecoder::new();
            let mut out = String::new();
            for &id in &ids {
                let delta = stream.push(&tok, id).unwrap();
                assert!(!delta.contains('\u{FFFD}'), "broken char in {delta:?}");
                out.push_str(&delta);
            }
            assert_eq!(stream.finish(&tok).unwrap(), "");
            assert_eq!(out, case.text, "stream");
        }
    }
    // The prompts of the greedy runs tokenize alike, and their outputs detokenize (in one go
    // and streamed) to llama.cpp's text.
    for case in fixture.greedy {
        let ids = tok.encode(&case.prompt).unwrap();
        if ids != case.prompt_ids {
            failures.push(format!(
                "{:?}\n  ours:      {ids:?}\n  llama.cpp: {:?}",
                case.prompt, case.prompt_ids
            ));
        }
        assert_eq!(tok.decode(&case.output_ids).unwrap(), case.output_text);
        let mut stream = StreamDecoder::new();
        let streamed: String = case
            .output_ids
            .iter()
            .map(|&id| stream.push(&tok, id).unwrap())
            .collect();
        assert_eq!(streamed, case.output_text);
    }
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}

/// The bound used to refuse over-long prompts before tokenizing holds: every vocabulary
/// entry repeated reaches no further than the bound allows, and real encodings of the texts
/// where it is tightest (the longest entries, whitespace runs, combining marks) never beat
/// it. And it is not vacuous.
fn check_fewest_tokens_bound(file: &str) {
    let tok = load(file);
    let mut pieces: Vec<String> = (0..tok.vocab_size() as u32)
        .filter_map(|id| tok.hf().decode(&[id], false).ok())
        .collect();
    for piece in &pieces {
        let text = piece.repeat(4);
        assert!(tok.fewest_tokens(&text) <= 4, "{text:?}");
    }
    pieces.sort_by_key(|p| std::cmp::Reverse(p.len()));
    let mut cases: Vec<String> = pieces[..20].iter().map(|p| p.repeat(16)).collect();
    cases.extend([
        " ".repeat(10_000),
        "\n".repeat(10_000),
        "a ".repeat(50_000),
        "é\u{301}".repeat(5_000),
    ]);
    for text in cases {
        let ids = tok.encode(&text).unwrap();
        let fewest = tok.fewest_tokens(&text);
        assert!(
            fewest <= ids.len(),
            "{fewest} > {} for {text:.80?}",
            ids.len()
        );
    }
    // 100,000 bytes of one-byte words: the bound must be big enough to refuse it at a small
    // context before tokenizing.
    assert!(tok.fewest_tokens(&"a ".repeat(50_000)) >= 1000, "{file}");
}

#[test]
fn smollm2_fewest_tokens_is_a_lower_bound() {
    check_fewest_tokens_bound(SMOLLM2);
}

#[test]
fn qwen_coder_fewest_tokens_is_a_lower_bound() {
    check_fewest_tokens_bound(QWEN_CODER);
}

#[test]
fn smollm2_matches_llamacpp_ids() {
    check_against_reference(SMOLLM2);
}

#[test]
fn qwen_coder_matches_llamacpp_ids() {
    check_against_reference(QWEN_CODER);
}

#[test]
fn smollm2_chatml_markers_are_single_tokens() {
    let tok = load(SMOLLM2);
    assert_eq!(tok.encode("<|im_start|>").unwrap(), [1]);
    assert_eq!(tok.encode("<|im_end|>").unwrap(), [2]);
    assert_eq!(tok.bos_token(), Some("<|im_start|>"));
    assert_eq!(tok.eos_token(), Some("<|im_end|>"));
    assert_eq!(tok.vocab_size(), 49152);
}

#[test]
fn smollm2_stop_ids_include_im_end() {
    let tok = load(SMOLLM2);
    let stops = tok.stop_ids();
    assert!(stops.contains(&2), "{stops:?}");
    let mut unique = stops.to_vec();
    unique.dedup();
    assert_eq!(unique.len(), stops.len(), "duplicates in {stops:?}");
}

#[test]
fn smollm2_decode_skips_special_tokens() {
    let tok = load(SMOLLM2);
    let ids = tok.encode("<|im_start|>user\nHi<|im_end|>").unwrap();
    assert_eq!(tok.decode(&ids).unwrap(), "user\nHi");
}

#[test]
fn smollm2_stream_emits_emoji_once_and_whole() {
    let tok = load(SMOLLM2);
    let text = "café naïve jalapeño 東京 😀 Привет мир";
    let ids = tok.encode(text).unwrap();
    let mut stream = StreamDecoder::new();
    let deltas: Vec<String> = ids
        .iter()
        .map(|&id| stream.push(&tok, id).unwrap())
        .collect();
    // The emoji is split over several byte tokens: some pushes must have held text back.
    assert!(deltas.iter().any(|d| d.is_empty()), "{deltas:?}");
    assert!(deltas.iter().all(|d| !d.contains('\u{FFFD}')), "{deltas:?}");
    assert_eq!(deltas.iter().filter(|d| d.contains('😀')).count(), 1);
    assert_eq!(deltas.concat(), text);
}

#[test]
fn smollm2_stream_gives_no_text_for_special_tokens() {
    let tok = load(SMOLLM2);
    let mut stream = StreamDecoder::new();
    let mut out = String::new();
    for id in tok.encode("Hi<|im_end|>").unwrap() {
        out.push_str(&stream.push(&tok, id).unwrap());
    }
    assert_eq!(out, "Hi");
}

#[test]
fn qwen_coder_special_ids_and_visible_tool_markers() {
    let tok = load(QWEN_CODER);
    assert_eq!(tok.eos_token(), Some("<|im_end|>"));
    assert!(tok.stop_ids().contains(&151645), "{:?}", tok.stop_ids());
    assert!(tok.stop_ids().contains(&151643), "{:?}", tok.stop_ids());
    // `<tool_call>` is a user-defined token: one id, and it must survive decoding, since the
    // server finds tool calls in the generated text.
    let ids = tok.encode("<tool_call>\n{}</tool_call>").unwrap();
    assert_eq!(ids[0], tok.token_to_id("<tool_call>").unwrap());
    assert_eq!(tok.decode(&ids).unwrap(), "<tool_call>\n{}</tool_call>");
}
