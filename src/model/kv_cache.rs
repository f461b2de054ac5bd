//! The KV cache of a model's engine, in one of two layouts:
//!
//! - **Slots** (the CPU's default): one region per running sequence, allocated once at the
//!   full context and written in place, so a decode step never copies or regrows the cache.
//!   On the CPU it is plain host memory that the model's own kernels write; on other devices
//!   (Metal) device tensors written with `slice_set`.
//! - **Paged** (the default on CUDA, `--kv-cache paged` anywhere): every layer is one tensor
//!   of fixed-size f16 blocks ([`PagedShape`]), allocated once for the whole budget
//!   (`--kv-budget`), and each slot owns a block table that grows a block at a time, so the
//!   memory follows the tokens actually held instead of a full context per sequence.
//!
//! Either way a slot is a sequence's place in the cache; after its sequence ends the slot
//! keeps its contents for the prefix cache until a later sequence overwrites them (or, when
//! paged, until its blocks are taken for a running sequence, last block first).

use std::cell::{RefCell, RefMut};

use candle_core::{DType, Device, Result, Tensor};
use half::f16;

pub use super::cuda::paged_kv::{PagedShape, BLOCK_TOKENS};

/// Shape of one sequence's cache, the same for every layer.
#[derive(Debug, Clone, Copy)]
pub struct KvShape {
    pub n_layers: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Tokens one sequence can hold (the context).
    pub capacity: usize,
}

/// `--kv-type`: what the CPU's slots cache stores per key and value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum KvType {
    /// Half precision, as llama.cpp's default cache: attention reads what f32 would give
    /// after the f16 rounding every path applies.
    #[default]
    F16,
    /// GGUF's Q8_0 blocks (32 int8 values and an f16 scale, 34 bytes): 53 % of f16's memory,
    /// as llama.cpp's `--cache-type-k/v q8_0`; heads must be a multiple of 32 values.
    #[value(name = "q8_0")]
    Q8_0,
}

impl KvType {
    /// Bytes of `values` cached values (a multiple of 32 for Q8_0).
    pub fn bytes(self, values: usize) -> usize {
        match self {
            KvType::F16 => values * 2,
            KvType::Q8_0 => values / Q8_BLOCK * std::mem::size_of::<Q8Block>(),
        }
    }
}

/// Values per Q8_0 block.
pub const Q8_BLOCK: usize = 32;

/// One Q8_0 block of a cached key or value row: `x ≈ d · q`.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct Q8Block {
    pub d: f16,
    pub qs: [i8; Q8_BLOCK],
}

impl Q8Block {
    /// Quantized as GGUF's reference quantizer does: `d = max|x| / 127`, values rounded
    /// half away from zero.
    pub fn quantize(x: &[f32]) -> Self {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0i8; Q8_BLOCK];
        for (q, &v) in qs.iter_mut().zip(x) {
            *q = (v * inv).round() as i8;
        }
        Self {
            d: f16::from_f32(d),
            qs,
        }
    }
}

impl KvShape {
    /// Bytes one slot of the slots layout takes (keys and values, f16).
    pub fn slot_bytes(&self) -> usize {
        self.slot_bytes_as(KvType::F16)
    }

    /// Bytes one slot of the slots layout takes with values of `kv_type`.
    pub fn slot_bytes_as(&self, kv_type: KvType) -> usize {
        2 * kv_type.bytes(self.n_layers * self.n_kv_heads * self.capacity * self.head_dim)
    }

    /// Bytes one block of the paged layout takes, all layers (keys and values, f16).
    pub fn block_bytes(&self) -> usize {
        2 * self.n_layers * self.n_kv_heads * BLOCK_TOKENS * self.head_dim * 2
    }

    /// Blocks one full context needs.
    pub fn blocks_per_context(&self) -> usize {
        self.capacity.div_ceil(BLOCK_TOKENS)
    }
}

/// The keys and values of one sequence in the slots layout: per layer,
/// `[n_kv_heads, capacity, head_dim]`. The host cache holds f16 (as llama.cpp's does: half
/// the memory of f32, and the values the model reads are the same, since they are rounded
/// to f16 on the way in either way, see `Llama::attention_host` in llama.rs) or Q8_0.
pub enum KvSlot {
    Host {
        keys: Vec<RefCell<HostCache>>,
        values: Vec<RefCell<HostCache>>,
    },
    Device {
        keys: Vec<Tensor>,
        values: Vec<Tensor>,
    },
}

