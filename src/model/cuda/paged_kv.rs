//! A KV cache in fixed-size blocks ("paged"): each layer is one f16 tensor
//! `[2, num_blocks, n_kv_heads, BLOCK_TOKENS, head_dim]` (keys, then values), and each
//! sequence owns a list of blocks, its block table, in any order. A sequence grows by whole
//! blocks taken from a shared pool, so memory follows the tokens actually held instead of
//! a full context per slot. This file holds the layout and the write of new keys and values
//! (kernel `paged_kv_write_f16` of `kernels/paged_attention.cu`); `paged_attention` reads it.
//!
//! f16, not f32: decode attention reads every cached key and value once per step, so its
//! cost is the cache's bytes, and f16 halves them (and doubles the tokens a GPU can hold).
//! wick already rounds cached keys and values to f16 on every path (as llama.cpp's default
//! cache does), so the f16 cache stores exactly what today's f32 caches hold.

use candle_core::{bail, CpuStorage, DType, Device, InplaceOp3, Layout, Result, Tensor};
use half::f16;

use super::operands::{cpu_rows, Held};
use super::rows::Rows;

/// Tokens per block. `KV_BLOCK` in `kernels/paged_attention.cu` must be the same.
pub const BLOCK_TOKENS: usize = 16;

/// A slot that writes nothing (`NO_SLOT` in the kernel): padding rows.
pub const NO_SLOT: u32 = u32::MAX;

/// The shape of one layer's cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagedShape {
    pub num_blocks: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

impl PagedShape {
    pub fn dims(&self) -> (usize, usize, usize, usize, usize) {
        (
            2,
            self.num_blocks,
            self.n_kv_heads,
            BLOCK_TOKENS,
            self.head_dim,
        )
    }

    /// Elements of one plane (all keys, or all values).
    pub fn plane(&self) -> usize {
        self.num_blocks * self.n_kv_heads * BLOCK_TOKENS * self.head_dim
    }

    /// Where the first element of `head`'s row at cache `slot` lies in the keys' plane (add
    /// [`Self::plane`] for the values').
    pub fn offset(&self, slot: usize, head: usize) -> usize {
        let (block, within) = (slot / BLOCK_TOKENS, slot % BLOCK_TOKENS);
        ((block * self.n_kv_heads + head) * BLOCK_TOKENS + within) * self.head_dim
    }

    /// A zeroed layer cache on `device`.
    pub fn zeros(&self, device: &Device) -> Result<Tensor> {
        Tensor::zeros(self.dims(), DType::F16, device)
    }

    /// Bytes of one layer (f16 keys and values).
    pub fn layer_bytes(&self) -> usize {
        2 * self.plane() * std::mem::size_of::<f16>()
    }

    fn check(&self, layout: &Layout) -> Result<()> {
        let d = self.dims();
        if layout.dims() != [d.0, d.1, d.2, d.3, d.4] {
            bail!("paged cache is {:?}, expected {:?}", layout.dims(), d);
        }
        Ok(())
    }
}

/// The cache slot of a sequence's token at `position`, given its block table.
pub fn slot(table: &[u32], position: usize) -> u32 {
    table[position / BLOCK_TOKENS] * BLOCK_TOKENS as u32 + (position % BLOCK_TOKENS) as u32
}

/// Write row r of `k` and `v` (`[rows, n_kv_heads * head_dim]` f32) at cache slot
/// `slots[r]` (`[rows]` u32, on the cache's device) of `cache` (a layer from
/// [`PagedShape::zeros`]), rounded to f16. Slots past the cache and [`NO_SLOT`] write nothing.
pub fn write_kv(
    cache: &Tensor,
    shape: PagedShape,
    k: &Tensor,
    v: &Tensor,
    slots: &Tensor,
) -> Result<()> {
    cache.inplace_op3(k, v, &WriteKv { slots, shape })
}

pub struct WriteKv<'a> {
    pub slots: &'a Tensor,
    pub shape: PagedShape,
}

