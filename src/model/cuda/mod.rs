//! wick's own CUDA kernels, each behind a candle op or a small function whose CPU side is a
//! plain Rust reference of what the kernel computes.
//!
//! The kernel sources live in `kernels/` at the repository root; `build.rs` compiles them to
//! PTX under the `cuda` feature and `ptx.rs` embeds it. Everything that touches the GPU is
//! behind that feature. The CPU references are always compiled: their tests check them
//! against wick's own CPU ops (`ops::rms_norm`, `RopeTables`, `ops::attention_host`, the
//! sampler), so a GPU test that matches a reference matches wick.
//!
//! - [`rms_norm`]: RMS normalisation of rows.
//! - [`rope`]: rotary embedding in place, each row at its own position.
//! - [`paged_kv`]: a KV cache in fixed-size f16 blocks, and the write of new keys and values.
//! - [`paged_attention`]: decode attention over that cache.
//! - [`sampling`]: one token per row of logits with the row's own settings.
//!
//! GPU tests are `#[ignore]`d (CI has no GPU); run them on a GPU machine with
//! `cargo test --release --features cuda --lib model::cuda -- --ignored`.

pub mod paged_attention;
pub mod paged_kv;
pub mod rms_norm;
pub mod rope;
pub mod sampling;

mod operands;
mod rows;

#[cfg(feature = "cuda")]
mod launch;
#[cfg(feature = "cuda")]
mod ptx;

#[cfg(test)]
mod test_util;