/// One layer's keys (or values) in a host cache, rows of `head_dim` values.
pub enum HostCache {
    F16(Vec<f16>),
    Q8_0(Vec<Q8Block>),
}

impl HostCache {
    fn new(kv_type: KvType, values: usize) -> Self {
        match kv_type {
            KvType::F16 => Self::F16(vec![f16::ZERO; values]),
            KvType::Q8_0 => Self::Q8_0(vec![Q8Block::default(); values / Q8_BLOCK]),
        }
    }

    /// Store row `r` (`src.len()` values).
    pub fn write_row(&mut self, r: usize, src: &[f32]) {
        use half::slice::HalfFloatSliceExt;
        let n = src.len();
        match self {
            Self::F16(data) => data[r * n..(r + 1) * n].convert_from_f32_slice(src),
            Self::Q8_0(blocks) => {
                let per = n / Q8_BLOCK;
                for (b, x) in blocks[r * per..(r + 1) * per]
                    .iter_mut()
                    .zip(src.chunks_exact(Q8_BLOCK))
                {
                    *b = Q8Block::quantize(x);
                }
            }
        }
    }
}

impl super::ops::CacheRows for HostCache {
    #[inline]
    fn widen_row(&self, r: usize, out: &mut [f32]) {
        match self {
            Self::F16(data) => data.widen_row(r, out),
            Self::Q8_0(blocks) => blocks.widen_row(r, out),
        }
    }
}

impl super::ops::CacheRows for [Q8Block] {
    #[inline]
    fn widen_row(&self, r: usize, out: &mut [f32]) {
        let per = out.len() / Q8_BLOCK;
        for (b, o) in self[r * per..(r + 1) * per]
            .iter()
            .zip(out.chunks_exact_mut(Q8_BLOCK))
        {
            let d = b.d.to_f32();
            for (o, &q) in o.iter_mut().zip(&b.qs) {
                *o = q as f32 * d;
            }
        }
    }
}

/// One layer's host cache, borrowed for a step.
pub struct HostLayer<'a> {
    pub keys: RefMut<'a, HostCache>,
    pub values: RefMut<'a, HostCache>,
}

impl KvSlot {
    fn new(shape: &KvShape, kv_type: KvType, device: &Device) -> Result<Self> {
        let dims = (shape.n_kv_heads, shape.capacity, shape.head_dim);
        if device.is_cpu() {
            if kv_type == KvType::Q8_0 && !shape.head_dim.is_multiple_of(Q8_BLOCK) {
                candle_core::bail!(
                    "--kv-type q8_0 needs heads of a multiple of {Q8_BLOCK} values; this model's are {}",
                    shape.head_dim
                );
            }
            let len = shape.n_kv_heads * shape.capacity * shape.head_dim;
            let alloc = || {
                (0..shape.n_layers)
                    .map(|_| RefCell::new(HostCache::new(kv_type, len)))
                    .collect()
            };
            return Ok(Self::Host {
                keys: alloc(),
                values: alloc(),
            });
        }
        let alloc = || -> Result<Vec<Tensor>> {
            (0..shape.n_layers)
                .map(|_| Tensor::zeros(dims, DType::F32, device))
                .collect()
        };
        Ok(Self::Device {
            keys: alloc()?,
            values: alloc()?,
        })
    }

    /// The host cache of one layer (None for a device cache).
    pub fn host_layer(&self, layer: usize) -> Option<HostLayer<'_>> {
        match self {
            Self::Host { keys, values } => Some(HostLayer {
                keys: keys[layer].borrow_mut(),
                values: values[layer].borrow_mut(),
            }),
            Self::Device { .. } => None,
        }
    }

    /// Device caches: write `k`/`v` (`[n_kv_heads, len, head_dim]`) at `start`, then return
    /// views of the first `start + len` positions.
    pub fn append(
        &self,
        layer: usize,
        start: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let Self::Device { keys, values } = self else {
            candle_core::bail!("append is for device caches; host caches are written in place");
        };
        let len = k.dim(1)?;
        // Rounded to f16 as llama.cpp's cache stores them, so greedy output follows the
        // reference implementation as closely as summation order allows.
        let k = &k.to_dtype(DType::F16)?.to_dtype(DType::F32)?;
        let v = &v.to_dtype(DType::F16)?.to_dtype(DType::F32)?;
        keys[layer].slice_set(k, 1, start)?;
        values[layer].slice_set(v, 1, start)?;
        Ok((
            keys[layer].narrow(1, 0, start + len)?,
            values[layer].narrow(1, 0, start + len)?,
        ))
    }
}

