//! The llama family of decoders: pre-norm attention with grouped-query heads and rotary
//! positions, then a SwiGLU feed-forward layer. Members differ only in the options of
//! [`Variant`]:
//!
//! - `llama` (SmolLM2 among others): rotary on adjacent pairs, no biases.
//! - `qwen2` (Qwen2.5, Qwen2.5-Coder): rotary on halves (GPT-NeoX style, as llama.cpp's
//!   `LLAMA_ROPE_TYPE_NEOX`), and biases on the q, k and v projections.
//!
//! Both tie the output projection to the token embeddings when the GGUF has no
//! `output.weight` (SmolLM2, small Qwen exports).

use std::io::{Read, Seek};

use candle_core::quantized::{gguf_file, QTensor};
use candle_core::{DType, Device, Result, Tensor};

use super::cuda::paged_attention::paged_attention;
use super::cuda::paged_kv::{self, write_kv};
use super::cuda::rope::rope_in_place;
use super::kv_cache::{HostCache, KvPool, PagedKv, BLOCK_TOKENS};
use super::ops::{self, RopeStyle, RopeTables};
use super::quant::{Linear, LinearGroup, QMatrix};
use super::{Model, ModelConfig, SeqChunk};

/// What sets one member of the family apart from another.
#[derive(Debug, Clone, Copy)]
pub struct Variant {
    pub rope: RopeStyle,
    /// Whether q, k and v projections carry a bias (qwen2 does).
    pub qkv_bias: bool,
}

impl Variant {
    pub const LLAMA: Variant = Variant {
        rope: RopeStyle::Interleaved,
        qkv_bias: false,
    };
    pub const QWEN2: Variant = Variant {
        rope: RopeStyle::Halves,
        qkv_bias: true,
    };
}

struct Layer {
    attn_norm: Tensor,
    /// q, k and v projections.
    qkv: LinearGroup,
    bias: Option<[Tensor; 3]>,
    wo: Linear,
    ffn_norm: Tensor,
    /// gate and up projections.
    gate_up: LinearGroup,
    w_down: Linear,
}

pub struct Llama {
    config: ModelConfig,
    device: Device,
    embeddings: Embeddings,
    layers: Vec<Layer>,
    output_norm: Tensor,
    output: Linear,
    rope: RopeTables,
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

struct Reader<'a, R> {
    content: &'a gguf_file::Content,
    file: &'a mut R,
    device: &'a Device,
}

impl<R: Read + Seek> Reader<'_, R> {
    fn qtensor(&mut self, name: &str) -> Result<QTensor> {
        self.content.tensor(self.file, name, self.device)
    }
    fn linear(&mut self, name: &str) -> Result<Linear> {
        Linear::new(self.qtensor(name)?, self.device)
    }
    fn f32(&mut self, name: &str) -> Result<Tensor> {
        self.qtensor(name)?.dequantize(self.device)
    }
    fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }
}

