//! A model's GGUF as one file or as the parts llama.cpp's `gguf-split` writes
//! (`NAME-00001-of-00003.gguf`, ...): the first part holds all the metadata, every part its
//! own tensors, and each says `split.no` of `split.count`. Opening the first part finds the
//! others beside it; tensors are then read from whichever part holds them.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::quantized::{gguf_file, QTensor};
use candle_core::Device;

/// The parts of one model, the first holding the metadata.
pub struct GgufModel {
    parts: Vec<Part>,
    /// Which part holds each tensor.
    holder: HashMap<String, usize>,
}

struct Part {
    content: gguf_file::Content,
    file: File,
}

/// `NAME-00002-of-00003.gguf` → (`NAME`, 2, 3): llama.cpp's split naming.
pub fn split_name(path: &Path) -> Option<(String, u32, u32)> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_suffix(".gguf")?;
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (prefix, no) = rest.rsplit_once('-')?;
    let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(no) || !digits(count) {
        return None;
    }
    Some((prefix.to_string(), no.parse().ok()?, count.parse().ok()?))
}

/// Every file of the model `path` names: itself, or all parts of a split when it is the first.
pub fn part_paths(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let Some((prefix, no, count)) = split_name(path) else {
        return Ok(vec![path.to_path_buf()]);
    };
    if no != 1 {
        bail!(
            "{} is part {no} of a split GGUF: give its first part, {prefix}-00001-of-{count:05}.gguf",
            path.display()
        );
    }
    let folder = path.parent().unwrap_or(Path::new(""));
    let paths: Vec<PathBuf> = (1..=count)
        .map(|k| folder.join(format!("{prefix}-{k:05}-of-{count:05}.gguf")))
        .collect();
    if let Some(missing) = paths.iter().find(|p| !p.is_file()) {
        bail!(
            "{} is missing: a split GGUF needs all {count} parts in one folder",
            missing.display()
        );
    }
    Ok(paths)
}

/// Bytes on disk of the model `path` names, all parts together.
pub fn model_size(path: &Path) -> anyhow::Result<u64> {
    part_paths(path)?
        .iter()
        .map(|p| {
            Ok(std::fs::metadata(p)
                .with_context(|| p.display().to_string())?
                .len())
        })
        .sum()
}

/// The metadata of the model `path` names (its first part's header).
pub fn read_header(path: &Path) -> anyhow::Result<gguf_file::Content> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    gguf_file::Content::read(&mut file)
        .map_err(|e| anyhow::anyhow!("{} is not a readable GGUF file: {e}", path.display()))
}

impl GgufModel {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let paths = part_paths(path)?;
        let count = paths.len();
        let mut parts = Vec::with_capacity(count);
        let mut holder = HashMap::new();
        for (index, part) in paths.iter().enumerate() {
            let content = read_header(part)?;
            if count > 1 {
                check_part(&content, part, index, count)?;
            }
            for name in content.tensor_infos.keys() {
                if holder.insert(name.clone(), index).is_some() {
                    bail!(
                        "tensor {name} is in more than one part of {}",
                        path.display()
                    );
                }
            }
            let file = File::open(part).with_context(|| format!("opening {}", part.display()))?;
            parts.push(Part { content, file });
        }
        if count > 1 {
            let expected = split_u64(&parts[0].content, "split.tensors.count");
            if expected.is_some_and(|n| n != holder.len() as u64) {
                bail!(
                    "{}: the parts hold {} tensors, the first part says {}",
                    path.display(),
                    holder.len(),
                    expected.unwrap_or_default()
                );
            }
        }
        Ok(Self { parts, holder })
    }

    /// The model's metadata (and the first part's tensor list).
    pub fn content(&self) -> &gguf_file::Content {
        &self.parts[0].content
    }

    pub fn has(&self, name: &str) -> bool {
        self.holder.contains_key(name)
    }

    pub fn tensor(&mut self, name: &str, device: &Device) -> candle_core::Result<QTensor> {
        let index = *self.holder.get(name).ok_or_else(|| {
            candle_core::Error::Msg(format!("cannot find tensor info for {name}"))
        })?;
        let part = &mut self.parts[index];
        part.content.tensor(&mut part.file, name, device)
    }
}

fn split_u64(content: &gguf_file::Content, key: &str) -> Option<u64> {
    let v = content.metadata.get(key)?;
    v.to_u16()
        .map(u64::from)
        .or_else(|_| v.to_u32().map(u64::from))
        .or_else(|_| v.to_i32().map(|x| x.max(0) as u64))
        .or_else(|_| v.to_u64())
        .ok()
}

/// A part must say it is this part of this many, so parts of two models are never mixed.
fn check_part(
    content: &gguf_file::Content,
    path: &Path,
    index: usize,
    count: usize,
) -> anyhow::Result<()> {
    let no = split_u64(content, "split.no");
    let of = split_u64(content, "split.count");
    if no != Some(index as u64) || of != Some(count as u64) {
        bail!(
            "{} says it is part {} of {}, but its name says {} of {count}",
            path.display(),
            no.map_or("?".into(), |n| (n + 1).to_string()),
            of.map_or("?".into(), |n| n.to_string()),
            index + 1
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_names_are_llama_cpp_s() {
        let name = |s: &str| split_name(Path::new(s));
        assert_eq!(
            name("/m/qwen-7b-q4_k_m-00001-of-00003.gguf"),
            Some(("qwen-7b-q4_k_m".into(), 1, 3))
        );
        assert_eq!(name("model.gguf"), None);
        assert_eq!(name("model-1-of-3.gguf"), None);
        assert_eq!(name("model-00001-of-00002.bin"), None);
    }
}
