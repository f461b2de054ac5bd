//! Quantized matrix products on wick's own CPU kernels, in the real shapes and formats of
//! the catalog's models (SmolLM2-135M Q4_1, Qwen2.5-Coder 0.5B and 1.5B Q4_K_M):
//! `cargo bench --bench kernels` prints one table (µs per product, the weight bytes
//! streamed per second, and for 64 tokens the multiply-adds per second, as a prompt runs
//! them). Distinct copies of each matrix are cycled, as the layers are in a real step, so
//! the weights come from memory and not from cache. `cargo bench --bench kernels -- Q6K`
//! keeps the rows whose format or model contains the word.

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use wick::model::quant::activation::QRows;
use wick::model::quant::QMatrix;

const LAYERS: usize = 30;

fn main() {
    wick::config::init_threads(None);
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    println!(
        "{:<6} {:<10} {:>6} {:>6} {:>6} {:>10} {:>8} {:>8}",
        "model", "format", "rows", "k", "tokens", "µs/matmul", "GB/s", "GMAC/s"
    );
    use GgmlDType::*;
    let shapes = [
        ("smol", Q4_1, 1536, 576),
        ("smol", Q4_1, 576, 1536),
        ("smol", Q4_1, 960, 576),
        ("smol", Q8_0, 49152, 576),
        ("0.5b", Q5_0, 896, 896),
        ("0.5b", Q5_0, 9728, 896),
        ("0.5b", Q4K, 896, 4864),
        ("0.5b", Q6K, 896, 4864),
        ("0.5b", Q8_0, 151936, 896),
        ("1.5b", Q4K, 2048, 1536),
        ("1.5b", Q4K, 17920, 1536),
        ("1.5b", Q4K, 1536, 8960),
        ("1.5b", Q6K, 1536, 8960),
        ("1.5b", Q6K, 151936, 1536),
    ];
    for (model, dtype, rows, k) in shapes {
        let name = format!("{model} {dtype:?}");
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        // About 256 MB of weights in all, well past the last-level cache.
        let one = QTensor::quantize(
            &Tensor::zeros((16, k), DType::F32, &Device::Cpu).unwrap(),
            dtype,
        )
        .unwrap()
        .storage_size_in_bytes() as f64
            / (16 * k) as f64;
        let bytes = rows as f64 * k as f64 * one;
        let copies = ((256e6 / bytes) as usize).clamp(1, LAYERS);
        let mats: Vec<QMatrix> = (0..copies)
            .map(|_| {
                let w = Tensor::randn(0f32, 1f32, (rows, k), &Device::Cpu).unwrap();
                wick::model::quant::repack(&QTensor::quantize(&w, dtype).unwrap())
                    .unwrap()
                    .expect("a format with wick kernels")
            })
            .collect();
        for tokens in [1, 8, 64, 512] {
            if tokens >= 64 && rows > 100_000 {
                continue;
            }
            let x: Vec<f32> = (0..tokens * k)
                .map(|i| ((i * 7919) % 113) as f32 / 50.0 - 1.1)
                .collect();
            let q = QRows::quantize(&x, k);
            let mut y = vec![0f32; tokens * rows];
            // Warm up, then time enough products for a steady figure.
            for m in &mats {
                m.matmul_quantized(&q, &mut y);
            }
            let reps = ((1_000_000_000.0 / (rows * k) as f64 / tokens as f64) as usize).max(10);
            let start = Instant::now();
            for i in 0..reps {
                mats[i % copies].matmul_quantized(&q, &mut y);
            }
            let secs = start.elapsed().as_secs_f64() / reps as f64;
            println!(
                "{:<6} {:<10} {:>6} {:>6} {:>6} {:>10.1} {:>8.1} {:>8.1}",
                model,
                format!("{dtype:?}"),
                rows,
                k,
                tokens,
                secs * 1e6,
                bytes / secs / 1e9,
                (rows * k * tokens) as f64 / secs / 1e9
            );
            std::hint::black_box(&y);
        }
    }
}
