//! The prompt a `tradition` produces, rendered by a real model's own chat template: the
//! perspective layer first in the system prompt, a caller's system message kept after it.

mod common;

use candle_core::quantized::gguf_file;
use wick::routing::tradition::apply_layer;
use wick::routing::{Tradition, TraditionLayers};
use wick::template::{ChatMessage, ChatTemplate};

fn smollm2_template() -> ChatTemplate {
    let path = common::model_file("SmolLM2-135M-Instruct.Q4_1.gguf");
    let mut f = std::fs::File::open(path).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let source = content.metadata["tokenizer.chat_template"]
        .to_string()
        .unwrap()
        .clone();
    ChatTemplate::new(&source, None, None).unwrap()
}

/// Render `messages` as a /v2 (`v2 = true`) or /v1 request with this tradition would.
fn render(tradition: Option<&str>, v2: bool, messages: &[ChatMessage]) -> String {
    let layers = TraditionLayers::builtin();
    let tradition = tradition.map(|t| Tradition::parse(t).unwrap());
    let mut messages = messages.to_vec();
    apply_layer(&mut messages, layers.layer(tradition, v2));
    smollm2_template().render(&messages, None, true).unwrap()
}

fn chatml(system: &str, user: &str) -> String {
    format!(
        "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n\
         <|im_start|>assistant\n"
    )
}

fn user(text: &str) -> ChatMessage {
    ChatMessage::new("user", text)
}

#[test]
fn each_tradition_puts_its_own_layer_in_the_system_prompt() {
    let layers = TraditionLayers::builtin();
    let q = [user("What is grace?")];
    for (name, layer, marker) in [
        ("evangelical", &layers.evangelical, "evangelical Protestant"),
        (
            "catholic",
            &layers.catholic,
            "Catechism of the Catholic Church",
        ),
        ("mainline", &layers.mainline, "mainline Protestant"),
    ] {
        assert!(layer.contains(marker), "{name}: {layer}");
        for v2 in [true, false] {
            assert_eq!(
                render(Some(name), v2, &q),
                chatml(layer, "What is grace?"),
                "{name}"
            );
        }
    }
}

#[test]
fn v2_without_tradition_uses_the_general_layer_and_v1_uses_none() {
    let layers = TraditionLayers::builtin();
    assert!(layers.general.contains("broadly Christian"));
    let q = [user("Who was Augustine?")];
    assert_eq!(
        render(None, true, &q),
        chatml(&layers.general, "Who was Augustine?")
    );
    // No layer: the template's own default system prompt, exactly as without wick's layers.
    let plain = smollm2_template().render(&q, None, true).unwrap();
    assert_eq!(render(None, false, &q), plain);
    assert!(plain.contains("You are a helpful AI assistant named SmolLM"));
}

#[test]
fn not_faith_specific_adds_no_layer() {
    let q = [user("Plan a 3-day trip to Rome.")];
    let plain = smollm2_template().render(&q, None, true).unwrap();
    for v2 in [true, false] {
        assert_eq!(render(Some("not_faith_specific"), v2, &q), plain);
    }
}

#[test]
fn a_callers_system_message_follows_the_layer_unchanged() {
    let layers = TraditionLayers::builtin();
    let own = "You are the assistant of St. Mark's parish. Answer in two sentences.";
    let q = [ChatMessage::new("system", own), user("When is Easter?")];
    assert_eq!(
        render(Some("catholic"), true, &q),
        chatml(&format!("{}\n\n{own}", layers.catholic), "When is Easter?")
    );
    assert_eq!(
        render(None, true, &q),
        chatml(&format!("{}\n\n{own}", layers.general), "When is Easter?")
    );
    // not_faith_specific: the caller's system message alone.
    assert_eq!(
        render(Some("not_faith_specific"), true, &q),
        chatml(own, "When is Easter?")
    );
}

#[test]
fn an_operator_file_replaces_the_texts() {
    let dir = std::env::temp_dir().join(format!("wick-traditions-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("traditions.toml");
    std::fs::write(
        &file,
        "general = \"G\"\nevangelical = \"E\"\ncatholic = \"C\"\nmainline = \"M\"\n",
    )
    .unwrap();
    let layers = TraditionLayers::load(&file).unwrap();
    assert_eq!(layers.layer(Some(Tradition::Mainline), false), Some("M"));
    assert_eq!(layers.layer(None, true), Some("G"));
    std::fs::remove_dir_all(&dir).unwrap();
}
