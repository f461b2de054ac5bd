//! What decoder-only families share: reading a GGUF's tensors, token embeddings, and
//! attention over the KV cache for a whole batch (the CPU's host cache, the CUDA paged cache,
//! or tensor operations on a device), with the rotary tables and the sliding window a layer
//! asks for. The family files (llama.rs, gemma.rs) hold only what makes them different.

use candle_core::quantized::{gguf_file, QTensor};
use candle_core::{DType, Device, Result, Tensor};

use super::cuda::paged_attention::paged_attention;
use super::cuda::paged_kv::{self, write_kv};
use super::cuda::rope::rope_in_place;
use super::gguf::GgufModel;
use super::kv_cache::{HostCache, KvPool, PagedKv, BLOCK_TOKENS};
use super::ops::{self, RopeTables};
use super::quant::{tensor_bytes, Linear, QMatrix};
use super::{ModelConfig, SeqChunk};

/// Reads a GGUF's tensors onto the model's device.
pub struct Reader<'a> {
    pub gguf: &'a mut GgufModel,
    pub device: &'a Device,
}

impl Reader<'_> {
    /// The model's metadata.
    pub fn content(&self) -> &gguf_file::Content {
        self.gguf.content()
    }
    pub fn qtensor(&mut self, name: &str) -> Result<QTensor> {
        self.gguf.tensor(name, self.device)
    }
    pub fn linear(&mut self, name: &str) -> Result<Linear> {
        Linear::new(self.qtensor(name)?, self.device)
    }
    pub fn f32(&mut self, name: &str) -> Result<Tensor> {
        self.qtensor(name)?.dequantize(self.device)
    }
    pub fn has(&self, name: &str) -> bool {
        self.gguf.has(name)
    }

    /// The output projection and the token embeddings. Small models tie the projection to
    /// the embeddings (no `output.weight`: SmolLM2, Gemma): then the quantized embedding
    /// matrix serves as both.
    fn output_and_embeddings(&mut self) -> Result<(Linear, Embeddings)> {
        let tied = !self.has("output.weight");
        let output = self.linear(if tied {
            "token_embd.weight"
        } else {
            "output.weight"
        })?;
        let embeddings = match &output {
            Linear::Own(_) if tied => Embeddings::Output,
            _ if self.device.is_cpu() => {
                let table = self.qtensor("token_embd.weight")?;
                match super::quant::repack(&table)? {
                    Some(matrix) => Embeddings::Quantized(matrix),
                    None => Embeddings::Dense(table.dequantize(self.device)?),
                }
            }
            _ => Embeddings::Dense(self.f32("token_embd.weight")?),
        };
        Ok((output, embeddings))
    }
}

/// Token embeddings. On the CPU they stay in their GGUF format (a 151,936 × 1536 table is
/// 0.9 GB as f32) and a looked-up row is dequantized when a token needs it.
enum Embeddings {
    /// The output projection's own matrix (tied embeddings): held once for both uses.
    Output,
    Quantized(QMatrix),
    /// Dequantized once: formats without wick kernels, and GPU devices.
    Dense(Tensor),
}

impl Embeddings {
    /// The embedding rows of `ids`, `[ids, hidden]`; `output` is the model's output
    /// projection (the table itself when tied).
    fn lookup(&self, output: &Linear, ids: &[u32], device: &Device) -> Result<Tensor> {
        let matrix = match (self, output) {
            (Embeddings::Dense(table), _) => {
                return table.index_select(&Tensor::new(ids, device)?, 0)
            }
            (Embeddings::Quantized(m), _) | (Embeddings::Output, Linear::Own(m)) => m,
            (Embeddings::Output, Linear::Candle(_)) => {
                unreachable!("tied embeddings are read from the output only when wick owns it")
            }
        };
        let hidden = matrix.k();
        let mut x = vec![0f32; ids.len() * hidden];
        for (&id, row) in ids.iter().zip(x.chunks_exact_mut(hidden)) {
            if id as usize >= matrix.rows() {
                candle_core::bail!("token id {id} is outside the vocabulary");
            }
            matrix.dequantize_row(id as usize, row);
        }
        Tensor::from_vec(x, (ids.len(), hidden), device)
    }