impl Llama {
    pub fn load<R: Read + Seek>(
        content: &gguf_file::Content,
        file: &mut R,
        config: ModelConfig,
        variant: Variant,
        device: &Device,
    ) -> Result<Self> {
        let mut r = Reader {
            content,
            file,
            device,
        };
        // Small models tie the output projection to the embeddings (SmolLM2 has no
        // output.weight): then the quantized embedding matrix serves as the projection.
        let tied = !r.has("output.weight");
        let output = r.linear(if tied {
            "token_embd.weight"
        } else {
            "output.weight"
        })?;
        let embeddings = match &output {
            Linear::Own(_) if tied => Embeddings::Output,
            _ if device.is_cpu() => {
                let table = r.qtensor("token_embd.weight")?;
                match super::quant::repack(&table)? {
                    Some(matrix) => Embeddings::Quantized(matrix),
                    None => Embeddings::Dense(table.dequantize(device)?),
                }
            }
            _ => Embeddings::Dense(r.f32("token_embd.weight")?),
        };
        let output_norm = r.f32("output_norm.weight")?;
        let mut layers = Vec::with_capacity(config.n_layers);
        for i in 0..config.n_layers {
            let p = format!("blk.{i}");
            let bias = if variant.qkv_bias {
                Some([
                    r.f32(&format!("{p}.attn_q.bias"))?,
                    r.f32(&format!("{p}.attn_k.bias"))?,
                    r.f32(&format!("{p}.attn_v.bias"))?,
                ])
            } else {
                None
            };
            layers.push(Layer {
                attn_norm: r.f32(&format!("{p}.attn_norm.weight"))?,
                qkv: LinearGroup::new(vec![
                    r.linear(&format!("{p}.attn_q.weight"))?,
                    r.linear(&format!("{p}.attn_k.weight"))?,
                    r.linear(&format!("{p}.attn_v.weight"))?,
                ]),
                bias,
                wo: r.linear(&format!("{p}.attn_output.weight"))?,
                ffn_norm: r.f32(&format!("{p}.ffn_norm.weight"))?,
                gate_up: LinearGroup::new(vec![
                    r.linear(&format!("{p}.ffn_gate.weight"))?,
                    r.linear(&format!("{p}.ffn_up.weight"))?,
                ]),
                w_down: r.linear(&format!("{p}.ffn_down.weight"))?,
            });
        }
        let rope = RopeTables::new(
            config.head_dim,
            config.context_length,
            config.rope_base,
            variant.rope,
            device,
        )?;
        Ok(Self {
            config,
            device: device.clone(),
            embeddings,
            layers,
            output_norm,
            output,
            rope,
        })
    }

    /// Attention for every sequence of the batch: the projections ran once for all rows;
    /// each sequence then attends over its own slot of the cache. `step`: what the paged
    /// layout or wick's rotary kernel needs of the batch, uploaded once a step.
    fn attention(
        &self,
        index: usize,
        layer: &Layer,
        h: &Tensor,
        batch: &[SeqChunk<'_>],
        kv: &KvPool,
        step: &StepTensors<'_>,
    ) -> Result<Tensor> {
        let [mut q, mut k, mut v]: [Tensor; 3] =
            layer.qkv.forward(h)?.try_into().expect("three projections");
        if let Some([bq, bk, bv]) = &layer.bias {
            q = q.broadcast_add(bq)?;
            k = k.broadcast_add(bk)?;
            v = v.broadcast_add(bv)?;
        }
        let out = match step {
            StepTensors::Paged(paged) => self.attention_paged(index, &q, &k, &v, paged)?,
            _ if self.device.is_cpu() => self.attention_host(index, &q, &k, &v, batch, kv)?,
            StepTensors::Positions(positions) => {
                self.attention_tensors(index, &q, &k, &v, batch, kv, Some(positions))?
            }
            StepTensors::None => self.attention_tensors(index, &q, &k, &v, batch, kv, None)?,
        };
        layer.wo.forward(&out)
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
        let c = &self.config;
        // q and k are this layer's own projections (fresh tensors): nothing else sees them
        // change.
        rope_in_place(q, &step.positions, &self.rope, c.n_heads)?;
        rope_in_place(k, &step.positions, &self.rope, c.n_kv_heads)?;
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
        let c = &self.config;
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
        Tensor::from_vec(out, (row, qw), &self.device)
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
        let c = &self.config;
        if let Some(positions) = positions {
            // q and k are this layer's own projections (fresh tensors): nothing else sees
            // them change.
            rope_in_place(q, positions, &self.rope, c.n_heads)?;
            rope_in_place(k, positions, &self.rope, c.n_kv_heads)?;
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
            outputs.push(ops::attention(&qs, &keys, &values, seq.start)?);
            row += len;
        }
        if outputs.len() == 1 {
            Ok(outputs.pop().expect("one output"))
        } else {
            Tensor::cat(&outputs, 0)
        }
    }
}

impl Llama {
    /// The embedding rows of `ids`, `[ids, hidden]`.
    fn embed(&self, ids: &[u32]) -> Result<Tensor> {
        let matrix = match (&self.embeddings, &self.output) {
            (Embeddings::Dense(table), _) => {
                return table.index_select(&Tensor::new(ids, &self.device)?, 0)
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
        Tensor::from_vec(x, (ids.len(), hidden), &self.device)
    }
}

impl Model for Llama {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn device(&self) -> &Device {
        &self.device
    }

    /// Every weight's bytes; tied embeddings are the output matrix, counted once.
    fn weight_bytes(&self) -> usize {
        use super::quant::tensor_bytes;
        let embeddings = match &self.embeddings {
            Embeddings::Output => 0,
            Embeddings::Quantized(m) => m.bytes(),
            Embeddings::Dense(t) => tensor_bytes(t),
        };
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                let bias: usize = l.bias.iter().flatten().map(tensor_bytes).sum();
                tensor_bytes(&l.attn_norm)
                    + l.qkv.bytes()
                    + bias
                    + l.wo.bytes()
                    + tensor_bytes(&l.ffn_norm)
                    + l.gate_up.bytes()
                    + l.w_down.bytes()
            })
            .sum();
        embeddings + layers + tensor_bytes(&self.output_norm) + self.output.bytes()
    }

