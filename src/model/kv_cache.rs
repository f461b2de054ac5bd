//! The KV cache: one slot per running sequence, allocated once at its full capacity and
//! written in place, so a decode step never copies or regrows the cache.

use std::cell::{RefCell, RefMut};

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

/// The keys and values of one sequence: per layer, `[n_kv_heads, capacity, head_dim]`. On
/// the CPU they live in plain host memory that the model's own kernels write in place; on a
/// GPU they are device tensors written with `slice_set`.
pub enum KvSlot {
    Host {
        keys: Vec<RefCell<Vec<f32>>>,
        values: Vec<RefCell<Vec<f32>>>,
    },
    Device {
        keys: Vec<Tensor>,
        values: Vec<Tensor>,
    },
}

/// One layer's host cache, borrowed for a step.
pub struct HostLayer<'a> {
    pub keys: RefMut<'a, Vec<f32>>,
    pub values: RefMut<'a, Vec<f32>>,
}

impl KvSlot {
    fn new(shape: &KvShape, device: &Device) -> Result<Self> {
        let dims = (shape.n_kv_heads, shape.capacity, shape.head_dim);
        if device.is_cpu() {
            let len = shape.n_kv_heads * shape.capacity * shape.head_dim;
            let alloc = || {
                (0..shape.n_layers)
                    .map(|_| RefCell::new(vec![0f32; len]))
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
