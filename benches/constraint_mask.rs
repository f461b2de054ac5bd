//! What constrained decoding costs per token: for each catalog model in the local cache, a
//! forced tool call and a json_schema answer are replayed token by token through the grammar,
//! timing the mask of a full logits row (what the engine does before sampling) and the
//! commit of the chosen token. Run with `cargo bench --bench constraint_mask`.

use std::time::Instant;

use candle_core::quantized::gguf_file;
use serde_json::json;
use wick::engine::GrammarCompiler;
use wick::tokenizer::Tokenizer;
use wick::tools::{output_grammar, CallFormat, ToolSpec};

const MODELS: &[&str] = &[
    "SmolLM2-135M-Instruct.Q4_1.gguf",
    "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
];

fn main() -> anyhow::Result<()> {
    let cache = dirs::home_dir().unwrap().join(".cache/wick/models");
    let tools = json!([{ "type": "function", "function": { "name": "get_weather", "parameters": {
        "type": "object",
        "properties": { "city": { "type": "string" }, "unit": { "enum": ["celsius", "fahrenheit"] } },
        "required": ["city", "unit"] } } }]);
    let schema = json!({ "type": "object", "properties": {
        "name": { "type": "string" }, "age": { "type": "integer" },
        "languages": { "type": "array", "items": { "type": "string" } } },
        "required": ["name", "age", "languages"] });
    let cases = [
        (
            "tool call (required)",
            ToolSpec::parse(Some(&tools), Some(&json!("required")), None, None).unwrap(),
        ),
        (
            "json_schema",
            ToolSpec::parse(
                None,
                None,
                Some(&json!({ "type": "json_schema", "json_schema": { "name": "p", "schema": schema } })),
                None,
            )
            .unwrap(),
        ),
    ];
    for file in MODELS {
        let path = cache.join(file);
        let Ok(mut f) = std::fs::File::open(&path) else {
            println!("{file}: not in the model cache, skipped");
            continue;
        };
        let content = gguf_file::Content::read(&mut f)?;
        let tokenizer = Tokenizer::from_gguf(&content)?;
        let compiler = GrammarCompiler::default();
        let started = Instant::now();
        compiler.compile(&tokenizer, "start: \"x\"")?;
        println!(
            "{file}: vocabulary of {} tokens; grammar engine built in {:.0} ms",
            tokenizer.vocab_size(),
            started.elapsed().as_secs_f64() * 1e3
        );
        for (name, spec) in &cases {
            for format in [CallFormat::HERMES, CallFormat::LIST] {
                if spec.functions.is_empty() && format == CallFormat::LIST {
                    continue;
                }
                let answer = match (spec.functions.is_empty(), format.list) {
                    (true, _) => r#"{"name": "Ada", "age": 36, "languages": ["English", "French"]}"#.to_string(),
                    (false, false) => "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}\n</tool_call>".to_string(),
                    (false, true) => "<tool_call>[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}]</tool_call>".to_string(),
                };
                let lark = output_grammar(spec, format).expect("a forced shape");
                let started = Instant::now();
                let mut constraint = compiler.compile(&tokenizer, &lark)?;
                let compile_ms = started.elapsed().as_secs_f64() * 1e3;
                let tokens = tokenizer
                    .hf()
                    .encode_fast(answer.as_str(), false)
                    .map_err(anyhow::Error::msg)?;
                let mut logits = vec![0.0f32; tokenizer.vocab_size()];
                let (mut mask_s, mut commit_s) = (0.0, 0.0);
                for &t in tokens.get_ids() {
                    logits.iter_mut().for_each(|l| *l = 0.0);
                    let t0 = Instant::now();
                    constraint.mask(&mut logits)?;
                    mask_s += t0.elapsed().as_secs_f64();
                    assert!(
                        logits[t as usize].is_finite(),
                        "the grammar forbade a token of a valid answer"
                    );
                    let t1 = Instant::now();
                    constraint.commit(t)?;
                    commit_s += t1.elapsed().as_secs_f64();
                }
                let n = tokens.get_ids().len() as f64;
                println!(
                    "  {name:<22} {:<7} compile {compile_ms:6.1} ms | {n:3} tokens: mask {:7.1} µs/token, commit {:5.1} µs/token",
                    match (spec.functions.is_empty(), format.list) {
                        (true, _) => "",
                        (false, true) => "list",
                        (false, false) => "hermes",
                    },
                    mask_s / n * 1e6,
                    commit_s / n * 1e6
                );
            }
        }
    }
    Ok(())
}