    fn forward(&self, batch: &[SeqChunk<'_>], kv: &KvPool) -> Result<Tensor> {
        let eps = self.config.rms_eps;
        let ids: Vec<u32> = batch
            .iter()
            .flat_map(|s| s.tokens.iter().copied())
            .collect();
        // All new tokens of all sequences form one matrix, so every weight is read once per
        // step however many sequences run.
        let mut x = self.embed(&ids)?;
        let step = match kv.paged_kv() {
            Some(paged) => StepTensors::Paged(PagedStep::new(batch, paged, &self.device)?),
            // Every row's position, for wick's rotary kernel.
            None if self.device.is_cuda() => {
                StepTensors::Positions(Tensor::new(positions(batch).as_slice(), &self.device)?)
            }
            None => StepTensors::None,
        };
        for (index, layer) in self.layers.iter().enumerate() {
            let h = ops::rms_norm(&x, &layer.attn_norm, eps)?;
            x = (x + self.attention(index, layer, &h, batch, kv, &step)?)?;
            let h = ops::rms_norm(&x, &layer.ffn_norm, eps)?;
            let [gate, up]: [Tensor; 2] = layer
                .gate_up
                .forward(&h)?
                .try_into()
                .expect("two projections");
            let act = ops::swiglu(&gate, &up)?;
            x = (x + layer.w_down.forward(&act)?)?;
        }
        // Only the last row of each sampling sequence goes through the output projection.
        let mut last_rows = Vec::new();
        let mut end = 0u32;
        for seq in batch {
            end += seq.tokens.len() as u32;
            if seq.want_logits {
                last_rows.push(end - 1);
            }
        }
        if last_rows.is_empty() {
            return Tensor::zeros((0, self.config.vocab_size), DType::F32, &self.device);
        }
        let rows = Tensor::new(last_rows.as_slice(), &self.device)?;
        let last = ops::rms_norm(&x.index_select(&rows, 0)?, &self.output_norm, eps)?;
        self.output.forward(&last)?.to_dtype(DType::F32)
    }
}

/// Every row's position in its sequence, in batch order.
fn positions(batch: &[SeqChunk<'_>]) -> Vec<u32> {
    batch
        .iter()
        .flat_map(|s| (s.start..s.start + s.tokens.len()).map(|p| p as u32))
        .collect()
}

/// What a step's attention needs of the batch beyond the projections, uploaded once.
enum StepTensors<'a> {
    Paged(PagedStep<'a>),
    /// Rows' positions, for wick's rotary kernel on a CUDA device with the slots layout.
    Positions(Tensor),
    None,
}

/// The paged layout's view of one step: per row of the batch, its position, the cache slot
/// its key and value go to, its sequence's block table (padded to the batch's longest) and
/// how many cached tokens it attends over (its position + 1).
struct PagedStep<'a> {
    kv: &'a PagedKv,
    positions: Tensor,
    slots: Tensor,
    tables: Tensor,
    lens: Tensor,
}

impl<'a> PagedStep<'a> {
    fn new(batch: &[SeqChunk<'_>], kv: &'a PagedKv, device: &Device) -> Result<Self> {
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
