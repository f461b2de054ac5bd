//! Quantized matrix products on wick's own CPU kernels, in the shapes of SmolLM2-135M's
//! decode step: `cargo bench --bench kernels` prints one table (µs per product and the
//! weight bytes streamed per second). Thirty distinct copies of each matrix are cycled, as
//! thirty layers are in a real step, so the weights come from memory and not from cache.

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use wick::model::quant::activation::QRows;
use wick::model::quant::QMatrix;

const LAYERS: usize = 30;

fn main() {
    wick::config::init_threads(None);
    println!(
        "{:<10} {:>6} {:>6} {:>6} {:>10} {:>8}",
        "format", "rows", "k", "tokens", "µs/matmul", "GB/s"
    );
    let shapes = [
        (GgmlDType::Q4_1, 1536, 576),
        (GgmlDType::Q4_1, 576, 1536),
        (GgmlDType::Q4_1, 960, 576),
        (GgmlDType::Q8_0, 49152, 576),
    ];
    for (dtype, rows, k) in shapes {
        let copies = if rows > 10_000 { 2 } else { LAYERS };
        let mats: Vec<QMatrix> = (0..copies)
            .map(|_| {
                let w = Tensor::randn(0f32, 1f32, (rows, k), &Device::Cpu).unwrap();
                QMatrix::from_qtensor(&QTensor::quantize(&w, dtype).unwrap())
                    .unwrap()
                    .expect("a format with wick kernels")
            })
            .collect();
        let bytes_per_weight = match dtype {
            GgmlDType::Q4_1 => 20.0 / 32.0,
            _ => 34.0 / 32.0,
        };
        for tokens in [1, 8] {
            let x: Vec<f32> = (0..tokens * k)
                .map(|i| ((i * 7919) % 113) as f32 / 50.0 - 1.1)
                .collect();
            let q = QRows::quantize(&x, k);
            let mut y = vec![0f32; tokens * rows];
            // Warm up, then time enough products for a steady figure.
            for m in &mats {
                m.matmul_quantized(&q, &mut y);
            }
            let reps = (2_000_000_000.0 / (rows * k) as f64 / tokens as f64) as usize + 1;
            let start = Instant::now();
            for i in 0..reps {
                mats[i % copies].matmul_quantized(&q, &mut y);
            }
            let secs = start.elapsed().as_secs_f64() / reps as f64;
            let gbs = (rows * k) as f64 * bytes_per_weight / secs / 1e9;
            println!(
                "{:<10} {:>6} {:>6} {:>6} {:>10.1} {:>8.1}",
                format!("{dtype:?}"),
                rows,
                k,
                tokens,
                secs * 1e6,
                gbs
            );
            std::hint::black_box(&y);
        }
    }
}
