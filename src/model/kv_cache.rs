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

impl KvShape {
    /// Bytes one slot of the slots layout takes (keys and values, f16).
    pub fn slot_bytes(&self) -> usize {
        2 * self.n_layers * self.n_kv_heads * self.capacity * self.head_dim * 2
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
/// `[n_kv_heads, capacity, head_dim]`. The host cache holds f16, as llama.cpp's does: half
/// the memory of f32, and the values the model reads are the same (they are rounded to f16
/// on the way in either way, see `Llama::attention_host` in llama.rs).
pub enum KvSlot {
    Host {
        keys: Vec<RefCell<Vec<f16>>>,
        values: Vec<RefCell<Vec<f16>>>,
    },
    Device {
        keys: Vec<Tensor>,
        values: Vec<Tensor>,
    },
}

/// One layer's host cache, borrowed for a step.
pub struct HostLayer<'a> {
    pub keys: RefMut<'a, Vec<f16>>,
    pub values: RefMut<'a, Vec<f16>>,
}

impl KvSlot {
    fn new(shape: &KvShape, device: &Device) -> Result<Self> {
        let dims = (shape.n_kv_heads, shape.capacity, shape.head_dim);
        if device.is_cpu() {
            let len = shape.n_kv_heads * shape.capacity * shape.head_dim;
            let alloc = || {
                (0..shape.n_layers)
                    .map(|_| RefCell::new(vec![f16::ZERO; len]))
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
            device,
            store: Store::Slots((0..n_slots).map(|_| None).collect()),
            // Reversed so slot 0 is handed out first.
            free: (0..n_slots).rev().collect(),
        }
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
                slots[index] = Some(KvSlot::new(&self.shape, &self.device)?);
            }
        }
        self.free.remove(position);
        Ok(())
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