    /// Bytes held beside the output projection (none when tied).
    fn bytes(&self) -> usize {
        match self {
            Embeddings::Output => 0,
            Embeddings::Quantized(m) => m.bytes(),
            Embeddings::Dense(t) => tensor_bytes(t),
        }
    }
}

/// Both ends of a decoder: the token embeddings going in, the final norm and the output
/// projection coming out (tied to the embeddings where the GGUF has no `output.weight`).
pub struct Ends {
    embeddings: Embeddings,
    output_norm: Tensor,
    output: Linear,
}

impl Ends {
    pub fn load(r: &mut Reader<'_>) -> Result<Self> {
        let (output, embeddings) = r.output_and_embeddings()?;
        let output_norm = r.f32("output_norm.weight")?;
        Ok(Self {
            embeddings,
            output_norm,
            output,
        })
    }

    /// The embedding rows of every new token of the batch, `[tokens, hidden]`: all
    /// sequences' tokens form one matrix, so every weight is read once per step however
    /// many sequences run.
    pub fn embed(&self, batch: &[SeqChunk<'_>], device: &Device) -> Result<Tensor> {
        let ids: Vec<u32> = batch
            .iter()
            .flat_map(|s| s.tokens.iter().copied())
            .collect();
        self.embeddings.lookup(&self.output, &ids, device)
    }

    /// `[sampling sequences, vocab]` logits (f32) from the last layer's output `x`: only the
    /// last row of each sequence that samples goes through the output projection.
    pub fn logits(
        &self,
        x: &Tensor,
        batch: &[SeqChunk<'_>],
        config: &ModelConfig,
        device: &Device,
    ) -> Result<Tensor> {
        let Some(rows) = logit_rows(batch, device)? else {
            return Tensor::zeros((0, config.vocab_size), DType::F32, device);
        };
        let last = ops::rms_norm(
            &x.index_select(&rows, 0)?,
            &self.output_norm,
            config.rms_eps,
        )?;
        self.output.forward(&last)?.to_dtype(DType::F32)
    }

    /// Every row of the last layer's output `x` through the final norm, `[rows, hidden]`:
    /// the token vectors pooled embeddings are made of (llama.cpp's `result_norm`).
    pub fn final_norm(&self, x: &Tensor, config: &ModelConfig) -> Result<Tensor> {
        ops::rms_norm(x, &self.output_norm, config.rms_eps)?.to_dtype(DType::F32)
    }

    /// Bytes held; tied embeddings are the output matrix, counted once.
    pub fn bytes(&self) -> usize {
        self.embeddings.bytes() + tensor_bytes(&self.output_norm) + self.output.bytes()
    }
}

/// RMS norm of each head of `x` (`[rows, heads * head_dim]`) with one weight for all heads
/// (the q and k norms of Qwen 3 and Gemma 3).
pub fn head_norm(x: &Tensor, weight: &Tensor, head_dim: usize, eps: f32) -> Result<Tensor> {
    let (rows, width) = x.dims2()?;
    let normed = ops::rms_norm(
        &x.reshape((rows * width / head_dim, head_dim))?,
        weight,
        eps,
    )?;
    normed.reshape((rows, width))
}

/// The rows of the batch whose logits are wanted (the last token of each sampling sequence),
/// or `None` when no sequence samples this step.
fn logit_rows(batch: &[SeqChunk<'_>], device: &Device) -> Result<Option<Tensor>> {
    let mut last_rows = Vec::new();
    let mut end = 0u32;
    for seq in batch {
        end += seq.tokens.len() as u32;
        if seq.want_logits {
            last_rows.push(end - 1);
        }
    }
    if last_rows.is_empty() {
        return Ok(None);
    }
    Tensor::new(last_rows.as_slice(), device).map(Some)
}

/// One layer's attention: the model's shapes, the rotary tables this layer uses, and its
/// sliding window (a query at position `p` sees keys `p - window + 1 ..= p`) if it has one.
pub struct Attention<'a> {
    pub config: &'a ModelConfig,
    pub device: &'a Device,
    pub rope: &'a RopeTables,
    pub window: Option<usize>,
    /// Attention scores soft-capped at this (Gemma 2), if at all.
    pub softcap: Option<f32>,
}

impl Attention<'_> {
    /// Attention for every sequence of the batch, from the projections (`q`, `k`, `v`: one
    /// row per token of the batch, for all of it at once): each sequence attends over its
    /// own slot of the cache. `step`: what the paged layout or wick's rotary kernel needs of
    /// the batch, uploaded once a step. Returns `[rows, n_heads * head_dim]`, before the
    /// output projection.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        index: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        batch: &[SeqChunk<'_>],
        kv: &KvPool,
        step: &StepTensors<'_>,
    ) -> Result<Tensor> {
        if let (StepTensors::Paged(_), Some(_)) = (step, self.softcap) {
            candle_core::bail!(
                "attention soft-capping is not supported by the paged KV cache yet; serve this \
                 model with --kv-cache slots"
            );
        }
        if let (StepTensors::Paged(_), Some(window)) = (step, self.window) {
            // The paged CUDA kernel attends over everything before a query; within the first
            // `window` positions that is the same.
            if batch.iter().any(|s| s.start + s.tokens.len() > window) {
                candle_core::bail!(
                    "sliding-window attention past {window} tokens is not supported by the \
                     paged KV cache yet; serve this model with --kv-cache slots"
                );
            }
        }
        match step {
            StepTensors::Paged(paged) => self.attention_paged(index, q, k, v, paged),
            _ if self.device.is_cpu() => self.attention_host(index, q, k, v, batch, kv),
            StepTensors::Positions(positions) => {
                self.attention_tensors(index, q, k, v, batch, kv, Some(positions))
            }
            StepTensors::None => self.attention_tensors(index, q, k, v, batch, kv, None),
        }
    }

