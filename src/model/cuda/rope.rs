//! Rotary position embedding applied in place to the heads of a batch of rows, each row at
//! its own position: kernel `rope_f32` of `kernels/rms_norm_rope.cu`, one launch for a whole
//! batch (prefill chunks and decode tokens of many sequences alike), with wick's
//! [`RopeTables`] and either of its [`RopeStyle`]s.
//!
//! An in-place candle op writes one tensor, so q and k share a launch when one tensor holds
//! both (rows `[q heads | k heads | ...]`, as a stacked qkv projection gives): rotate its
//! first `n_heads + n_kv_heads` heads. Separate q and k tensors take a launch each.

use candle_core::{bail, CpuStorage, InplaceOp2, Layout, Result, Tensor};

use super::operands::{cpu_contiguous, Held};
use super::rows::Rows;
use crate::model::ops::{RopeStyle, RopeTables};

/// Rotate, in place, the first `heads` heads of every row of `x` (`[rows, width]` f32,
/// contiguous rows, `width >= heads * head_dim`) by the position of its row in `positions`
/// (`[rows]` u32, on `x`'s device). A position past the tables gives NaN.
pub fn rope_in_place(
    x: &Tensor,
    positions: &Tensor,
    tables: &RopeTables,
    heads: usize,
) -> Result<()> {
    let (cos, sin) = tables.tables();
    x.inplace_op2(
        positions,
        &Rope {
            cos,
            sin,
            style: tables.style(),
            heads,
        },
    )
}

/// The reference for one head of `2 * half` values at the angles of one position (`cos`,
/// `sin`: that position's rows of the tables), in the order of
/// [`RopeTables::rotate_in_place`], so the two agree to the bit.
pub fn rotate_head(head: &mut [f32], cos: &[f32], sin: &[f32], style: RopeStyle) {
    let half = cos.len();
    for i in 0..half {
        let (a, b) = match style {
            RopeStyle::Interleaved => (2 * i, 2 * i + 1),
            RopeStyle::Halves => (i, i + half),
        };
        let (x0, x1) = (head[a], head[b]);
        head[a] = x0 * cos[i] - x1 * sin[i];
        head[b] = x0 * sin[i] + x1 * cos[i];
    }
}

pub struct Rope<'a> {
    /// `[max_positions, half]` each, on the device of the rotated tensor.
    pub cos: &'a Tensor,
    pub sin: &'a Tensor,
    pub style: RopeStyle,
    pub heads: usize,
}

/// The sizes one call works with, checked against each other.
struct Plan {
    rows: Rows,
    half: usize,
    max_positions: usize,
}

impl Rope<'_> {
    fn plan(&self, x: &Layout, positions: &Layout) -> Result<Plan> {
        let rows = Rows::of(x, "rope x")?;
        let (max_positions, half) = self.cos.dims2()?;
        if self.sin.dims2()? != (max_positions, half) {
            bail!("rope: cos and sin tables differ in shape");
        }
        if self.heads * 2 * half > rows.width {
            bail!(
                "rope: {} heads of {} do not fit rows of {}",
                self.heads,
                2 * half,
                rows.width
            );
        }
        if positions.shape().elem_count() != rows.rows {
            bail!(
                "rope: {} positions for {} rows",
                positions.shape().elem_count(),
                rows.rows
            );
        }
        Ok(Plan {
            rows,
            half,
            max_positions,
        })
    }
}

