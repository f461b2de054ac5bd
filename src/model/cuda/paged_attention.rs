//! Decode attention over a paged KV cache ([`super::paged_kv`]): one query token per
//! sequence, each sequence with its own block table and length, grouped-query heads (query
//! head h reads kv head h / (n_heads / n_kv_heads)), scores and softmax in f32. Kernels
//! `paged_attention_d{64,128,256}_f16` of `kernels/paged_attention.cu`; the CPU reference
//! takes any head size.

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use half::f16;

use super::operands::{cpu_contiguous, cpu_rows, Held};
use super::paged_kv::{slot, PagedShape, BLOCK_TOKENS};
use super::rows::Rows;
use crate::model::ops;

/// Head sizes the kernel is built for.
pub const KERNEL_HEAD_DIMS: [usize; 3] = [64, 128, 256];

/// The sequences of one call, as the kernel takes them: `tables` is `[n_seqs,
/// table_stride]`, sequence s's blocks first in row s; `lens[s]` counts its cached tokens,
/// the new one included (already written).
#[derive(Clone, Copy)]
pub struct PagedSeqs<'a> {
    pub tables: &'a [u32],
    pub table_stride: usize,
    pub lens: &'a [u32],
}

/// `q`: `[n_seqs, n_heads * head_dim]` f32 (contiguous rows), row s the query of sequence
/// s at its last position; `cache`: one layer ([`PagedShape::zeros`]); `block_tables`:
/// `[n_seqs, max_blocks]` u32; `context_lens`: `[n_seqs]` u32, both on `q`'s device.
/// Returns `[n_seqs, n_heads * head_dim]` f32.
pub fn paged_attention(
    q: &Tensor,
    cache: &Tensor,
    shape: PagedShape,
    n_heads: usize,
    block_tables: &Tensor,
    context_lens: &Tensor,
) -> Result<Tensor> {
    q.apply_op2_no_bwd(
        cache,
        &PagedAttention {
            block_tables,
            context_lens,
            n_heads,
            shape,
        },
    )
}

/// The reference: softmax(q·K / sqrt(head_dim)) V for each (sequence, head), keys and
/// values read from their blocks, in f32 from the cache's f16, added up by wick's own CPU
/// attention ([`ops::attend_many`]): on the CPU the paged layout gives the slots layout's bits.
/// `q` rows are `q_stride` apart; `out` is `[n_seqs, n_heads * head_dim]`.
pub fn paged_attention_host(
    q: &[f32],
    q_stride: usize,
    cache: &[f16],
    shape: PagedShape,
    n_heads: usize,
    seqs: PagedSeqs<'_>,
    out: &mut [f32],
) -> Result<()> {
    let hd = shape.head_dim;
    let group = n_heads / shape.n_kv_heads;
    let (mut keys, mut values) = (Vec::new(), Vec::new());
    for (s, &len) in seqs.lens.iter().enumerate() {
        let len = len as usize;
        let table = &seqs.tables[s * seqs.table_stride..][..seqs.table_stride];
        if len.div_ceil(BLOCK_TOKENS) > table.len() {
            bail!(
                "sequence {s}: {len} tokens do not fit a table of {}",
                table.len()
            );
        }
        if let Some(bad) = table[..len.div_ceil(BLOCK_TOKENS)]
            .iter()
            .find(|&&b| b as usize >= shape.num_blocks)
        {
            bail!(
                "sequence {s}: block {bad} is past the cache's {}",
                shape.num_blocks
            );
        }
        for kv in 0..shape.n_kv_heads {
            // This kv head's keys and values in position order, as a contiguous cache
            // holds them.
            keys.clear();
            values.clear();
            for position in 0..len {
                let at = shape.offset(slot(table, position) as usize, kv);
                keys.extend(cache[at..][..hd].iter().map(|x| x.to_f32()));
                values.extend(cache[shape.plane() + at..][..hd].iter().map(|x| x.to_f32()));
            }
            for h in kv * group..(kv + 1) * group {
                let query = &q[s * q_stride + h * hd..][..hd];
                let dst = &mut out[(s * n_heads + h) * hd..][..hd];
                if len == 0 {
                    dst.fill(0.0);
                    continue;
                }
                let all = 0..len;
                ops::attend_many(
                    &[query],
                    std::slice::from_ref(&all),
                    (keys.as_slice(), values.as_slice(), 0),
                    None,
                    &mut [dst],
                );
            }
        }
    }
    Ok(())
}

pub struct PagedAttention<'a> {
    pub block_tables: &'a Tensor,
    pub context_lens: &'a Tensor,
    pub n_heads: usize,
    pub shape: PagedShape,
}

