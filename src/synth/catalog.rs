//! A one-model catalog beside a synthetic GGUF, so `wick serve --catalog FILE` (and
//! `wick bench --catalog FILE`) serve it like any model, under an id that says it is synthetic.

use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use super::metadata::synthetic_name;
use super::shapes::ModelShape;
use crate::catalog::Catalog;

#[derive(Serialize)]
struct CatalogFile<'a> {
    default: &'a str,
    model: [Entry<'a>; 1],
}

#[derive(Serialize)]
struct Entry<'a> {
    id: &'a str,
    name: &'a str,
    family: &'a str,
    tier: &'a str,
    context_length: usize,
    file: &'a str,
    size: u64,
    source: [LocalSource<'a>; 1],
}

#[derive(Serialize)]
struct LocalSource<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    path: &'a str,
}

/// The id a synthetic copy of `shape` is served under.
pub fn synthetic_id(shape: &ModelShape) -> String {
    format!("synthetic-{}", shape.id)
}

/// The catalog text for the GGUF at `gguf` (of `size` bytes), which it names by file name
/// alone: the catalog lives in the same folder. Family, tier and context length are the
/// real model's, from the built-in catalog.
pub fn text(shape: &ModelShape, gguf: &Path, size: u64) -> anyhow::Result<String> {
    let real = Catalog::builtin();
    let real = real
        .get(shape.id)
        .with_context(|| format!("the built-in catalog has no '{}'", shape.id))?;
    let file = gguf
        .file_name()
        .and_then(|name| name.to_str())
        .with_context(|| format!("{} has no UTF-8 file name", gguf.display()))?;
    let (id, name) = (synthetic_id(shape), synthetic_name(shape));
    let catalog = CatalogFile {
        default: &id,
        model: [Entry {
            id: &id,
            name: &name,
            family: &real.family,
            tier: &real.tier,
            context_length: real.context_length,
            file,
            size,
            source: [LocalSource {
                kind: "local",
                path: file,
            }],
        }],
    };
    let body = toml::to_string(&catalog).context("writing the catalog")?;
    Ok(format!(
        "# Written by `wick synth-gguf`: RANDOM WEIGHTS in the shape of {}.\n\
         # Label every figure measured with it \"random weights\".\n\n{body}",
        shape.title
    ))
}
