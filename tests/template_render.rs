//! Chat templates read from real GGUFs, rendered and tokenized, against the prompts of
//! llama.cpp's reference runs (`tests/fixtures/llamacpp_reference.json`).

mod common;

use candle_core::quantized::gguf_file;
use wick::template::{ChatMessage, ChatTemplate};
use wick::tokenizer::Tokenizer;

const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const QWEN_CODER: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";

/// The model's tokenizer and its own chat template, as the server would build them.
fn load(file: &str) -> (Tokenizer, ChatTemplate) {
    let mut f = std::fs::File::open(common::model_file(file)).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let tok = Tokenizer::from_gguf(&content).unwrap();
    let source = content.metadata["tokenizer.chat_template"]
        .to_string()
        .unwrap()
        .clone();
    let template = ChatTemplate::new(&source, tok.bos_token(), tok.eos_token()).unwrap();
    (tok, template)
}

fn reference_prompt(file: &str, index: usize) -> (String, Vec<u32>) {
    let json: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/llamacpp_reference.json")).unwrap();
    let case = &json["models"][file]["greedy"][index];
    let ids = serde_json::from_value(case["prompt_ids"].clone()).unwrap();
    (case["prompt"].as_str().unwrap().to_string(), ids)
}

#[test]
fn smollm2_gguf_template_gives_the_reference_prompt() {
    let (tok, template) = load(SMOLLM2);
    let messages = [ChatMessage::new("user", "What is the capital of France?")];
    let prompt = template.render(&messages, None, true).unwrap();
    let (expected, expected_ids) = reference_prompt(SMOLLM2, 0);
    assert_eq!(prompt, expected);
    assert_eq!(tok.encode(&prompt).unwrap(), expected_ids);
}

#[test]
fn qwen_coder_gguf_template_renders_chat_and_tools() {
    let (_tok, template) = load(QWEN_CODER);
    let messages = [
        ChatMessage::new(
            "system",
            "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
        ),
        ChatMessage::new("user", "What is the capital of France?"),
    ];
    let (expected, _) = reference_prompt(QWEN_CODER, 0);
    assert_eq!(template.render(&messages, None, true).unwrap(), expected);

    let tools = serde_json::json!([{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}
        }
    }]);
    let prompt = template.render(&messages[1..], Some(&tools), true).unwrap();
    assert!(prompt.contains("<tools>\n{\""), "{prompt}");
    assert!(prompt.contains("\"name\": \"get_weather\""), "{prompt}");
    assert!(prompt.contains("<tool_call>"), "{prompt}");
    assert!(prompt.ends_with("<|im_start|>assistant\n"), "{prompt}");
}