impl PagedAttention<'_> {
    /// The query rows and the table stride, checked against the cache and each other.
    fn plan(&self, q: &Layout, cache: &Layout) -> Result<(Rows, usize)> {
        let rows = Rows::of(q, "paged attention q")?;
        let d = self.shape.dims();
        if cache.dims() != [d.0, d.1, d.2, d.3, d.4] || cache.contiguous_offsets().is_none() {
            bail!(
                "paged cache is {:?}, expected contiguous {:?}",
                cache.dims(),
                d
            );
        }
        if self.n_heads == 0 || !self.n_heads.is_multiple_of(self.shape.n_kv_heads) {
            bail!(
                "{} query heads do not share {} kv heads evenly",
                self.n_heads,
                self.shape.n_kv_heads
            );
        }
        if rows.width != self.n_heads * self.shape.head_dim {
            bail!(
                "q rows of {} for {} heads of {}",
                rows.width,
                self.n_heads,
                self.shape.head_dim
            );
        }
        let (n_seqs, table_stride) = self.block_tables.dims2()?;
        if n_seqs != rows.rows || self.context_lens.elem_count() != rows.rows {
            bail!(
                "{} queries, {n_seqs} block tables, {} lengths",
                rows.rows,
                self.context_lens.elem_count()
            );
        }
        Ok((rows, table_stride))
    }
}