/// The paged layout: the layers' block tensors and who holds which block.
pub struct PagedKv {
    layer: PagedShape,
    /// Per layer, `[2, num_blocks, n_kv_heads, BLOCK_TOKENS, head_dim]` f16.
    caches: Vec<Tensor>,
    free_blocks: Vec<u32>,
    /// Per slot, its blocks in position order.
    tables: Vec<Vec<u32>>,
}

impl PagedKv {
    pub fn layer_shape(&self) -> PagedShape {
        self.layer
    }

    /// One layer's block tensor.
    pub fn cache(&self, layer: usize) -> &Tensor {
        &self.caches[layer]
    }

    /// A slot's block table.
    pub fn table(&self, slot: usize) -> &[u32] {
        &self.tables[slot]
    }
}

enum Store {
    /// Per slot, allocated the first time it is used.
    Slots(Vec<Option<KvSlot>>),
    Paged(PagedKv),
}

/// A fixed number of slots over one of the layouts. An idle server holds only what its
/// busiest moment needed (slots), or its budget (paged, allocated at start).
pub struct KvPool {
    shape: KvShape,
    kv_type: KvType,
    device: Device,
    store: Store,
    /// Slots not in use, most recently released last.
    free: Vec<usize>,
}

impl KvPool {
    /// The slots layout: `n_slots` regions of a full context each.
    pub fn new(shape: KvShape, n_slots: usize, device: Device) -> Self {
        Self {
            shape,
            kv_type: KvType::F16,
            device,
            store: Store::Slots((0..n_slots).map(|_| None).collect()),
            // Reversed so slot 0 is handed out first.
            free: (0..n_slots).rev().collect(),
        }
    }

    /// The slots layout with values of `kv_type` (the CPU's; other devices keep f32
    /// tensors rounded to f16).
    pub fn with_type(mut self, kv_type: KvType) -> Self {
        self.kv_type = kv_type;
        self
    }

    /// The paged layout: `num_blocks` blocks shared by `n_slots` slots, allocated now.
    pub fn paged(
        shape: KvShape,
        n_slots: usize,
        num_blocks: usize,
        device: Device,
    ) -> Result<Self> {
        let layer = PagedShape {
            num_blocks,
            n_kv_heads: shape.n_kv_heads,
            head_dim: shape.head_dim,
        };
        let caches = (0..shape.n_layers)
            .map(|_| layer.zeros(&device))
            .collect::<Result<_>>()?;
        Ok(Self {
            shape,
            kv_type: KvType::F16,
            device,
            store: Store::Paged(PagedKv {
                layer,
                caches,
                // Reversed so block 0 is handed out first.
                free_blocks: (0..num_blocks as u32).rev().collect(),
                tables: vec![Vec::new(); n_slots],
            }),
            free: (0..n_slots).rev().collect(),
        })
    }

    pub fn shape(&self) -> &KvShape {
        &self.shape
    }

    pub fn n_slots(&self) -> usize {
        match &self.store {
            Store::Slots(slots) => slots.len(),
            Store::Paged(paged) => paged.tables.len(),
        }
    }

    pub fn n_free(&self) -> usize {
        self.free.len()
    }

    /// The slots not in use.
    pub fn free_slots(&self) -> &[usize] {
        &self.free
    }

    /// The paged layout, when this pool has it.
    pub fn paged_kv(&self) -> Option<&PagedKv> {
        match &self.store {
            Store::Paged(paged) => Some(paged),
            Store::Slots(_) => None,
        }
    }

