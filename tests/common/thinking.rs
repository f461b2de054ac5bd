//! A thinking model for the tests. No real one can be fetched here, so the default model's
//! file (SmolLM2-135M-Instruct) is served under catalog entries whose chat templates are real
//! thinking models' templates (tests/fixtures/templates, as llama.cpp ships them in
//! models/templates):
//! - [`OPENS`]: Qwen3.5's, which ends the generation prompt in `<think>\n`, so everything the
//!   model writes is thinking until it writes `</think>` (and `enable_thinking: false` closes
//!   the block in the prompt instead);
//! - [`DECIDES`]: Qwen3's hybrid template, which leaves opening the block to the model
//!   (SmolLM2 never does, so its answers stay answers).

use std::net::SocketAddr;
use std::sync::OnceLock;

use wick::config::ServeArgs;

pub const OPENS: &str = "smollm2-as-qwen3.5";
pub const DECIDES: &str = "smollm2-as-qwen3";
/// The default model with its own template: a model that does not think.
pub const PLAIN: &str = "smollm2-135m-instruct";

const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

pub fn template(name: &str) -> String {
    std::fs::read_to_string(super::repo_file(&format!(
        "tests/fixtures/templates/{name}"
    )))
    .expect("template fixture")
}

/// The server with the three entries, started once per test binary.
pub fn server() -> SocketAddr {
    static SERVER: OnceLock<SocketAddr> = OnceLock::new();
    *SERVER.get_or_init(|| {
        let mut args = ServeArgs::local_ephemeral();
        args.ctx_size = Some(2048);
        args.catalog.catalog = Some(write_catalog());
        super::start_server(args)
    })
}

/// The catalog: the repo's SmolLM2 entry three times, two of them with a template of their
/// own, the file taken from the model cache.
fn write_catalog() -> std::path::PathBuf {
    let path = super::model_file(FILE);
    let builtin = wick::catalog::Catalog::load(&super::repo_file("models.toml")).expect("catalog");
    let smollm2 = builtin.get(PLAIN).expect("the catalog has SmolLM2");
    let entry = |id: &str, template: Option<String>| {
        let mut t = toml::Table::new();
        t.insert("id".into(), id.into());
        t.insert("family".into(), "open source".into());
        t.insert("tier".into(), "tier_1".into());
        t.insert("context_length".into(), 2048.into());
        t.insert("file".into(), FILE.into());
        if let Some(sha) = &smollm2.sha256 {
            t.insert("sha256".into(), sha.as_str().into());
        }
        if let Some(template) = template {
            t.insert("chat_template".into(), template.into());
        }
        let mut source = toml::Table::new();
        source.insert("type".into(), "local".into());
        source.insert("path".into(), path.to_string_lossy().as_ref().into());
        t.insert("source".into(), toml::Value::Array(vec![source.into()]));
        toml::Value::Table(t)
    };
    let mut catalog = toml::Table::new();
    catalog.insert("default".into(), PLAIN.into());
    catalog.insert(
        "model".into(),
        toml::Value::Array(vec![
            entry(PLAIN, None),
            entry(OPENS, Some(template("qwen3.5-4b.jinja"))),
            entry(DECIDES, Some(template("qwen3-0.6b.jinja"))),
        ]),
    );
    let out = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("thinking-models-{}.toml", std::process::id()));
    std::fs::write(&out, toml::to_string(&catalog).expect("TOML")).expect("catalog written");
    out
}