impl CustomOp2 for PagedAttention<'_> {
    fn name(&self) -> &'static str {
        "wick-paged-attention"
    }

    fn cpu_fwd(
        &self,
        q: &CpuStorage,
        q_layout: &Layout,
        cache: &CpuStorage,
        cache_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, table_stride) = self.plan(q_layout, cache_layout)?;
        let q = cpu_rows::<f32>(q, &rows, "paged attention q")?;
        let cache = cpu_contiguous::<f16>(cache, cache_layout, "paged cache")?;
        let (tables, lens) = (Held::new(self.block_tables), Held::new(self.context_lens));
        let seqs = PagedSeqs {
            tables: tables.cpu::<u32>("block tables")?,
            table_stride,
            lens: lens.cpu::<u32>("context lengths")?,
        };
        let mut out = vec![0f32; rows.rows * rows.width];
        paged_attention_host(
            q,
            rows.stride,
            cache,
            self.shape,
            self.n_heads,
            seqs,
            &mut out,
        )?;
        Ok((CpuStorage::F32(out), Shape::from((rows.rows, rows.width))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        q: &candle_core::CudaStorage,
        q_layout: &Layout,
        cache: &candle_core::CudaStorage,
        cache_layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::WrapErr;
        use candle_core::CudaStorage;

        use super::launch::{function, PAGED_ATTENTION};
        use super::operands::cuda;

        /// Warps per (head, sequence): `ATTN_WARPS` in the kernel.
        const THREADS: u32 = 4 * 32;

        let (rows, table_stride) = self.plan(q_layout, cache_layout)?;
        let hd = self.shape.head_dim;
        if !KERNEL_HEAD_DIMS.contains(&hd) {
            bail!("paged attention kernels cover head sizes {KERNEL_HEAD_DIMS:?}, not {hd}");
        }
        let device = q.device.clone();
        let q = cuda::rows::<f32>(q, &rows, "paged attention q")?;
        let cache = cuda::contiguous::<f16>(cache, cache_layout, "paged cache")?;
        let (tables, lens) = (Held::new(self.block_tables), Held::new(self.context_lens));
        let (tables, lens) = (
            tables.cuda::<u32>("block tables")?,
            lens.cuda::<u32>("context lengths")?,
        );
        let shape = Shape::from((rows.rows, rows.width));
        // SAFETY: the kernel writes every element before anything reads it.
        let mut out = unsafe { device.alloc::<f32>(rows.rows * rows.width) }?;
        if rows.rows > 0 {
            let func = function(
                &device,
                PAGED_ATTENTION,
                &format!("paged_attention_d{hd}_f16"),
            )?;
            let stream = device.cuda_stream();
            let q_stride = rows.stride as u32;
            let num_blocks = self.shape.num_blocks as u32;
            let table_stride = table_stride as u32;
            let (n_heads, n_kv_heads) = (self.n_heads as u32, self.shape.n_kv_heads as u32);
            let scale = 1.0 / (hd as f32).sqrt();
            let mut launch = stream.launch_builder(&func);
            launch
                .arg(&mut out)
                .arg(&q)
                .arg(&q_stride)
                .arg(&cache)
                .arg(&num_blocks)
                .arg(&tables)
                .arg(&table_stride)
                .arg(&lens)
                .arg(&n_heads)
                .arg(&n_kv_heads)
                .arg(&scale);
            let config = LaunchConfig {
                grid_dim: (n_heads, rows.rows as u32, 1),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: the arguments match the kernel's signature; the kernel keeps its reads
            // inside the cache and each sequence's table.
            unsafe { launch.launch(config) }.w()?;
        }
        Ok((CudaStorage::wrap_cuda_slice(out, device), shape))
    }
}

/// Test sequences: random keys and values written into a paged cache through scrambled
/// block tables, the same values in wick's contiguous host layout, and one query per
/// sequence. Shared by the CPU and GPU tests.
#[cfg(test)]
pub(super) mod fixture {
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::model::cuda::paged_kv::write_kv;
    use crate::model::cuda::test_util::uniform;

    pub struct Fixture {
        pub shape: PagedShape,
        pub n_heads: usize,
        pub lens: Vec<u32>,
        pub table_stride: usize,
        pub tables: Vec<u32>,
        /// `[n_seqs, n_heads * head_dim]`.
        pub q: Vec<f32>,
        /// Per sequence, wick's `[n_kv_heads, capacity, head_dim]` caches, as f32 before
        /// and after rounding to f16.
        pub keys: Vec<Vec<f32>>,
        pub values: Vec<Vec<f32>>,
        pub keys_f16: Vec<Vec<f32>>,
        pub values_f16: Vec<Vec<f32>>,
        pub capacity: usize,
        /// The paged cache, written on the CPU.
        pub cache: Tensor,
    }

    pub fn build(n_heads: usize, n_kv_heads: usize, head_dim: usize, lens: &[u32]) -> Fixture {
        let capacity = *lens.iter().max().unwrap() as usize;
        let table_stride = capacity.div_ceil(BLOCK_TOKENS);
        let num_blocks = lens.len() * table_stride + 3;
        let shape = PagedShape {
            num_blocks,
            n_kv_heads,
            head_dim,
        };
        // Blocks in a scrambled order: 7919 is prime, so b * 7919 mod n permutes 0..n for
        // any n below it. Three spare blocks stay out of every table.
        let mut order: Vec<u32> = (0..num_blocks as u32).collect();
        order.sort_by_key(|&b| (b as usize * 7919) % num_blocks);
        let tables: Vec<u32> = order[..lens.len() * table_stride].to_vec();
        let cache = shape.zeros(&Device::Cpu).unwrap();
        let width = n_kv_heads * head_dim;
        let (mut keys, mut values, mut keys_f16, mut values_f16) = (vec![], vec![], vec![], vec![]);
        for (s, &len) in lens.iter().enumerate() {
            let len = len as usize;
            let k = uniform(len * width, 100 + s as u64);
            let v = uniform(len * width, 200 + s as u64);
            let table = &tables[s * table_stride..][..table_stride];
            let slots: Vec<u32> = (0..len).map(|p| slot(table, p)).collect();
            write_kv(
                &cache,
                shape,
                &Tensor::from_vec(k.clone(), (len, width), &Device::Cpu).unwrap(),
                &Tensor::from_vec(v.clone(), (len, width), &Device::Cpu).unwrap(),
                &Tensor::new(slots.as_slice(), &Device::Cpu).unwrap(),
            )
            .unwrap();
            // Token-major rows into [n_kv_heads, capacity, head_dim].
            let host = |rows: &[f32], round: bool| {
                let mut out = vec![0f32; n_kv_heads * capacity * head_dim];
                for p in 0..len {
                    for h in 0..n_kv_heads {
                        for d in 0..head_dim {
                            let x = rows[p * width + h * head_dim + d];
                            out[(h * capacity + p) * head_dim + d] =
                                if round { f16::from_f32(x).to_f32() } else { x };
                        }
                    }
                }
                out
            };
            keys.push(host(&k, false));
            values.push(host(&v, false));
            keys_f16.push(host(&k, true));
            values_f16.push(host(&v, true));
        }
        Fixture {
            shape,
            n_heads,
            lens: lens.to_vec(),
            table_stride,
            tables,
            q: uniform(lens.len() * n_heads * head_dim, 300),
            keys,
            values,
            keys_f16,
            values_f16,
            capacity,
            cache,
        }
    }

    impl Fixture {
        /// wick's own attention (`ops::attention_host`) of each sequence's query at its last
        /// position, over the f16-rounded (`rounded`) or the original values.
        pub fn wick_attention(&self, rounded: bool) -> Vec<f32> {
            let hd = self.shape.head_dim;
            let width = self.n_heads * hd;
            let mut out = vec![0f32; self.lens.len() * width];
            for (s, &len) in self.lens.iter().enumerate() {
                let (k, v) = if rounded {
                    (&self.keys_f16[s], &self.values_f16[s])
                } else {
                    (&self.keys[s], &self.values[s])
                };
                crate::model::ops::attention_host(
                    &self.q[s * width..][..width],
                    k,
                    v,
                    self.capacity,
                    self.n_heads,
                    self.shape.n_kv_heads,
                    hd,
                    len as usize - 1,
                    &mut out[s * width..][..width],
                );
            }
            out
        }

        /// The op on `device` (the cache, tables and queries copied there).
        pub fn paged(&self, device: &Device) -> Tensor {
            let n = self.lens.len();
            let q = Tensor::from_vec(
                self.q.clone(),
                (n, self.n_heads * self.shape.head_dim),
                device,
            )
            .unwrap();
            let tables =
                Tensor::from_vec(self.tables.clone(), (n, self.table_stride), device).unwrap();
            let lens = Tensor::new(self.lens.as_slice(), device).unwrap();
            let cache = self.cache.to_device(device).unwrap();
            paged_attention(&q, &cache, self.shape, self.n_heads, &tables, &lens)
                .unwrap()
                .to_device(&Device::Cpu)
                .unwrap()
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::fixture::build;
    use crate::model::cuda::test_util::max_abs_diff;

    fn as_tensor(v: Vec<f32>) -> Tensor {
        let n = v.len();
        Tensor::from_vec(v, n, &Device::Cpu).unwrap()
    }

    #[test]
    fn reference_is_wicks_attention_over_the_same_f16_values() {
        // A small layout, Qwen2.5-0.5B's (14 heads of 64 on 2) and 1.5B's (12 of 128 on 2);
        // lengths of one token, one block, a block and one, and several blocks.
        for (n_heads, n_kv, hd) in [(6, 2, 8), (14, 2, 64), (12, 2, 128)] {
            let f = build(n_heads, n_kv, hd, &[1, 16, 17, 50]);
            let got = f.paged(&Device::Cpu).flatten_all().unwrap();
            let want = as_tensor(f.wick_attention(true));
            // Same inputs, f32 both; only the order of the sums differs.
            let diff = max_abs_diff(&got, &want);
            assert!(diff < 1e-5, "{n_heads}/{n_kv} heads of {hd}: {diff}");
        }
    }

    #[test]
    fn the_f16_cache_moves_outputs_by_about_its_rounding() {
        // Against wick's attention over unrounded f32 values: f16 keeps 11 bits, a relative
        // error of at most 2^-11 ≈ 4.9e-4 per cached value. Outputs are averages of values
        // in [-2, 2) with weights moved by the rounded keys: a few 1e-3 at most.
        let f = build(14, 2, 64, &[40, 300]);
        let got = f.paged(&Device::Cpu).flatten_all().unwrap();
        let exact = as_tensor(f.wick_attention(false));
        let diff = max_abs_diff(&got, &exact);
        assert!(diff > 0.0 && diff < 5e-3, "{diff}");
    }

    #[test]
    fn tables_too_short_or_past_the_cache_are_errors() {
        let f = build(2, 1, 8, &[20]);
        let q = Tensor::zeros((1, 16), candle_core::DType::F32, &Device::Cpu).unwrap();
        let lens = Tensor::new(&[20u32], &Device::Cpu).unwrap();
        let short = Tensor::new(&[[0u32]], &Device::Cpu).unwrap();
        let bad = Tensor::new(&[[0u32, 999]], &Device::Cpu).unwrap();
        for tables in [short, bad] {
            assert!(super::paged_attention(&q, &f.cache, f.shape, 2, &tables, &lens).is_err());
        }
    }
}

#[cfg(all(test, feature = "cuda"))]
mod gpu_tests {
    use candle_core::Device;

    use super::fixture::build;
    use crate::model::cuda::test_util::max_rel_diff;

    #[test]
    #[ignore = "needs a CUDA GPU: cargo test --features cuda -- --ignored"]
    fn kernel_matches_the_reference() {
        let gpu = Device::new_cuda(0).unwrap();
        // Every kernel head size; Qwen2.5's head groups (7 and 6 per kv head) and plain
        // multi-head; lengths around block edges and one of several warps' worth of blocks.
        for (n_heads, n_kv, hd) in [(14, 2, 64), (12, 2, 128), (8, 8, 64), (8, 4, 256)] {
            let f = build(n_heads, n_kv, hd, &[1, 15, 16, 17, 64, 65, 700]);
            let got = f.paged(&gpu);
            let want = f.paged(&Device::Cpu);
            // Both read the same f16 values and compute in f32: the differences are the
            // order of the sums (lane-split dot products, the online softmax's rescaling,
            // warps merged at the end) and expf's last bit, a few 1e-7 relative on outputs
            // of magnitude <= 2. The f16 rounding is in the data, not between the two.
            let diff = max_rel_diff(&got, &want);
            assert!(diff < 1e-5, "{n_heads}/{n_kv} heads of {hd}: {diff}");
        }
    }
}
