//! What every kernel launch needs: a function from wick's PTX, and a grid.

use candle_core::cuda_backend::cudarc::driver::{CudaFunction, LaunchConfig};
use candle_core::{CudaDevice, Result};

use super::ptx;

/// One PTX module: its name in the device's cache of custom modules, and its text.
#[derive(Clone, Copy)]
pub struct Module {
    name: &'static str,
    ptx: &'static str,
}

pub const RMS_NORM_ROPE: Module = Module {
    name: "wick_rms_norm_rope",
    ptx: ptx::RMS_NORM_ROPE,
};
pub const PAGED_ATTENTION: Module = Module {
    name: "wick_paged_attention",
    ptx: ptx::PAGED_ATTENTION,
};
pub const SAMPLING: Module = Module {
    name: "wick_sampling",
    ptx: ptx::SAMPLING,
};

/// A kernel of `module`; the device loads the module once and keeps it.
pub fn function(device: &CudaDevice, module: Module, name: &str) -> Result<CudaFunction> {
    Ok(device
        .get_or_load_custom_func(name, module.name, module.ptx)?
        .into_cuda_function())
}

/// Threads per block of the element-wise kernels.
const ELEMENTWISE_THREADS: u32 = 256;

/// The launch of an element-wise kernel over `n` elements: a grid that covers them, capped
/// (the kernels loop when it is).
pub fn elementwise(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (
            n.div_ceil(ELEMENTWISE_THREADS as usize).clamp(1, 65_535) as u32,
            1,
            1,
        ),
        block_dim: (ELEMENTWISE_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}