impl WriteKv<'_> {
    fn plan(&self, cache: &Layout, k: &Layout, v: &Layout) -> Result<(Rows, Rows)> {
        self.shape.check(cache)?;
        if cache.contiguous_offsets().is_none() {
            bail!("paged cache must be contiguous");
        }
        let (k, v) = (Rows::of(k, "new keys")?, Rows::of(v, "new values")?);
        let width = self.shape.n_kv_heads * self.shape.head_dim;
        if k.width != width || v.width != width || k.rows != v.rows {
            bail!(
                "new keys [{}, {}] and values [{}, {}] for a cache of width {width}",
                k.rows,
                k.width,
                v.rows,
                v.width
            );
        }
        if self.slots.elem_count() != k.rows {
            bail!("{} slots for {} rows", self.slots.elem_count(), k.rows);
        }
        Ok((k, v))
    }
}

impl InplaceOp3 for WriteKv<'_> {
    fn name(&self) -> &'static str {
        "wick-paged-kv-write"
    }

    fn cpu_fwd(
        &self,
        cache: &mut CpuStorage,
        cache_layout: &Layout,
        k: &CpuStorage,
        k_layout: &Layout,
        v: &CpuStorage,
        v_layout: &Layout,
    ) -> Result<()> {
        let (k_rows, v_rows) = self.plan(cache_layout, k_layout, v_layout)?;
        let (k, v) = (
            cpu_rows::<f32>(k, &k_rows, "new keys")?,
            cpu_rows::<f32>(v, &v_rows, "new values")?,
        );
        let slots = Held::new(self.slots);
        let slots = slots.cpu::<u32>("slots")?;
        let CpuStorage::F16(cache) = cache else {
            bail!("paged cache must be f16");
        };
        let whole = Rows::of_contiguous(cache_layout);
        let cache = &mut cache[whole.start..whole.end()];
        let (plane, hd) = (self.shape.plane(), self.shape.head_dim);
        for (r, &slot) in slots.iter().enumerate() {
            if slot == NO_SLOT || slot as usize / BLOCK_TOKENS >= self.shape.num_blocks {
                continue;
            }
            for head in 0..self.shape.n_kv_heads {
                let dst = self.shape.offset(slot as usize, head);
                let src = head * hd;
                let (k, v) = (
                    &k[r * k_rows.stride + src..][..hd],
                    &v[r * v_rows.stride + src..][..hd],
                );
                for (d, (&kx, &vx)) in k.iter().zip(v).enumerate() {
                    cache[dst + d] = f16::from_f32(kx);
                    cache[plane + dst + d] = f16::from_f32(vx);
                }
            }
        }
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        cache: &mut candle_core::CudaStorage,
        cache_layout: &Layout,
        k: &candle_core::CudaStorage,
        k_layout: &Layout,
        v: &candle_core::CudaStorage,
        v_layout: &Layout,
    ) -> Result<()> {
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
        use candle_core::cuda_backend::WrapErr;

        use super::launch::{elementwise, function, PAGED_ATTENTION};
        use super::operands::cuda;

        let (k_rows, v_rows) = self.plan(cache_layout, k_layout, v_layout)?;
        let elements = k_rows.rows * k_rows.width;
        if elements == 0 {
            return Ok(());
        }
        let device = cache.device.clone();
        let k = cuda::rows::<f32>(k, &k_rows, "new keys")?;
        let v = cuda::rows::<f32>(v, &v_rows, "new values")?;
        let slots = Held::new(self.slots);
        let slots = slots.cuda::<u32>("slots")?;
        let whole = Rows::of_contiguous(cache_layout);
        let mut cache = cuda::rows_mut::<f16>(cache, &whole, "paged cache")?;
        let func = function(&device, PAGED_ATTENTION, "paged_kv_write_f16")?;
        let stream = device.cuda_stream();
        let (k_stride, v_stride) = (k_rows.stride as u32, v_rows.stride as u32);
        let num_blocks = self.shape.num_blocks as u32;
        let rows = k_rows.rows as u32;
        let (heads, hd) = (self.shape.n_kv_heads as u32, self.shape.head_dim as u32);
        let mut launch = stream.launch_builder(&func);
        launch
            .arg(&k)
            .arg(&v)
            .arg(&k_stride)
            .arg(&v_stride)
            .arg(&slots)
            .arg(&mut cache)
            .arg(&num_blocks)
            .arg(&rows)
            .arg(&heads)
            .arg(&hd);
        let config = elementwise(elements);
        // SAFETY: the arguments match the kernel's signature; the kernel skips slots past
        // the cache.
        unsafe { launch.launch(config) }.w()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::model::cuda::test_util::uniform;

    #[test]
    fn rows_land_at_their_slots_rounded_to_f16() {
        let shape = PagedShape {
            num_blocks: 4,
            n_kv_heads: 2,
            head_dim: 8,
        };
        let cache = shape.zeros(&Device::Cpu).unwrap();
        let width = shape.n_kv_heads * shape.head_dim;
        let (ks, vs) = (uniform(3 * width, 1), uniform(3 * width, 2));
        let k = Tensor::from_vec(ks.clone(), (3, width), &Device::Cpu).unwrap();
        let v = Tensor::from_vec(vs.clone(), (3, width), &Device::Cpu).unwrap();
        // Block 2 offset 5, a padding row, block 0 offset 15.
        let slots = [2 * 16 + 5, NO_SLOT, 15];
        let slot_t = Tensor::new(&slots[..], &Device::Cpu).unwrap();
        write_kv(&cache, shape, &k, &v, &slot_t).unwrap();
        let flat = cache.flatten_all().unwrap().to_vec1::<f16>().unwrap();
        let mut written = 0;
        for (r, &slot) in slots.iter().enumerate() {
            if slot == NO_SLOT {
                continue;
            }
            for head in 0..2 {
                for d in 0..8 {
                    let at = shape.offset(slot as usize, head) + d;
                    let src = r * width + head * 8 + d;
                    assert_eq!(flat[at], f16::from_f32(ks[src]));
                    assert_eq!(flat[shape.plane() + at], f16::from_f32(vs[src]));
                    written += 2;
                }
            }
        }
        // Nothing else was touched.
        assert_eq!(flat.iter().filter(|x| x.to_f32() != 0.0).count(), written);
    }

    #[test]
    fn slots_follow_the_block_table() {
        let table = [7u32, 2, 5];
        assert_eq!(slot(&table, 0), 7 * 16);
        assert_eq!(slot(&table, 17), 2 * 16 + 1);
        assert_eq!(slot(&table, 47), 5 * 16 + 15);
    }
}