    /// Tokens the whole pool can hold.
    pub fn capacity_tokens(&self) -> usize {
        match &self.store {
            Store::Slots(slots) => slots.len() * self.shape.capacity,
            Store::Paged(paged) => paged.layer.num_blocks * BLOCK_TOKENS,
        }
    }

    /// Take a free slot, allocating its memory on first use.
    pub fn acquire(&mut self) -> Result<Option<usize>> {
        match self.free.last().copied() {
            Some(index) => self.acquire_slot(index).map(|()| Some(index)),
            None => Ok(None),
        }
    }

    /// Take one particular free slot, allocating its memory on first use (slots layout).
    pub fn acquire_slot(&mut self, index: usize) -> Result<()> {
        let Some(position) = self.free.iter().position(|&i| i == index) else {
            candle_core::bail!("KV slot {index} is not free");
        };
        if let Store::Slots(slots) = &mut self.store {
            if slots[index].is_none() {
                slots[index] = Some(KvSlot::new(&self.shape, self.kv_type, &self.device)?);
            }
        }
        self.free.remove(position);
        Ok(())
    }

    /// Every slot free and, in the paged layout, every block back in the free list: what
    /// the engine does after a caught fault, when its record of who holds what may be
    /// wrong. Allocated slot memory is kept for reuse.
    pub fn reset(&mut self) {
        let n_slots = self.n_slots();
        self.free = (0..n_slots).rev().collect();
        if let Store::Paged(paged) = &mut self.store {
            paged.free_blocks = (0..paged.layer.num_blocks as u32).rev().collect();
            paged.tables.iter_mut().for_each(Vec::clear);
        }
    }

    /// Give a slot back. Its contents stay until a later sequence overwrites them.
    pub fn release(&mut self, index: usize) {
        debug_assert!(!self.free.contains(&index));
        self.free.push(index);
    }

    /// The slots layout's region of a slot (panics on a paged pool: the model asks
    /// [`Self::paged_kv`] first).
    pub fn slot(&self, index: usize) -> &KvSlot {
        match &self.store {
            Store::Slots(slots) => slots[index]
                .as_ref()
                .expect("a slot handed out by acquire is allocated"),
            Store::Paged(_) => panic!("a paged KV pool has no per-slot regions"),
        }
    }

    /// How many of its first tokens a slot still holds room for: a full context in the
    /// slots layout; in the paged layout, what its blocks cover (an idle slot's blocks may
    /// have been taken by running sequences).
    pub fn held_tokens(&self, slot: usize) -> usize {
        match &self.store {
            Store::Slots(_) => self.shape.capacity,
            Store::Paged(paged) => paged.tables[slot].len() * BLOCK_TOKENS,
        }
    }

    /// Blocks a running sequence could still get: free ones and those idle slots hold.
    /// None for the slots layout (a slot never runs short before its context does).
    pub fn available_blocks(&self) -> Option<usize> {
        let Store::Paged(paged) = &self.store else {
            return None;
        };
        let idle: usize = self.free.iter().map(|&s| paged.tables[s].len()).sum();
        Some(paged.free_blocks.len() + idle)
    }

    /// Make room in `slot` (in use) for its first `tokens` tokens. In the paged layout this
    /// takes free blocks first, then the last blocks of idle slots, least recently released
    /// first; it returns false, taking nothing, when even that is not enough.
    pub fn reserve(&mut self, slot: usize, tokens: usize) -> bool {
        if tokens > self.shape.capacity {
            return false;
        }
        let Store::Paged(paged) = &mut self.store else {
            return true;
        };
        let need = tokens
            .div_ceil(BLOCK_TOKENS)
            .saturating_sub(paged.tables[slot].len());
        if need == 0 {
            return true;
        }
        let idle: usize = self.free.iter().map(|&s| paged.tables[s].len()).sum();
        if paged.free_blocks.len() + idle < need {
            return false;
        }
        for _ in 0..need {
            let block = match paged.free_blocks.pop() {
                Some(block) => block,
                None => {
                    // `free` lists idle slots oldest release first.
                    let donor = *self
                        .free
                        .iter()
                        .find(|&&s| !paged.tables[s].is_empty())
                        .expect("counted above");
                    paged.tables[donor].pop().expect("non-empty")
                }
            };
            paged.tables[slot].push(block);
        }
        true
    }