    /// Paged layout: every row of the batch, prompt chunks and decode tokens alike, is
    /// one query over its sequence's blocks up to its own position (which is what makes a
    /// prompt chunk causal), so rotary, the cache write and attention are one launch each
    /// for the whole batch.
    fn attention_paged(
        &self,
        index: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        step: &PagedStep<'_>,
    ) -> Result<Tensor> {
        let c = self.config;
        // q and k are this layer's own projections (fresh tensors): nothing else sees them
        // change.
        rope_in_place(q, &step.positions, self.rope, c.n_heads)?;
        rope_in_place(k, &step.positions, self.rope, c.n_kv_heads)?;
        let (cache, shape) = (step.kv.cache(index), step.kv.layer_shape());
        write_kv(cache, shape, k, v, &step.slots)?;
        paged_attention(q, cache, shape, c.n_heads, &step.tables, &step.lens)
    }

    /// CPU: rotary, the cache write and attention on plain slices, one token at a time,
    /// so a step costs no tensor operation per sequence.
    fn attention_host(
        &self,
        index: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        batch: &[SeqChunk<'_>],
        kv: &KvPool,
    ) -> Result<Tensor> {
        let c = self.config;
        let (hd, capacity) = (c.head_dim, kv.shape().capacity);
        let (qw, kw) = (c.n_heads * hd, c.n_kv_heads * hd);
        let mut q = q.flatten_all()?.to_vec1::<f32>()?;
        let mut k = k.flatten_all()?.to_vec1::<f32>()?;
        let v = v.flatten_all()?.to_vec1::<f32>()?;
        // Rotary and the cache writes, sequence by sequence; the borrowed layers stay held
        // for the one attention loop over the whole batch.
        let mut layers = Vec::with_capacity(batch.len());
        let mut row = 0;
        for seq in batch {
            let len = seq.tokens.len();
            if seq.start + len > capacity {
                candle_core::bail!("sequence exceeds its KV slot ({capacity} tokens)");
            }
            let mut layer = kv
                .slot(seq.slot)
                .host_layer(index)
                .expect("a CPU model has a host cache");
            for i in 0..len {
                let (t, pos) = (row + i, seq.start + i);
                self.rope.rotate_in_place(&mut q[t * qw..(t + 1) * qw], pos);
                self.rope.rotate_in_place(&mut k[t * kw..(t + 1) * kw], pos);
                for h in 0..c.n_kv_heads {
                    let src = t * kw + h * hd;
                    // Stored as f16 (or Q8_0), as llama.cpp's cache stores them (greedy
                    // output then follows the reference as closely as summation order
                    // allows).
                    let row = h * capacity + pos;
                    layer.keys.write_row(row, &k[src..src + hd]);
                    layer.values.write_row(row, &v[src..src + hd]);
                }
            }
            layers.push((layer, seq.start, row..row + len));
            row += len;
        }
        let heads = ops::Heads {
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            head_dim: hd,
            capacity,
            window: self.window,
            softcap: self.softcap,
        };
        let mut out = vec![0f32; q.len()];
        // The default f16 cache is read as plain slices, so reading a row is no dispatch on
        // the cache's type; other types go through `HostCache`.
        let f16: Option<Vec<ops::HostSeq<'_, [half::f16]>>> = layers
            .iter()
            .map(
                |(layer, start, rows)| match (&*layer.keys, &*layer.values) {
                    (HostCache::F16(keys), HostCache::F16(values)) => Some(ops::HostSeq {
                        keys: &keys[..],
                        values: &values[..],
                        start: *start,
                        rows: rows.clone(),
                    }),
                    _ => None,
                },
            )
            .collect();
        match f16 {
            Some(seqs) => ops::attention_batch(&q, &seqs, heads, &mut out),
            None => {
                let seqs: Vec<ops::HostSeq<'_, HostCache>> = layers
                    .iter()
                    .map(|(layer, start, rows)| ops::HostSeq {
                        keys: &*layer.keys,
                        values: &*layer.values,
                        start: *start,
                        rows: rows.clone(),
                    })
                    .collect();
                ops::attention_batch(&q, &seqs, heads, &mut out);
            }
        }
        Tensor::from_vec(out, (row, qw), self.device)
    }

    /// GPU: the same with tensor operations on a device cache. With `positions` (CUDA),
    /// q and k are rotated in place for the whole batch by wick's kernel, one launch each;
    /// otherwise by candle's rope, sequence by sequence.
    #[allow(clippy::too_many_arguments)]
    fn attention_tensors(
        &self,
        index: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        batch: &[SeqChunk<'_>],
        kv: &KvPool,
        positions: Option<&Tensor>,
    ) -> Result<Tensor> {
        let c = self.config;
        if let Some(positions) = positions {
            // q and k are this layer's own projections (fresh tensors): nothing else sees
            // them change.
            rope_in_place(q, positions, self.rope, c.n_heads)?;
            rope_in_place(k, positions, self.rope, c.n_kv_heads)?;
        }
        let rotate = |t: Tensor, start: usize| -> Result<Tensor> {
            match positions {
                Some(_) => Ok(t),
                None => self.rope.apply(&t.unsqueeze(0)?, start)?.squeeze(0),
            }
        };
        let mut outputs = Vec::with_capacity(batch.len());
        let mut row = 0;
        for seq in batch {
            let len = seq.tokens.len();
            let heads = |t: &Tensor, n: usize| -> Result<Tensor> {
                t.narrow(0, row, len)?
                    .reshape((len, n, c.head_dim))?
                    .transpose(0, 1)?
                    .contiguous()
            };
            let qs = rotate(heads(q, c.n_heads)?, seq.start)?;
            let ks = rotate(heads(k, c.n_kv_heads)?, seq.start)?;
            let vs = heads(v, c.n_kv_heads)?;
            let (keys, values) = kv.slot(seq.slot).append(index, seq.start, &ks, &vs)?;
            outputs.push(ops::attention(
                &qs,
                &keys,
                &values,
                seq.start,
                self.window,
                self.softcap,
            )?);
            row += len;
        }
        if outputs.len() == 1 {
            Ok(outputs.pop().expect("one output"))
        } else {
            Tensor::cat(&outputs, 0)
        }
    }
}

/// Every row's position in its sequence, in batch order.
pub fn positions(batch: &[SeqChunk<'_>]) -> Vec<u32> {
    batch
        .iter()
        .flat_map(|s| (s.start..s.start + s.tokens.len()).map(|p| p as u32))
        .collect()
}

/// What a step's attention needs of the batch beyond the projections, uploaded once.
pub enum StepTensors<'a> {
    Paged(PagedStep<'a>),
    /// Rows' positions, for wick's rotary kernel on a CUDA device with the slots layout.
    Positions(Tensor),
    None,
}

/// The paged layout's view of one step: per row of the batch, its position, the cache slot
/// its key and value go to, its sequence's block table (padded to the batch's longest) and
/// how many cached tokens it attends over (its position + 1).
pub struct PagedStep<'a> {
    kv: &'a PagedKv,
    positions: Tensor,
    slots: Tensor,
    tables: Tensor,
    lens: Tensor,
}

impl<'a> StepTensors<'a> {
    /// What this step's attention needs uploaded, by the cache's layout and the device.
    pub fn new(batch: &[SeqChunk<'_>], kv: &'a KvPool, device: &Device) -> Result<Self> {
        Ok(match kv.paged_kv() {
            Some(paged) => StepTensors::Paged(PagedStep::new(batch, paged, device)?),
            // Every row's position, for wick's rotary kernel.
            None if device.is_cuda() => {
                StepTensors::Positions(Tensor::new(positions(batch).as_slice(), device)?)
            }
            None => StepTensors::None,
        })
    }
}

impl<'a> PagedStep<'a> {
    pub fn new(batch: &[SeqChunk<'_>], kv: &'a PagedKv, device: &Device) -> Result<Self> {
        let positions = positions(batch);
        let width = batch
            .iter()
            .map(|s| (s.start + s.tokens.len()).div_ceil(BLOCK_TOKENS))
            .max()
            .unwrap_or(0)
            .max(1);
        let (mut slots, mut tables, mut lens) = (Vec::new(), Vec::new(), Vec::new());
        for seq in batch {
            let table = kv.table(seq.slot);
            let end = seq.start + seq.tokens.len();
            if end > table.len() * BLOCK_TOKENS {
                candle_core::bail!(
                    "KV slot {} holds {} tokens, the step needs {end}",
                    seq.slot,
                    table.len() * BLOCK_TOKENS
                );
            }
            let row_table: Vec<u32> = (0..width)
                .map(|i| table.get(i).copied().unwrap_or(0))
                .collect();
            for position in seq.start..end {
                slots.push(paged_kv::slot(table, position));
                tables.extend_from_slice(&row_table);
                lens.push(position as u32 + 1);
            }
        }
        let rows = lens.len();
        Ok(Self {
            kv,
            positions: Tensor::new(positions.as_slice(), device)?,
            slots: Tensor::new(slots.as_slice(), device)?,
            tables: Tensor::from_vec(tables, (rows, width), device)?,
            lens: Tensor::new(lens.as_slice(), device)?,
        })
    }
}
