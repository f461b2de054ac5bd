// Warp and block reductions shared by wick's kernels.
#pragma once

#define FULL_WARP 0xffffffffu

__device__ __forceinline__ float warp_sum(float v) {
    // xor butterfly: every lane ends with the whole warp's sum.
    for (int offset = 16; offset > 0; offset >>= 1) {
        v += __shfl_xor_sync(FULL_WARP, v, offset);
    }
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        v = fmaxf(v, __shfl_xor_sync(FULL_WARP, v, offset));
    }
    return v;
}

// Sum over the block, returned to every thread. `scratch` holds one float per warp (32 at
// most). blockDim.x must be a multiple of 32.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const unsigned warps = blockDim.x / 32;
    v = warp_sum(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}