impl InplaceOp2 for Rope<'_> {
    fn name(&self) -> &'static str {
        "wick-rope"
    }

    fn cpu_fwd(
        &self,
        x: &mut CpuStorage,
        x_layout: &Layout,
        positions: &CpuStorage,
        positions_layout: &Layout,
    ) -> Result<()> {
        let plan = self.plan(x_layout, positions_layout)?;
        let positions = cpu_contiguous::<u32>(positions, positions_layout, "rope positions")?;
        let (cos, sin) = (Held::new(self.cos), Held::new(self.sin));
        let (cos, sin) = (cos.cpu::<f32>("rope cos")?, sin.cpu::<f32>("rope sin")?);
        let CpuStorage::F32(x) = x else {
            bail!("rope x must be f32");
        };
        let (half, width) = (plan.half, 2 * plan.half);
        for (r, &pos) in positions.iter().enumerate() {
            let row = &mut x[plan.rows.range(r)][..self.heads * width];
            let pos = pos as usize;
            if pos >= plan.max_positions {
                row.fill(f32::NAN);
                continue;
            }
            let (cos, sin) = (&cos[pos * half..][..half], &sin[pos * half..][..half]);
            for head in row.chunks_exact_mut(width) {
                rotate_head(head, cos, sin, self.style);
            }
        }
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &mut candle_core::CudaStorage,
        x_layout: &Layout,
        positions: &candle_core::CudaStorage,
        positions_layout: &Layout,
    ) -> Result<()> {
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
        use candle_core::cuda_backend::WrapErr;

        use super::launch::{elementwise, function, RMS_NORM_ROPE};
        use super::operands::cuda;

        let plan = self.plan(x_layout, positions_layout)?;
        let pairs = plan.rows.rows * self.heads * plan.half;
        if pairs == 0 {
            return Ok(());
        }
        let device = x.device.clone();
        let positions = cuda::contiguous::<u32>(positions, positions_layout, "rope positions")?;
        let (cos, sin) = (Held::new(self.cos), Held::new(self.sin));
        let (cos, sin) = (cos.cuda::<f32>("rope cos")?, sin.cuda::<f32>("rope sin")?);
        let mut x = cuda::rows_mut::<f32>(x, &plan.rows, "rope x")?;
        let func = function(&device, RMS_NORM_ROPE, "rope_f32")?;
        let stream = device.cuda_stream();
        let stride = plan.rows.stride as u32;
        let (rows, heads) = (plan.rows.rows as u32, self.heads as u32);
        let (max_positions, half) = (plan.max_positions as u32, plan.half as u32);
        let interleaved = u32::from(self.style == RopeStyle::Interleaved);
        let mut launch = stream.launch_builder(&func);
        launch
            .arg(&mut x)
            .arg(&stride)
            .arg(&rows)
            .arg(&heads)
            .arg(&positions)
            .arg(&cos)
            .arg(&sin)
            .arg(&max_positions)
            .arg(&half)
            .arg(&interleaved);
        let config = elementwise(pairs);
        // SAFETY: the arguments match the kernel's signature; the view covers every row.
        unsafe { launch.launch(config) }.w()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::model::cuda::test_util::uniform;

    /// llama's small-head layout, and qwen2's heads of 64 and 128 (base 1e6).
    const LAYOUTS: [(usize, usize, f32); 3] = [(3, 8, 10_000.0), (14, 64, 1e6), (12, 128, 1e6)];

    #[test]
    fn reference_is_rotate_in_place_to_the_bit() {
        for (heads, hd, base) in LAYOUTS {
            for style in [RopeStyle::Interleaved, RopeStyle::Halves] {
                let tables = RopeTables::new(hd, 64, base, style, &Device::Cpu).unwrap();
                let positions = [0u32, 5, 63, 17];
                let xs = uniform(positions.len() * heads * hd, hd as u64);
                let x = Tensor::from_vec(xs.clone(), (positions.len(), heads * hd), &Device::Cpu)
                    .unwrap();
                let pos = Tensor::new(&positions[..], &Device::Cpu).unwrap();
                rope_in_place(&x, &pos, &tables, heads).unwrap();
                let got = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let mut want = xs;
                for (row, &p) in want.chunks_exact_mut(heads * hd).zip(&positions) {
                    tables.rotate_in_place(row, p as usize);
                }
                assert_eq!(got, want, "{style:?} heads {heads} of {hd}");
            }
        }
    }

    #[test]
    fn rows_of_q_and_k_rotate_both_and_leave_the_rest() {
        // Rows [q: 4 heads | k: 2 heads | v: 2 heads] of 8, as a stacked qkv projection.
        let (hd, q, k, v) = (8, 4, 2, 2);
        let tables = RopeTables::new(hd, 16, 10_000.0, RopeStyle::Halves, &Device::Cpu).unwrap();
        let width = (q + k + v) * hd;
        let xs = uniform(3 * width, 7);
        let x = Tensor::from_vec(xs.clone(), (3, width), &Device::Cpu).unwrap();
        let pos = Tensor::new(&[3u32, 9, 15], &Device::Cpu).unwrap();
        rope_in_place(&x, &pos, &tables, q + k).unwrap();
        let got = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (r, p) in [3, 9, 15].into_iter().enumerate() {
            let mut want = xs[r * width..(r + 1) * width].to_vec();
            tables.rotate_in_place(&mut want[..(q + k) * hd], p);
            assert_eq!(&got[r * width..(r + 1) * width], &want[..]);
        }
    }

    #[test]
    fn matches_the_tensor_rope_at_each_rows_position() {
        // RopeTables::apply (candle's rope kernels) for one sequence at start 6.
        let (heads, hd, len, start) = (4, 16, 5, 6);
        for style in [RopeStyle::Interleaved, RopeStyle::Halves] {
            let tables = RopeTables::new(hd, 32, 10_000.0, style, &Device::Cpu).unwrap();
            let x = Tensor::from_vec(
                uniform(len * heads * hd, 11),
                (len, heads * hd),
                &Device::Cpu,
            )
            .unwrap();
            let want = tables
                .apply(
                    &x.reshape((len, heads, hd))
                        .unwrap()
                        .transpose(0, 1)
                        .unwrap()
                        .contiguous()
                        .unwrap()
                        .unsqueeze(0)
                        .unwrap(),
                    start,
                )
                .unwrap()
                .squeeze(0)
                .unwrap()
                .transpose(0, 1)
                .unwrap()
                .reshape((len, heads * hd))
                .unwrap();
            let positions: Vec<u32> = (start as u32..(start + len) as u32).collect();
            let pos = Tensor::new(positions.as_slice(), &Device::Cpu).unwrap();
            rope_in_place(&x, &pos, &tables, heads).unwrap();
            let diff = crate::model::cuda::test_util::max_abs_diff(&x, &want);
            assert!(diff < 1e-5, "{style:?}: {diff}");
        }
    }

    #[test]
    fn a_position_past_the_tables_is_nan() {
        let tables = RopeTables::new(8, 4, 10_000.0, RopeStyle::Halves, &Device::Cpu).unwrap();
        let x = Tensor::ones((1, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
        let pos = Tensor::new(&[4u32], &Device::Cpu).unwrap();
        rope_in_place(&x, &pos, &tables, 1).unwrap();
        let got = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(got.iter().all(|v| v.is_nan()));
    }
}

#[cfg(all(test, feature = "cuda"))]
mod gpu_tests {
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::model::cuda::test_util::max_abs_diff;
    use crate::model::cuda::test_util::uniform;

    #[test]
    #[ignore = "needs a CUDA GPU: cargo test --features cuda -- --ignored"]
    fn kernel_matches_the_reference() {
        let gpu = Device::new_cuda(0).unwrap();
        // Qwen2.5-0.5B (14 + 2 heads of 64) and 1.5B (12 + 2 of 128), in rows that also
        // hold v, so the untouched columns are checked too.
        for (q, k, hd) in [(14, 2, 64), (12, 2, 128)] {
            for style in [RopeStyle::Interleaved, RopeStyle::Halves] {
                let width = (q + 2 * k) * hd;
                let positions = [0u32, 1, 37, 511, 4095, 2];
                let xs = uniform(positions.len() * width, hd as u64);
                // The same tables on both: built on the GPU, copied to the CPU, so only the
                // kernel is compared.
                let gpu_tables = RopeTables::new(hd, 4096, 1e6, style, &gpu).unwrap();
                let (cos, sin) = gpu_tables.tables();
                let cpu_tables = (
                    cos.to_device(&Device::Cpu).unwrap(),
                    sin.to_device(&Device::Cpu).unwrap(),
                );
                let run = |device: &Device, cos: &Tensor, sin: &Tensor| {
                    let x = Tensor::from_vec(xs.clone(), (positions.len(), width), device).unwrap();
                    let pos = Tensor::new(&positions[..], device).unwrap();
                    let op = Rope {
                        cos,
                        sin,
                        style,
                        heads: q + k,
                    };
                    x.inplace_op2(&pos, &op).unwrap();
                    x.to_device(&Device::Cpu).unwrap()
                };
                let got = run(&gpu, cos, sin);
                let want = run(&Device::Cpu, &cpu_tables.0, &cpu_tables.1);
                // Position 4095 is the tables' last row. Every product and sum is rounded
                // on its own on both sides (no fused multiply-add): equal to the bit.
                assert_eq!(
                    max_abs_diff(&got, &want),
                    0.0,
                    "{style:?} {q}+{k} heads of {hd}"
                );
            }
        }
    }
}
