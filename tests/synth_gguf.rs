//! `wick synth-gguf`: the built-in table against the real files (when they are in the model
//! cache), and a two-layer Qwen-shaped file that wick's own loader loads and runs.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;
use candle_core::Device;
use wick::catalog::{Catalog, ModelStore};
use wick::model::{KvPool, KvShape, SeqChunk};
use wick::synth::shapes::{self, ModelShape};
use wick::synth::vocab::Vocab;

/// Name → (dims, type) of a GGUF's tensors.
type Table = BTreeMap<String, (Vec<usize>, GgmlDType)>;

fn table_of(content: &Content) -> Table {
    content
        .tensor_infos
        .iter()
        .map(|(name, info)| (name.clone(), (info.shape.dims().to_vec(), info.ggml_dtype)))
        .collect()
}

fn builtin_table(shape: &ModelShape, n_layers: usize) -> Table {
    shape
        .tensors(n_layers)
        .into_iter()
        .map(|t| (t.name, (t.dims, t.dtype)))
        .collect()
}

fn read(path: &Path) -> Content {
    Content::read(&mut File::open(path).unwrap()).unwrap()
}

/// The real model file, if it is in the model cache (never downloaded here).
fn real_file(shape: &ModelShape) -> Option<Content> {
    let entry = Catalog::builtin().get(shape.id).unwrap().clone();
    let path = ModelStore::default_dir().join("models").join(&entry.file);
    if !path.is_file() {
        eprintln!(
            "{} is not in the model cache: comparison skipped",
            entry.file
        );
        return None;
    }
    Some(read(&path))
}

fn debug(value: Option<&Value>) -> String {
    format!("{value:?}")
}

#[test]
fn the_table_is_the_real_files() {
    for shape in shapes::ALL {
        let Some(real) = real_file(shape) else {
            continue;
        };
        assert_eq!(
            builtin_table(shape, shape.n_layers),
            table_of(&real),
            "{}",
            shape.id
        );

        let ours: BTreeMap<String, Value> = wick::synth::metadata::build(shape, shape.n_layers, 0)
            .into_iter()
            .collect();
        // Every hyper-parameter and tokenizer key of the real file, with the real value.
        let arch = shape.architecture;
        for (key, value) in &real.metadata {
            let generated_elsewise = ["tokens", "token_type", "merges"]
                .iter()
                .any(|k| key == &format!("tokenizer.ggml.{k}"));
            let copied = key.starts_with(&format!("{arch}."))
                || (key.starts_with("tokenizer.") && !generated_elsewise)
                || key == "general.architecture"
                || key == "general.file_type"
                || key == "general.quantization_version";
            if copied {
                assert_eq!(debug(ours.get(key)), debug(Some(value)), "{key}");
            }
        }

        // The vocabulary: its size, and the special and unused tokens at their real ids.
        let vocab = Vocab::build(shape.tokenizer.segments);
        let real_tokens = real.metadata["tokenizer.ggml.tokens"].to_vec().unwrap();
        let real_types = real.metadata["tokenizer.ggml.token_type"].to_vec().unwrap();
        assert_eq!(vocab.tokens.len(), real_tokens.len());
        assert_eq!(vocab.tokens.len(), shape.vocab);
        for (id, (token, ty)) in real_tokens.iter().zip(real_types).enumerate() {
            let (token, ty) = (token.to_string().unwrap(), ty.to_i32().unwrap());
            if ty != 1 {
                assert_eq!((&vocab.tokens[id], vocab.types[id]), (token, ty), "id {id}");
            }
        }
        if shape.id == "qwen2.5-coder-1.5b-instruct" {
            // Qwen's vocabulary opens with the 256 byte tokens, in GPT-2's order.
            for (id, token) in real_tokens.iter().take(256).enumerate() {
                assert_eq!(&vocab.tokens[id], token.to_string().unwrap(), "id {id}");
            }
        }
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_two_layer_qwen_loads_and_runs() {
    let shape = &shapes::QWEN2_5_CODER_1_5B_INSTRUCT;
    let dir = TempDir(std::env::temp_dir().join(format!("wick-synth-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let out = dir.0.join("qwen-synthetic.gguf");
    let written = wick::synth::write(shape, &out, 2, 1).unwrap();

    let content = read(&written.gguf);
    let table = table_of(&content);
    assert_eq!(table, builtin_table(shape, 2));
    if let Some(real) = real_file(shape) {
        let real = table_of(&real);
        for (name, spec) in &table {
            assert_eq!(Some(spec), real.get(name), "{name}");
        }
    }
    let meta = |key: &str| content.metadata[key].clone();
    let name = meta("general.name").to_string().unwrap().clone();
    assert!(name.starts_with("SYNTHETIC random weights"), "{name}");
    assert!(meta("wick.synthetic").to_bool().unwrap());
    assert_eq!(meta("qwen2.block_count").to_u32().unwrap(), 2);

    // Served through the catalog written beside it, by wick's own loader.
    let catalog = Catalog::load(&written.catalog).unwrap();
    let mut entry = catalog.default_entry().clone();
    assert_eq!(entry.id, wick::synth::synthetic_id(shape));
    let store = ModelStore::new(dir.0.join("cache"));
    assert_eq!(store.locate(&catalog, &entry), Some(written.gguf.clone()));
    entry.context_length = 256;
    let loaded = wick::model::load(&written.gguf, &entry, &Device::Cpu).unwrap();

    let tokenizer = &loaded.frontend.tokenizer;
    let ids = tokenizer
        .encode("<|im_start|>user\nhello there<|im_end|>\n<|im_start|>assistant\n")
        .unwrap();
    assert_eq!(ids[0], 151_644, "<|im_start|> keeps its real id");
    assert!(
        tokenizer.stop_ids().contains(&151_645),
        "<|im_end|> ends a turn"
    );

    let model = &loaded.weights;
    let c = model.config().clone();
    let mut kv = KvPool::new(
        KvShape {
            n_layers: c.n_layers,
            n_kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
            capacity: 64,
        },
        1,
        Device::Cpu,
    );
    let slot = kv.acquire().unwrap().unwrap();
    let chunk = SeqChunk {
        slot,
        start: 0,
        tokens: &ids,
        want_logits: true,
    };
    let logits = model
        .forward(&[chunk], &kv)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    assert_eq!(logits.len(), 1);
    assert_eq!(logits[0].len(), shape.vocab);
    assert!(logits[0].iter().all(|x| x.is_finite()));
}
