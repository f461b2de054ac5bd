//! How the ops reach the elements of their tensors, on either backend: contiguous tensors
//! as one slice, matrices row by row ([`Rows`]), and tensors an op reads besides its
//! operands (positions, tables) through [`Held`].

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, Layout, Result, Storage, StorageRef, Tensor, WithDType};

use super::rows::Rows;

/// The elements of a contiguous CPU tensor.
pub fn cpu_contiguous<'a, T: WithDType>(
    storage: &'a CpuStorage,
    layout: &Layout,
    what: &str,
) -> Result<&'a [T]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("{what} must be contiguous");
    };
    check_dtype::<T>(storage.dtype(), what)?;
    Ok(&storage.as_slice::<T>()?[start..end])
}

/// The storage of a CPU matrix, from its first row's start on (row r at `r * rows.stride`).
pub fn cpu_rows<'a, T: WithDType>(
    storage: &'a CpuStorage,
    rows: &Rows,
    what: &str,
) -> Result<&'a [T]> {
    check_dtype::<T>(storage.dtype(), what)?;
    Ok(&storage.as_slice::<T>()?[rows.start..rows.end()])
}

fn check_dtype<T: WithDType>(dtype: candle_core::DType, what: &str) -> Result<()> {
    if dtype != T::DTYPE {
        bail!("{what} must be {:?}, not {dtype:?}", T::DTYPE);
    }
    Ok(())
}

/// A tensor an op reads besides its operands, its storage read-locked for as long as this
/// lives. It must not be the tensor the op writes (that one is write-locked already).
pub struct Held<'a> {
    storage: StorageRef<'a>,
    layout: &'a Layout,
}

impl<'a> Held<'a> {
    pub fn new(tensor: &'a Tensor) -> Self {
        let (storage, layout) = tensor.storage_and_layout();
        Self { storage, layout }
    }

    pub fn cpu<T: WithDType>(&self, what: &str) -> Result<&[T]> {
        match &*self.storage {
            Storage::Cpu(storage) => cpu_contiguous(storage, self.layout, what),
            _ => bail!("{what} must be on the CPU, with the op's other tensors"),
        }
    }

    #[cfg(feature = "cuda")]
    pub fn cuda<T: cuda::Element>(
        &self,
        what: &str,
    ) -> Result<candle_core::cuda_backend::cudarc::driver::CudaView<'_, T>> {
        match &*self.storage {
            Storage::Cuda(storage) => cuda::contiguous(storage, self.layout, what),
            _ => bail!("{what} must be on the GPU, with the op's other tensors"),
        }
    }
}

#[cfg(feature = "cuda")]
pub mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{CudaView, CudaViewMut, DeviceRepr};
    use candle_core::cuda_backend::CudaDType;
    use candle_core::{bail, CudaStorage, Layout, Result, WithDType};

    use super::{check_dtype, Rows};

    /// An element type both candle and the kernels know.
    pub trait Element: CudaDType + WithDType + DeviceRepr {}
    impl<T: CudaDType + WithDType + DeviceRepr> Element for T {}

    /// The elements of a contiguous GPU tensor.
    pub fn contiguous<'a, T: Element>(
        storage: &'a CudaStorage,
        layout: &Layout,
        what: &str,
    ) -> Result<CudaView<'a, T>> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            bail!("{what} must be contiguous");
        };
        check_dtype::<T>(storage.dtype(), what)?;
        Ok(storage.as_cuda_slice::<T>()?.slice(start..end))
    }

    /// The storage of a GPU matrix from its first row's start on (row r at
    /// `r * rows.stride`).
    pub fn rows<'a, T: Element>(
        storage: &'a CudaStorage,
        rows: &Rows,
        what: &str,
    ) -> Result<CudaView<'a, T>> {
        check_dtype::<T>(storage.dtype(), what)?;
        Ok(storage.as_cuda_slice::<T>()?.slice(rows.start..rows.end()))
    }

    /// The same, writable (the destination of an in-place op).
    pub fn rows_mut<'a, T: Element>(
        storage: &'a mut CudaStorage,
        rows: &Rows,
        what: &str,
    ) -> Result<CudaViewMut<'a, T>> {
        check_dtype::<T>(storage.dtype(), what)?;
        Ok(storage
            .as_cuda_slice_mut::<T>()?
            .slice_mut(rows.start..rows.end()))
    }
}
