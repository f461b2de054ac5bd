//! Model references: what `--model` (and `wick pull`, `wick chat`) accepts.
//!
//! - a catalog id (`smollm2-135m-instruct`);
//! - a path to a GGUF file (`./gemma-3-270m-q4_k_m.gguf`): the catalog gains an entry for
//!   it, named by `--alias` or the file's stem, family `open source`, tier `--tier`
//!   (tier_1 unless given), its context from the GGUF (at most [`PATH_CONTEXT`] tokens
//!   unless `--ctx-size` asks for more). No sha256 is needed; the file is used where it is.
//!
//! The file's header is read at once, so a file that is not a GGUF, or of an architecture
//! wick does not run, stops the start with that reason rather than at the first request.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::quantized::gguf_file;

use super::{Catalog, ModelEntry, Source};

/// The context a model given by path gets when `--ctx-size` does not say: every slot holds
/// a full context, and 8K tokens keep a small model's cache small (the GGUF may allow 128K).
pub const PATH_CONTEXT: usize = 8192;

/// How a model given by path is described in the catalog.
#[derive(Debug, Clone, Default)]
pub struct ReferenceOptions {
    /// Its id (default: the file's stem).
    pub alias: Option<String>,
    /// Its routing tier (default: tier_1).
    pub tier: Option<String>,
    /// The context asked for with `--ctx-size`.
    pub context: Option<usize>,
}

impl Catalog {
    /// The catalog id `reference` stands for, adding an entry for a GGUF given by path.
    pub fn resolve(
        &mut self,
        reference: &str,
        options: &ReferenceOptions,
    ) -> anyhow::Result<String> {
        if self.get(reference).is_some() {
            return Ok(reference.to_string());
        }
        if !looks_like_a_path(reference) {
            let ids: Vec<&str> = self.models.iter().map(|m| m.id.as_str()).collect();
            bail!(
                "model '{reference}' is not in the catalog (it has: {}); give a catalog id \
                 or the path to a .gguf file",
                ids.join(", ")
            );
        }
        let path = PathBuf::from(reference);
        if !path.is_file() {
            bail!(
                "model file {} does not exist (or is not a file)",
                path.display()
            );
        }
        let path = std::fs::canonicalize(&path)
            .with_context(|| format!("resolving {}", path.display()))?;
        // The same file given twice is one model.
        if let Some(known) = self.models.iter().find(|m| m.path.as_ref() == Some(&path)) {
            return Ok(known.id.clone());
        }
        let entry = entry_for_file(&path, options)?;
        if self.get(&entry.id).is_some() {
            bail!(
                "model id '{}' (from {}) is already a catalog id; choose another with --alias",
                entry.id,
                path.display()
            );
        }
        let id = entry.id.clone();
        self.models.push(entry);
        Ok(id)
    }
}

/// A reference is a path when it names a .gguf file or has a folder in it.
fn looks_like_a_path(reference: &str) -> bool {
    reference.to_ascii_lowercase().ends_with(".gguf")
        || reference.contains(std::path::MAIN_SEPARATOR)
        || reference.contains('/')
}

fn entry_for_file(path: &Path, options: &ReferenceOptions) -> anyhow::Result<ModelEntry> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let content = gguf_file::Content::read(&mut file)
        .map_err(|e| anyhow::anyhow!("{} is not a readable GGUF file: {e}", path.display()))?;
    let text = |key: &str| -> Option<String> {
        content
            .metadata
            .get(key)
            .and_then(|v| v.to_string().ok())
            .cloned()
    };
    let arch = text("general.architecture")
        .with_context(|| format!("{} has no general.architecture", path.display()))?;
    if !crate::model::ARCHITECTURES.contains(&arch.as_str()) {
        bail!(
            "{}: architecture '{arch}' is not supported yet (supported: {})",
            path.display(),
            crate::model::ARCHITECTURES.join(", ")
        );
    }
    let trained = content
        .metadata
        .get(&format!("{arch}.context_length"))
        .and_then(|v| {
            v.to_u32()
                .ok()
                .map(|c| c as usize)
                .or(v.to_u64().ok().map(|c| c as usize))
        })
        .with_context(|| format!("{} has no {arch}.context_length", path.display()))?;
    let id = match &options.alias {
        Some(alias) => alias.clone(),
        None => path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .with_context(|| format!("{} has no file name", path.display()))?,
    };
    let entry = ModelEntry {
        name: text("general.name").unwrap_or_else(|| id.clone()),
        id,
        family: "open source".into(),
        tier: options.tier.clone().unwrap_or_else(|| "tier_1".into()),
        context_length: trained.min(options.context.unwrap_or(PATH_CONTEXT)).max(1),
        file: path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        sha256: None,
        size: Some(std::fs::metadata(path)?.len()),
        chat_template: None,
        tokenizer_json: None,
        sources: vec![Source::Local {
            path: path.to_path_buf(),
        }],
        path: Some(path.to_path_buf()),
    };
    super::validate::check_entry(&entry)?;
    Ok(entry)
}
