// RMS normalisation of rows, and rotary position embedding applied in place to the heads of
// rows that each carry their own position. The Rust side is src/model/cuda/{rms_norm,rope}.rs,
// whose CPU references these kernels must match.

#include "reduce.cuh"

// out[r][i] = x[r][i] / sqrt(mean_i(x[r]^2) + eps) * weight[i]
//
// One block per row: a row is one token's hidden state (a few thousand floats), small enough
// for one block to read twice (the second read hits L1/L2). x rows are `x_stride` apart; out
// is contiguous. The division by the root, not a multiplication by rsqrt, follows candle's
// CPU rms_norm so the two differ only by the order of the sum of squares.
extern "C" __global__ void rms_norm_f32(const float* __restrict__ x,
                                        const float* __restrict__ weight,
                                        float* __restrict__ out, unsigned int n,
                                        unsigned int x_stride, float eps) {
    __shared__ float scratch[32];
    const float* row = x + (size_t)blockIdx.x * x_stride;
    float* dst = out + (size_t)blockIdx.x * n;
    float squares = 0.0f;
    for (unsigned int i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = row[i];
        squares += v * v;
    }
    squares = block_sum(squares, scratch);
    const float root = sqrtf(squares / (float)n + eps);
    for (unsigned int i = threadIdx.x; i < n; i += blockDim.x) {
        dst[i] = row[i] / root * weight[i];
    }
}

// Rotates, in place, the first `heads` heads (each 2 * half floats) of every row of x, row r
// by the angles of position positions[r]: pair (a, b) becomes
//   (x_a cos - x_b sin, x_a sin + x_b cos)
// with a = 2i, b = 2i + 1 (interleaved: llama) or a = i, b = i + half (halves: qwen2, NeoX).
// cos and sin are `[max_positions, half]` tables.
//
// One thread per pair, over every row of the batch in one launch: a decode step of many
// sequences, each at its own position, is a single kernel. When a row holds q and k heads
// side by side (a stacked qkv projection), one launch rotates both.
//
// The products and sums are rounded one by one (no fused multiply-add) like the Rust loop in
// RopeTables::rotate_in_place, so given the same tables the two agree to the bit.
// A position past the tables writes NaN: loud rather than silently unrotated.
extern "C" __global__ void rope_f32(float* __restrict__ x, unsigned int x_stride,
                                    unsigned int rows, unsigned int heads,
                                    const unsigned int* __restrict__ positions,
                                    const float* __restrict__ cos_table,
                                    const float* __restrict__ sin_table,
                                    unsigned int max_positions, unsigned int half,
                                    unsigned int interleaved) {
    const unsigned int pairs_per_row = heads * half;
    const size_t total = (size_t)rows * pairs_per_row;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        const unsigned int row = idx / pairs_per_row;
        const unsigned int rest = idx % pairs_per_row;
        const unsigned int head = rest / half, i = rest % half;
        float* h = x + (size_t)row * x_stride + (size_t)head * 2 * half;
        const unsigned int a = interleaved ? 2 * i : i;
        const unsigned int b = interleaved ? 2 * i + 1 : i + half;
        const unsigned int pos = positions[row];
        if (pos >= max_positions) {
            h[a] = __int_as_float(0x7fc00000);
            h[b] = __int_as_float(0x7fc00000);
            continue;
        }
        const float c = cos_table[(size_t)pos * half + i];
        const float s = sin_table[(size_t)pos * half + i];
        const float x0 = h[a], x1 = h[b];
        h[a] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
        h[b] = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
    }
}
