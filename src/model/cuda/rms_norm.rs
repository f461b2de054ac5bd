//! RMS normalisation of the rows of a matrix, `x / sqrt(mean(x²) + eps) * weight`: kernel
//! `rms_norm_f32` of `kernels/rms_norm_rope.cu`, one block per row, for rows that may be a
//! strided view (no copy to make them contiguous first).

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use super::operands::{cpu_contiguous, cpu_rows};
use super::rows::Rows;

/// `x`: `[rows, width]` f32 with contiguous rows; `weight`: `[width]` f32. Returns a new
/// contiguous `[rows, width]`.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    x.apply_op2_no_bwd(weight, &RmsNorm { eps })
}

/// The reference for one row, in the order of candle's CPU `rms_norm` (a plain sum of
/// squares, then a division by the root), so the two agree to the bit.
pub fn rms_norm_row(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let squares: f32 = x.iter().map(|v| v * v).sum();
    let root = (squares / x.len() as f32 + eps).sqrt();
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = v / root * w;
    }
}

pub struct RmsNorm {
    pub eps: f32,
}

impl RmsNorm {
    fn check(x: &Rows, weight_len: usize) -> Result<()> {
        if weight_len != x.width {
            bail!(
                "rms_norm: weight has {weight_len} elements for rows of {}",
                x.width
            );
        }
        Ok(())
    }
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "wick-rms-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        weight: &CpuStorage,
        weight_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let rows = Rows::of(x_layout, "rms_norm x")?;
        let x = cpu_rows::<f32>(x, &rows, "rms_norm x")?;
        let weight = cpu_contiguous::<f32>(weight, weight_layout, "rms_norm weight")?;
        Self::check(&rows, weight.len())?;
        let mut out = vec![0f32; rows.rows * rows.width];
        for (r, dst) in out.chunks_exact_mut(rows.width.max(1)).enumerate() {
            let src = &x[r * rows.stride..][..rows.width];
            rms_norm_row(src, weight, self.eps, dst);
        }
        Ok((CpuStorage::F32(out), Shape::from((rows.rows, rows.width))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        x_layout: &Layout,
        weight: &candle_core::CudaStorage,
        weight_layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::WrapErr;
        use candle_core::CudaStorage;

        use super::launch::{function, RMS_NORM_ROPE};
        use super::operands::cuda;

        /// Threads per row: hidden sizes of a few thousand give each thread a handful.
        const THREADS: u32 = 256;

        let device = x.device.clone();
        let rows = Rows::of(x_layout, "rms_norm x")?;
        let x = cuda::rows::<f32>(x, &rows, "rms_norm x")?;
        let weight = cuda::contiguous::<f32>(weight, weight_layout, "rms_norm weight")?;
        Self::check(&rows, weight.len())?;
        let shape = Shape::from((rows.rows, rows.width));
        // SAFETY: the kernel writes every element before anything reads it.
        let mut out = unsafe { device.alloc::<f32>(rows.rows * rows.width) }?;
        if rows.rows > 0 && rows.width > 0 {
            let func = function(&device, RMS_NORM_ROPE, "rms_norm_f32")?;
            let stream = device.cuda_stream();
            let (width, stride) = (rows.width as u32, rows.stride as u32);
            let mut launch = stream.launch_builder(&func);
            launch
                .arg(&x)
                .arg(&weight)
                .arg(&mut out)
                .arg(&width)
                .arg(&stride)
                .arg(&self.eps);
            let config = LaunchConfig {
                grid_dim: (rows.rows as u32, 1, 1),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: the arguments match the kernel's signature; views cover every row.
            unsafe { launch.launch(config) }.w()?;
        }
        Ok((CudaStorage::wrap_cuda_slice(out, device), shape))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::model::cuda::test_util::{max_abs_diff, uniform};
    use crate::model::ops;

    #[test]
    fn reference_is_wicks_rms_norm_to_the_bit() {
        let (rows, width) = (5, 896);
        let x = Tensor::from_vec(uniform(rows * width, 1), (rows, width), &Device::Cpu).unwrap();
        let w = Tensor::from_vec(uniform(width, 2), width, &Device::Cpu).unwrap();
        let want = ops::rms_norm(&x, &w, 1e-6).unwrap();
        let got = rms_norm(&x, &w, 1e-6).unwrap();
        assert_eq!(max_abs_diff(&got, &want), 0.0);
    }

    #[test]
    fn strided_rows_read_only_their_columns() {
        // The middle 64 columns of a [3, 192] matrix, as a narrow of a stacked projection.
        let wide = Tensor::from_vec(uniform(3 * 192, 3), (3, 192), &Device::Cpu).unwrap();
        let w = Tensor::from_vec(uniform(64, 4), 64, &Device::Cpu).unwrap();
        let view = wide.narrow(1, 64, 64).unwrap();
        let want = ops::rms_norm(&view.contiguous().unwrap(), &w, 1e-5).unwrap();
        let got = rms_norm(&view, &w, 1e-5).unwrap();
        assert_eq!(max_abs_diff(&got, &want), 0.0);
    }

    #[test]
    fn a_weight_of_the_wrong_width_is_an_error() {
        let x = Tensor::zeros((2, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::zeros(7, candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(rms_norm(&x, &w, 1e-5).is_err());
    }
}

#[cfg(all(test, feature = "cuda"))]
mod gpu_tests {
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::model::cuda::test_util::{max_rel_diff, uniform};

    #[test]
    #[ignore = "needs a CUDA GPU: cargo test --features cuda -- --ignored"]
    fn kernel_matches_the_reference() {
        let gpu = Device::new_cuda(0).unwrap();
        // Qwen2.5-0.5B's hidden size, 1.5B's, and a row shorter than the block.
        for (rows, width) in [(7, 896), (3, 1536), (4, 100)] {
            let xs = uniform(rows * 2 * width, rows as u64);
            let ws = uniform(width, 99);
            let on = |device: &Device| {
                let x = Tensor::from_vec(xs.clone(), (rows, 2 * width), device).unwrap();
                let w = Tensor::from_vec(ws.clone(), width, device).unwrap();
                // A strided view: the second half of each row.
                let view = x.narrow(1, width, width).unwrap();
                rms_norm(&view, &w, 1e-6)
                    .unwrap()
                    .to_device(&Device::Cpu)
                    .unwrap()
            };
            let (got, want) = (on(&gpu), on(&Device::Cpu));
            // Only the order of the sum of squares differs: a few ulps.
            assert!(
                max_rel_diff(&got, &want) < 1e-5,
                "rows {rows} width {width}"
            );
        }
    }
}
