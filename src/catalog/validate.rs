//! Checks a parsed catalog, so that the rest of wick can trust it: every error names the
//! entry and the field at fault.

use std::collections::HashSet;
use std::path::{Component, Path};

use anyhow::{bail, Result};

use super::{Catalog, ModelEntry, Source};

const TIERS: [&str; 4] = ["tier_1", "tier_2", "tier_3", "tier_4"];

pub(super) fn check(catalog: &Catalog) -> Result<()> {
    if catalog.models.is_empty() {
        bail!("the catalog has no [[model]] entries");
    }
    let mut seen = HashSet::new();
    for (index, entry) in catalog.models.iter().enumerate() {
        // Entries are numbered from 1, as a reader counts them in the file.
        let at = format!("model #{} ('{}')", index + 1, entry.id);
        if entry.id.trim().is_empty() {
            bail!("model #{}: field `id` is empty", index + 1);
        }
        if !seen.insert(entry.id.as_str()) {
            bail!(
                "{at}: field `id`: '{}' is used by an earlier model",
                entry.id
            );
        }
        check_entry(entry).map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
    }
    if catalog.get(&catalog.default).is_none() {
        bail!(
            "field `default`: '{}' names no model (ids: {})",
            catalog.default,
            catalog
                .models
                .iter()
                .map(|m| m.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

pub(super) fn check_entry(entry: &ModelEntry) -> Result<()> {
    if !TIERS.contains(&entry.tier.as_str()) {
        bail!(
            "field `tier`: '{}' is not one of {}",
            entry.tier,
            TIERS.join(", ")
        );
    }
    if entry.pooled_embeddings.is_some() && (entry.embedding || entry.is_upstream()) {
        bail!(
            "field `pooled_embeddings` is for a chat model this server runs (an embedding \
             model pools as its GGUF says; an upstream model's embeddings are not forwarded)"
        );
    }
    if let Some(upstream) = &entry.upstream {
        return check_upstream(upstream, entry);
    }
    if entry.context_length == 0 {
        bail!("field `context_length` is missing or 0");
    }
    // `file` is joined to the cache folder: a path there could write outside it.
    if !is_plain_file_name(&entry.file) {
        bail!(
            "field `file`: '{}' must be a plain file name (no folders)",
            entry.file
        );
    }
    if let Some(sha) = &entry.sha256 {
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("field `sha256`: '{sha}' is not 64 hex digits");
        }
    }
    if entry.sources.is_empty() {
        bail!("no [[model.source]]: give at least one place to get the file from");
    }
    for (index, source) in entry.sources.iter().enumerate() {
        check_source(source).map_err(|e| anyhow::anyhow!("source #{}: {e}", index + 1))?;
    }
    Ok(())
}

fn check_source(source: &Source) -> Result<()> {
    match source {
        Source::Local { path } => {
            if path.as_os_str().is_empty() {
                bail!("field `path` is empty");
            }
        }
        Source::Hf { repo, file, .. } => {
            if repo.trim().is_empty() {
                bail!("field `repo` is empty");
            }
            if file.trim().is_empty() {
                bail!("field `file` is empty");
            }
        }
        Source::Wheel { parts } => {
            if parts.is_empty() {
                bail!("field `parts` is empty");
            }
            for (index, part) in parts.iter().enumerate() {
                for (field, value) in [
                    ("package", &part.package),
                    ("version", &part.version),
                    ("file", &part.file),
                ] {
                    if value.trim().is_empty() {
                        bail!("part #{}: field `{field}` is empty", index + 1);
                    }
                }
            }
        }
    }
    Ok(())
}

/// An upstream entry needs at least one http(s) base URL and no local sources.
fn check_upstream(upstream: &super::UpstreamEntry, entry: &ModelEntry) -> Result<()> {
    if !entry.sources.is_empty() {
        bail!("[model.upstream] and [[model.source]] exclude each other: wick either runs a model or forwards to it");
    }
    let urls = upstream.replica_urls();
    if urls.is_empty() {
        bail!("[model.upstream] needs `url` or `urls`");
    }
    for url in &urls {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| anyhow::anyhow!("[model.upstream]: '{url}' is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            bail!("[model.upstream]: '{url}' must be an http:// or https:// base URL");
        }
    }
    if let Some(var) = &upstream.api_key_env {
        if var.trim().is_empty() {
            bail!("[model.upstream]: field `api_key_env` is empty");
        }
    }
    if upstream
        .model
        .as_deref()
        .is_some_and(|m| m.trim().is_empty())
    {
        bail!("[model.upstream]: field `model` is empty");
    }
    Ok(())
}

fn is_plain_file_name(name: &str) -> bool {
    let mut components = Path::new(name).components();
    matches!(
        (components.next(), components.next()),
        (Some(Component::Normal(_)), None)
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::catalog::{Catalog, BUILTIN_CATALOG};

    const ONE: &str = r#"
default = "a"

[[model]]
id = "a"
family = "open source"
tier = "tier_1"
context_length = 2048
file = "a.gguf"

[[model.source]]
type = "local"
path = "a.gguf"
"#;

    fn parse_err(text: &str) -> String {
        format!("{:#}", Catalog::parse(text, Path::new(".")).unwrap_err())
    }

    #[test]
    fn builtin_catalog_parses() {
        let catalog = Catalog::parse(BUILTIN_CATALOG, Path::new("/base")).unwrap();
        let default = catalog.default_entry();
        assert_eq!(default.id, "smollm2-135m-instruct");
        assert_eq!(default.size, Some(98_362_432));
        assert!(default.sources.len() >= 2);
        assert_eq!(catalog.base_dir, Path::new("/base"));
        assert!(catalog.get("qwen2.5-coder-0.5b-instruct").is_some());
        assert!(catalog.get("nope").is_none());
        assert_eq!(Catalog::builtin().default, catalog.default);
    }

    #[test]
    fn minimal_catalog_parses() {
        let catalog = Catalog::parse(ONE, Path::new(".")).unwrap();
        assert_eq!(catalog.default_entry().file, "a.gguf");
        assert_eq!(catalog.default_entry().name, "");
    }

    #[test]
    fn duplicate_id_is_rejected() {
        let text = format!("{ONE}{}", &ONE[ONE.find("[[model]]").unwrap()..]);
        let err = parse_err(&text);
        assert!(err.contains("model #2 ('a')"), "{err}");
        assert!(err.contains("`id`"), "{err}");
    }

    #[test]
    fn unknown_default_is_rejected() {
        let err = parse_err(&ONE.replace("default = \"a\"", "default = \"b\""));
        assert!(err.contains("`default`") && err.contains("'b'"), "{err}");
    }

    #[test]
    fn bad_tier_is_rejected() {
        let err = parse_err(&ONE.replace("tier_1", "tier_5"));
        assert!(err.contains("model #1 ('a')"), "{err}");
        assert!(err.contains("`tier`") && err.contains("tier_5"), "{err}");
    }

    #[test]
    fn model_without_source_is_rejected() {
        let text = &ONE[..ONE.find("[[model.source]]").unwrap()];
        let err = parse_err(text);
        assert!(err.contains("model #1 ('a')"), "{err}");
        assert!(err.contains("[[model.source]]"), "{err}");
    }

    #[test]
    fn a_path_only_entry_takes_its_file_name_from_the_path() {
        let text = ONE.replace("file = \"a.gguf\"\n", "").replace(
            "path = \"a.gguf\"",
            "path = \"/models/qwen3-8b-q4_k_m.gguf\"",
        );
        let catalog = Catalog::parse(&text, Path::new(".")).unwrap();
        assert_eq!(catalog.models[0].file, "qwen3-8b-q4_k_m.gguf");
        assert_eq!(catalog.models[0].sha256, None);
        // Without a local source there is nothing to take it from.
        let hub = ONE.replace("file = \"a.gguf\"\n", "").replace(
            "type = \"local\"\npath = \"a.gguf\"",
            "type = \"hf\"\nrepo = \"o/r\"\nfile = \"a.gguf\"",
        );
        assert!(parse_err(&hub).contains("`file`"));
    }

    #[test]
    fn file_with_folders_is_rejected() {
        let err = parse_err(&ONE.replace("file = \"a.gguf\"", "file = \"../a.gguf\""));
        assert!(err.contains("`file`"), "{err}");
    }

    #[test]
    fn bad_sha_and_empty_wheel_are_rejected() {
        let err =
            parse_err(&ONE.replace("file = \"a.gguf\"", "file = \"a.gguf\"\nsha256 = \"xyz\""));
        assert!(err.contains("`sha256`"), "{err}");
        let wheel = ONE.replace(
            "type = \"local\"\npath = \"a.gguf\"",
            "type = \"wheel\"\nparts = []",
        );
        let err = parse_err(&wheel);
        assert!(
            err.contains("source #1") && err.contains("`parts`"),
            "{err}"
        );
    }

    #[test]
    fn load_resolves_against_the_file_folder_and_names_the_file() {
        let dir = crate::catalog::files::test_dir("load");
        let file = dir.path().join("models.toml");
        std::fs::write(&file, ONE).unwrap();
        let catalog = Catalog::load(&file).unwrap();
        assert_eq!(catalog.base_dir, dir.path());

        std::fs::write(&file, ONE.replace("tier_1", "fast")).unwrap();
        let err = format!("{:#}", Catalog::load(&file).unwrap_err());
        assert!(err.starts_with(&file.display().to_string()), "{err}");
        let err = format!(
            "{:#}",
            Catalog::load(&dir.path().join("nope.toml")).unwrap_err()
        );
        assert!(err.contains("cannot read catalog"), "{err}");
    }

    #[test]
    fn toml_errors_say_where() {
        let err = parse_err(&ONE.replace("context_length = 2048\n", ""));
        assert!(err.contains("context_length"), "{err}");
    }
}
