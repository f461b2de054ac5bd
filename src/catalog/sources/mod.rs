//! The kinds of source a model file can come from, one module each, and what they share:
//! how a source is named in messages, and how a finished download enters the cache.

pub(super) mod hf;
pub(super) mod local;
pub(super) mod wheel;

use std::error::Error;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::files::PartialFile;
use super::verify;
use super::{Catalog, Source};

/// Where a downloaded model file goes, and what it must be to be accepted there.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub final_path: PathBuf,
    pub marker: PathBuf,
    pub sha256: Option<String>,
    pub size: Option<u64>,
}

impl Target {
    /// A partial file next to the final one, in a folder that exists.
    pub fn partial(&self) -> Result<PartialFile> {
        if let Some(dir) = self.final_path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        }
        PartialFile::create(&self.final_path)
            .map_err(|e| anyhow::anyhow!("cannot write next to {}: {e}", self.final_path.display()))
    }

    /// Checks a fully written partial file and moves it into place; on any mismatch the
    /// partial file is deleted (when dropped) and the source counts as failed.
    pub fn install(&self, mut partial: PartialFile) -> Result<PathBuf> {
        let actual = partial.finish()?;
        if let Some(size) = self.size {
            if partial.written() != size {
                bail!(
                    "got {} bytes, expected {size} (size in the catalog)",
                    partial.written()
                );
            }
        }
        if let Some(expected) = &self.sha256 {
            if !actual.eq_ignore_ascii_case(expected) {
                bail!(verify::mismatch(expected, &actual));
            }
        }
        partial
            .commit(&self.final_path)
            .map_err(|e| anyhow::anyhow!("cannot move into {}: {e}", self.final_path.display()))?;
        // The hash was just taken while writing: remember it so no start has to redo it.
        if let Err(e) = verify::record(&self.marker, &self.final_path, &actual) {
            tracing::warn!("cannot write {}: {e}", self.marker.display());
        }
        Ok(self.final_path.clone())
    }
}

/// A local source's path: relative paths are relative to the catalog file's folder.
pub(super) fn resolve(catalog: &Catalog, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        catalog.base_dir.join(path)
    }
}

/// How a source is named in messages: kind, then what identifies it.
pub(super) fn describe(catalog: &Catalog, source: &Source) -> String {
    match source {
        Source::Local { path } => format!("local {}", resolve(catalog, path).display()),
        Source::Hf {
            repo,
            file,
            revision,
        } => match revision {
            Some(rev) => format!("hf {repo}/{file} (revision {rev})"),
            None => format!("hf {repo}/{file}"),
        },
        Source::Wheel { parts } => match parts.as_slice() {
            [one] => format!("wheel {}=={}", one.package, one.version),
            [first, .., last] => format!(
                "wheel {}=={} … {}=={} ({} parts)",
                first.package,
                first.version,
                last.package,
                last.version,
                parts.len()
            ),
            [] => "wheel (no parts)".to_string(),
        },
    }
}

/// An error and its causes on one line, skipping a cause that its parent already quotes
/// (hf-hub's errors repeat reqwest's message in their own).
pub(super) fn one_line(err: &(dyn Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let msg = c.to_string();
        if !text.contains(&msg) {
            text.push_str(": ");
            text.push_str(&msg);
        }
        cause = c.source();
    }
    text.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::WheelPart;

    #[test]
    fn sources_are_named_for_people() {
        let catalog = Catalog::parse(crate::catalog::BUILTIN_CATALOG, Path::new("/cat")).unwrap();
        let local = Source::Local {
            path: "models/a.gguf".into(),
        };
        assert_eq!(describe(&catalog, &local), "local /cat/models/a.gguf");
        let abs = Source::Local {
            path: "/x/a.gguf".into(),
        };
        assert_eq!(describe(&catalog, &abs), "local /x/a.gguf");
        let part = |n: u32| WheelPart {
            package: format!("p{n}"),
            version: "1.0".into(),
            file: "f".into(),
        };
        let wheel = Source::Wheel {
            parts: vec![part(1), part(2), part(3)],
        };
        assert_eq!(
            describe(&catalog, &wheel),
            "wheel p1==1.0 … p3==1.0 (3 parts)"
        );
    }
}