#[cfg(all(test, feature = "cuda"))]
mod gpu_tests {
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::model::cuda::test_util::{max_abs_diff, uniform};

    #[test]
    #[ignore = "needs a CUDA GPU: cargo test --features cuda -- --ignored"]
    fn kernel_matches_the_reference() {
        let gpu = Device::new_cuda(0).unwrap();
        let shape = PagedShape {
            num_blocks: 9,
            n_kv_heads: 2,
            head_dim: 128,
        };
        let width = shape.n_kv_heads * shape.head_dim;
        let rows = 40;
        let (ks, vs) = (uniform(rows * 2 * width, 3), uniform(rows * width, 4));
        // Distinct slots in scrambled blocks, one padding row, one past the cache.
        let mut slots: Vec<u32> = (0..rows as u32).map(|r| (r * 37) % (9 * 16)).collect();
        slots[3] = NO_SLOT;
        slots[4] = 9 * 16 + 2;
        let run = |device: &Device| {
            let cache = shape.zeros(device).unwrap();
            // Keys as a strided view (the k columns of a wider projection).
            let k = Tensor::from_vec(ks.clone(), (rows, 2 * width), device)
                .unwrap()
                .narrow(1, width, width)
                .unwrap();
            let v = Tensor::from_vec(vs.clone(), (rows, width), device).unwrap();
            let slots = Tensor::new(slots.as_slice(), device).unwrap();
            write_kv(&cache, shape, &k, &v, &slots).unwrap();
            cache.to_device(&Device::Cpu).unwrap()
        };
        // Both round with round-to-nearest-even: equal to the bit.
        assert_eq!(max_abs_diff(&run(&gpu), &run(&Device::Cpu)), 0.0);
    }
}