    /// Keep only the blocks of `slot`'s first `tokens` tokens and free the rest (paged; a
    /// no-op for slots). `truncate(slot, 0)` gives all its blocks back.
    pub fn truncate(&mut self, slot: usize, tokens: usize) {
        if let Store::Paged(paged) = &mut self.store {
            let keep = tokens.div_ceil(BLOCK_TOKENS);
            while paged.tables[slot].len() > keep {
                let block = paged.tables[slot].pop().expect("longer than keep");
                paged.free_blocks.push(block);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::CacheRows;

    /// A row written to either host cache reads back as f16 rounds it, or within half a
    /// Q8_0 step (plus the f16 rounding of the step itself).
    #[test]
    fn host_cache_rows_read_back_what_was_written() {
        let row: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 29) as f32 - 14.0) * 0.37)
            .collect();
        let mut back = vec![0f32; 64];
        for kv_type in [KvType::F16, KvType::Q8_0] {
            let mut cache = HostCache::new(kv_type, 3 * 64);
            cache.write_row(1, &row);
            cache.widen_row(1, &mut back);
            for (i, (&b, &x)) in back.iter().zip(&row).enumerate() {
                let step = match kv_type {
                    KvType::F16 => (x - f16::from_f32(x).to_f32()).abs(),
                    KvType::Q8_0 => {
                        let amax = row[i / 32 * 32..][..32]
                            .iter()
                            .fold(0f32, |m, v| m.max(v.abs()));
                        amax / 127.0 * 0.51 + 1e-3 * x.abs()
                    }
                };
                assert!((b - x).abs() <= step, "{kv_type:?} {i}: {b} vs {x}");
            }
            // The rows around it are untouched.
            cache.widen_row(0, &mut back);
            assert!(back.iter().all(|&v| v == 0.0));
        }
        assert_eq!(KvType::Q8_0.bytes(64), 68);
        assert_eq!(std::mem::size_of::<Q8Block>(), 34);
    }

    fn shape() -> KvShape {
        KvShape {
            n_layers: 1,
            n_kv_heads: 1,
            head_dim: 4,
            capacity: 64,
        }
    }

    #[test]
    fn paged_slots_grow_by_blocks_and_give_them_back() {
        let mut kv = KvPool::paged(shape(), 2, 4, Device::Cpu).unwrap();
        assert_eq!(kv.capacity_tokens(), 4 * BLOCK_TOKENS);
        let a = kv.acquire().unwrap().unwrap();
        assert!(kv.reserve(a, 17));
        assert_eq!(kv.held_tokens(a), 32);
        assert_eq!(kv.available_blocks(), Some(2));
        // More than the context is refused whatever the blocks.
        assert!(!kv.reserve(a, 65));
        assert!(kv.reserve(a, 64));
        assert_eq!(kv.available_blocks(), Some(0));
        let b = kv.acquire().unwrap().unwrap();
        assert!(!kv.reserve(b, 1), "every block is held by a running slot");
        kv.truncate(a, 16);
        assert_eq!(kv.held_tokens(a), 16);
        assert!(kv.reserve(b, 48));
        assert_eq!(kv.paged_kv().unwrap().table(b).len(), 3);
    }

    #[test]
    fn idle_slots_lend_their_last_blocks_oldest_first() {
        let mut kv = KvPool::paged(shape(), 3, 6, Device::Cpu).unwrap();
        let (a, b, c) = (
            kv.acquire().unwrap().unwrap(),
            kv.acquire().unwrap().unwrap(),
            kv.acquire().unwrap().unwrap(),
        );
        assert!(kv.reserve(a, 32) && kv.reserve(b, 32));
        let a_first = kv.paged_kv().unwrap().table(a)[0];
        kv.release(a);
        kv.release(b);
        // c needs three blocks: two free, then a's last (a was released first).
        assert!(kv.reserve(c, 48));
        assert_eq!(kv.held_tokens(a), 16);
        assert_eq!(kv.held_tokens(b), 32);
        assert_eq!(kv.paged_kv().unwrap().table(a), &[a_first]);
        assert_eq!(kv.available_blocks(), Some(3));
    }
}
