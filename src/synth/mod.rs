//! `wick synth-gguf`: a GGUF of random weights in exactly the shape of a real model file:
//! the same tensors with the same shapes and ggml types, the same hyper-parameters, a
//! synthetic vocabulary of the same size with the special tokens at their real ids, and the
//! real chat template. It measures speed where the real weights cannot be had; what it
//! generates is noise, and the file says so (`general.name`, `wick.synthetic`).
//!
//! `shapes` holds the real files' table, `vocab` the synthetic vocabulary, `weights` the
//! random tensors, `metadata` the GGUF keys, and `catalog` the one-model catalog written
//! beside the file so that `wick serve --catalog` serves it.

mod catalog;
pub mod metadata;
pub mod shapes;
pub mod vocab;
mod weights;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::quantized::{gguf_file, QTensor};
use clap::builder::PossibleValuesParser;
use clap::Args;

pub use catalog::synthetic_id;
use shapes::ModelShape;

#[derive(Debug, Clone, Args)]
pub struct SynthArgs {
    /// The real model whose shape to copy, by catalog id.
    #[arg(long, value_parser = PossibleValuesParser::new(shapes::ALL.map(|s| s.id)))]
    pub like: String,
    /// The GGUF to write. A one-model catalog that serves it is written beside it, named
    /// like it with `.toml`.
    #[arg(long)]
    pub out: PathBuf,
    /// Keep only the first N layers (each with the real layer's types), for a quick test.
    /// Default: all of the real model's.
    #[arg(long)]
    pub layers: Option<usize>,
    /// Seed of the random weights: the same seed gives the same file.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// What `write` produced.
#[derive(Debug)]
pub struct Written {
    pub gguf: PathBuf,
    /// The one-model catalog beside it.
    pub catalog: PathBuf,
    /// Size of the GGUF.
    pub bytes: u64,
}

pub fn run(args: &SynthArgs) -> anyhow::Result<()> {
    let shape = shapes::find(&args.like).expect("clap allows only the table's ids");
    let n_layers = args.layers.unwrap_or(shape.n_layers);
    let written = write(shape, &args.out, n_layers, args.seed)?;
    println!(
        "wrote {} ({}): RANDOM WEIGHTS in the shape of {}, {n_layers} of {} layers",
        written.gguf.display(),
        bytesize::ByteSize::b(written.bytes),
        shape.title,
        shape.n_layers
    );
    println!(
        "serve it with: wick serve --catalog {}   (label every figure \"random weights\")",
        written.catalog.display()
    );
    Ok(())
}

/// Write a synthetic copy of `shape` with its first `n_layers` layers to `out`, and its
/// catalog beside it.
pub fn write(
    shape: &ModelShape,
    out: &Path,
    n_layers: usize,
    seed: u64,
) -> anyhow::Result<Written> {
    if n_layers == 0 || n_layers > shape.n_layers {
        bail!(
            "--layers must be from 1 to {} (the layers of {})",
            shape.n_layers,
            shape.title
        );
    }
    let catalog_path = out.with_extension("toml");
    if catalog_path == out {
        bail!("--out must not end in .toml: that name is for the catalog written beside it");
    }
    let started = Instant::now();
    let specs = shape.tensors(n_layers);
    let values: usize = specs.iter().map(|s| s.dims.iter().product::<usize>()).sum();
    tracing::info!(
        "generating {} tensors ({values} values) in the shape of {}",
        specs.len(),
        shape.title
    );
    // One tensor at a time (each on every core); candle's writer takes them all at once, so
    // the quantized tensors, about the file's size, are held until then.
    let tensors = specs
        .iter()
        .map(|spec| {
            weights::generate(spec, seed).with_context(|| format!("generating {}", spec.name))
        })
        .collect::<anyhow::Result<Vec<QTensor>>>()?;
    let metadata = metadata::build(shape, n_layers, seed);
    write_gguf(out, &metadata, &specs, &tensors)?;
    let bytes = std::fs::metadata(out)?.len();
    std::fs::write(&catalog_path, catalog::text(shape, out, bytes)?)
        .with_context(|| format!("writing {}", catalog_path.display()))?;
    tracing::info!(
        seconds = started.elapsed().as_secs_f64(),
        "wrote {}",
        out.display()
    );
    Ok(Written {
        gguf: out.to_path_buf(),
        catalog: catalog_path,
        bytes,
    })
}

/// Write through a `.partial` file renamed at the end, so an interrupted run leaves no
/// file under the name that looks whole.
fn write_gguf(
    out: &Path,
    metadata: &[(String, gguf_file::Value)],
    specs: &[shapes::TensorSpec],
    tensors: &[QTensor],
) -> anyhow::Result<()> {
    let mut partial = out.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let metadata: Vec<(&str, &gguf_file::Value)> =
        metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<(&str, &QTensor)> =
        specs.iter().map(|s| s.name.as_str()).zip(tensors).collect();
    let written = File::create(&partial)
        .map_err(anyhow::Error::from)
        .and_then(|file| {
            let mut w = BufWriter::new(file);
            gguf_file::write(&mut w, &metadata, &tensors)?;
            w.flush()?;
            Ok(())
        })
        .and_then(|()| Ok(std::fs::rename(&partial, out)?));
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written.with_context(|| format!("writing {}", out.display()))
}
