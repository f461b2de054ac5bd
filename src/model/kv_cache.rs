//! The KV cache: one slot per running sequence, allocated once at its full capacity and
//! written in place, so a decode step never copies or regrows the cache.

use candle_core::{DType, Device, Result, Tensor};

/// Shape of one slot's cache, the same for every layer.
#[derive(Debug, Clone, Copy)]
pub struct KvShape {
    pub n_layers: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Tokens one slot can hold.
    pub capacity: usize,
}

impl KvShape {
    /// Bytes one slot takes (keys and values, f32).
    pub fn slot_bytes(&self) -> usize {
        2 * self.n_layers * self.n_kv_heads * self.capacity * self.head_dim * 4
    }
}

/// The keys and values of one sequence: per layer, `[n_kv_heads, capacity, head_dim]`.
pub struct KvSlot {
    keys: Vec<Tensor>,
    values: Vec<Tensor>,
}

impl KvSlot {
    fn new(shape: &KvShape, device: &Device) -> Result<Self> {
        let dims = (shape.n_kv_heads, shape.capacity, shape.head_dim);
        let alloc = || -> Result<Vec<Tensor>> {
            (0..shape.n_layers)
                .map(|_| Tensor::zeros(dims, DType::F32, device))
                .collect()
        };
        Ok(Self {
            keys: alloc()?,
            values: alloc()?,
        })
    }

    /// Write `k`/`v` (`[n_kv_heads, len, head_dim]`) at `start`, then return views of the
    /// first `start + len` positions.
    pub fn append(
        &self,
        layer: usize,
        start: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let len = k.dim(1)?;
        // Rounded to f16 as llama.cpp's cache stores them, so greedy output follows the
        // reference implementation as closely as summation order allows.
        let k = &k.to_dtype(DType::F16)?.to_dtype(DType::F32)?;
        let v = &v.to_dtype(DType::F16)?.to_dtype(DType::F32)?;
        self.keys[layer].slice_set(k, 1, start)?;
        self.values[layer].slice_set(v, 1, start)?;
        Ok((
            self.keys[layer].narrow(1, 0, start + len)?,
            self.values[layer].narrow(1, 0, start + len)?,
        ))
    }
}

/// A fixed number of slots. A slot's memory is taken the first time it is used and then kept,
/// contents included: the engine may hand a slot whose cached prefix matches a new prompt to
/// that prompt, which then skips recomputing it. An idle server holds only what its busiest
/// moment needed.
pub struct KvPool {
    shape: KvShape,
    device: Device,
    slots: Vec<Option<KvSlot>>,
    free: Vec<usize>,
}

impl KvPool {
    pub fn new(shape: KvShape, n_slots: usize, device: Device) -> Self {
        Self {
            shape,
            device,
            slots: (0..n_slots).map(|_| None).collect(),
            // Reversed so slot 0 is handed out first.
            free: (0..n_slots).rev().collect(),
        }
    }

    pub fn shape(&self) -> &KvShape {
        &self.shape
    }

    pub fn n_slots(&self) -> usize {
        self.slots.len()
    }

    pub fn n_free(&self) -> usize {
        self.free.len()
    }

    /// The slots not in use.
    pub fn free_slots(&self) -> &[usize] {
        &self.free
    }

    /// Take a free slot, allocating its memory on first use.
    pub fn acquire(&mut self) -> Result<Option<usize>> {
        match self.free.last().copied() {
            Some(index) => self.acquire_slot(index).map(|()| Some(index)),
            None => Ok(None),
        }
    }

    /// Take one particular free slot, allocating its memory on first use.
    pub fn acquire_slot(&mut self, index: usize) -> Result<()> {
        let Some(position) = self.free.iter().position(|&i| i == index) else {
            candle_core::bail!("KV slot {index} is not free");
        };
        if self.slots[index].is_none() {
            self.slots[index] = Some(KvSlot::new(&self.shape, &self.device)?);
        }
        self.free.remove(position);
        Ok(())
    }

    /// Give a slot back. Its contents stay until a later sequence overwrites them.
    pub fn release(&mut self, index: usize) {
        debug_assert!(!self.free.contains(&index));
        self.free.push(index);
    }

    pub fn slot(&self, index: usize) -> &KvSlot {
        self.slots[index]
            .as_ref()
            .expect("a slot handed out by acquire is allocated")
    }
}
