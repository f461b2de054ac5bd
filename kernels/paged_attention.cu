// Decode attention over a paged KV cache, and the kernel that writes new keys and values
// into their blocks. The Rust side is src/model/cuda/{paged_kv,paged_attention}.rs, whose
// CPU references these kernels must match.
//
// One layer's cache is one buffer of halves, two planes (keys, then values) of
//   [num_blocks][n_kv_heads][KV_BLOCK][head_dim]
// so the KV_BLOCK keys of one head in one block are contiguous: a warp reading a block reads
// KV_BLOCK * head_dim * 2 bytes in a row. A sequence owns a list of blocks (its block table)
// in whatever order the allocator handed them out; token t of the sequence sits in block
// table[t / KV_BLOCK] at offset t % KV_BLOCK.
//
// The cache holds f16: decode attention reads every cached key and value once per step, so
// its cost is the cache's bytes, and f16 halves them (and doubles the tokens a GPU holds).
// wick already rounds cached keys and values to f16 on every path (as llama.cpp's default
// cache does), so an f16 cache loses nothing against today's results; f16's 11-bit
// mantissa keeps more than bf16's 8 for values of this small range.

#include <cuda_fp16.h>

#include "reduce.cuh"

// Tokens per cache block. Rust: paged_kv::BLOCK_TOKENS (the two must agree).
#define KV_BLOCK 16
// Warps per (sequence, head): they share the sequence's blocks round-robin.
#define ATTN_WARPS 4
// A slot value that writes nothing (padding rows).
#define NO_SLOT 0xffffffffu

// Writes row r of k and v (`[rows, n_kv_heads * head_dim]`, rows `k_stride`/`v_stride`
// apart) at cache slot slots[r] = block * KV_BLOCK + offset, rounded to f16 (round to
// nearest even, as half::f16::from_f32). One thread per element; slots past the cache and
// NO_SLOT write nothing.
extern "C" __global__ void paged_kv_write_f16(const float* __restrict__ k,
                                              const float* __restrict__ v,
                                              unsigned int k_stride, unsigned int v_stride,
                                              const unsigned int* __restrict__ slots,
                                              __half* __restrict__ cache,
                                              unsigned int num_blocks, unsigned int rows,
                                              unsigned int n_kv_heads, unsigned int head_dim) {
    const unsigned int width = n_kv_heads * head_dim;
    const size_t plane = (size_t)num_blocks * width * KV_BLOCK;
    const size_t total = (size_t)rows * width;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        const unsigned int row = idx / width, col = idx % width;
        const unsigned int slot = slots[row];
        if (slot == NO_SLOT || slot / KV_BLOCK >= num_blocks) continue;
        const unsigned int head = col / head_dim, d = col % head_dim;
        const size_t dst =
            (((size_t)(slot / KV_BLOCK) * n_kv_heads + head) * KV_BLOCK + slot % KV_BLOCK) *
                head_dim + d;
        cache[dst] = __float2half_rn(k[(size_t)row * k_stride + col]);
        cache[plane + dst] = __float2half_rn(v[(size_t)row * v_stride + col]);
    }
}

// One query token per sequence: out[s][h] = softmax(q[s][h] . K / sqrt(D)) V over the first
// context_lens[s] tokens of sequence s, query head h reading kv head h / (n_heads /
// n_kv_heads). Scores, softmax and sums in f32.
//
// One block of ATTN_WARPS warps per (head, sequence). Each warp takes every ATTN_WARPS-th
// cache block of the sequence and keeps a running (online) softmax over it: its maximum,
// its sum of exp(score - max) and its weighted sum of values, rescaled when the maximum
// grows. Lane l holds dims [l * D/32, (l + 1) * D/32) of the query and of that running sum.
// The warps' partial results are merged at the end. Any context length runs in the same
// registers and shared memory.
template <int D>
__device__ __forceinline__ void paged_attention(
    float* __restrict__ out, const float* __restrict__ q, unsigned int q_stride,
    const __half* __restrict__ cache, unsigned int num_blocks,
    const unsigned int* __restrict__ block_tables, unsigned int table_stride,
    const unsigned int* __restrict__ context_lens, unsigned int n_heads,
    unsigned int n_kv_heads, float scale) {
    static_assert(D % 64 == 0, "lanes read pairs of halves: head_dim / 32 must be even");
    constexpr int E = D / 32;
    __shared__ float warp_max_score[ATTN_WARPS];
    __shared__ float warp_sum_exp[ATTN_WARPS];
    __shared__ float warp_values[ATTN_WARPS][D];

    const unsigned int head = blockIdx.x, seq = blockIdx.y;
    const unsigned int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const unsigned int kv_head = head / (n_heads / n_kv_heads);
    const unsigned int len = context_lens[seq];
    const size_t plane = (size_t)num_blocks * n_kv_heads * KV_BLOCK * D;
    float* dst = out + ((size_t)seq * n_heads + head) * D;
    if (len == 0) {
        for (unsigned int d = threadIdx.x; d < D; d += blockDim.x) dst[d] = 0.0f;
        return;
    }

    float query[E];
    const float* q_row = q + (size_t)seq * q_stride + (size_t)head * D + lane * E;
#pragma unroll
    for (int e = 0; e < E; ++e) query[e] = q_row[e];

    float max_score = -INFINITY, sum_exp = 0.0f;
    float values[E];
#pragma unroll
    for (int e = 0; e < E; ++e) values[e] = 0.0f;

    const unsigned int* table = block_tables + (size_t)seq * table_stride;
    // The host sizes tables to hold every block; the min only keeps a bad length inside
    // this sequence's table.
    const unsigned int n_blocks = min((len + KV_BLOCK - 1) / KV_BLOCK, table_stride);
    for (unsigned int b = warp; b < n_blocks; b += ATTN_WARPS) {
        // The host checks tables; a bad entry must still not read outside the cache.
        if (table[b] >= num_blocks) continue;
        const size_t base = ((size_t)table[b] * n_kv_heads + kv_head) * KV_BLOCK * D + lane * E;
        const unsigned int count = min(KV_BLOCK, len - b * KV_BLOCK);
        // The block's scores: all partial dot products first, then the reductions, so the
        // KV_BLOCK shuffle chains overlap instead of running one after another.
        float score[KV_BLOCK];
#pragma unroll
        for (int t = 0; t < KV_BLOCK; ++t) {
            float part = 0.0f;
            if (t < count) {
                const __half2* key = reinterpret_cast<const __half2*>(cache + base + t * D);
#pragma unroll
                for (int e = 0; e < E / 2; ++e) {
                    const float2 kf = __half22float2(key[e]);
                    part += query[2 * e] * kf.x + query[2 * e + 1] * kf.y;
                }
            }
            score[t] = part;
        }
        float block_max = -INFINITY;
#pragma unroll
        for (int t = 0; t < KV_BLOCK; ++t) {
            score[t] = warp_sum(score[t]) * scale;
            if (t < count) block_max = fmaxf(block_max, score[t]);
        }
        const float new_max = fmaxf(max_score, block_max);
        // exp(-inf) = 0: the first block rescales nothing.
        const float rescale = expf(max_score - new_max);
        sum_exp *= rescale;
#pragma unroll
        for (int e = 0; e < E; ++e) values[e] *= rescale;
#pragma unroll
        for (int t = 0; t < KV_BLOCK; ++t) {
            if (t < count) {
                const float p = expf(score[t] - new_max);
                sum_exp += p;
                const __half2* value =
                    reinterpret_cast<const __half2*>(cache + plane + base + t * D);
#pragma unroll
                for (int e = 0; e < E / 2; ++e) {
                    const float2 vf = __half22float2(value[e]);
                    values[2 * e] += p * vf.x;
                    values[2 * e + 1] += p * vf.y;
                }
            }
        }
        max_score = new_max;
    }

    if (lane == 0) {
        warp_max_score[warp] = max_score;
        warp_sum_exp[warp] = sum_exp;
    }
#pragma unroll
    for (int e = 0; e < E; ++e) warp_values[warp][lane * E + e] = values[e];
    __syncthreads();

    // Merge the warps: each one's sums rescaled to the common maximum. A warp that saw no
    // block has max -inf and weighs 0.
    float common_max = -INFINITY;
#pragma unroll
    for (int w = 0; w < ATTN_WARPS; ++w) common_max = fmaxf(common_max, warp_max_score[w]);
    float weight[ATTN_WARPS];
    float total = 0.0f;
#pragma unroll
    for (int w = 0; w < ATTN_WARPS; ++w) {
        weight[w] = warp_max_score[w] == -INFINITY ? 0.0f : expf(warp_max_score[w] - common_max);
        total += weight[w] * warp_sum_exp[w];
    }
    for (unsigned int d = threadIdx.x; d < D; d += blockDim.x) {
        float acc = 0.0f;
#pragma unroll
        for (int w = 0; w < ATTN_WARPS; ++w) acc += weight[w] * warp_values[w][d];
        dst[d] = acc / total;
    }
}

// q: `[n_seqs, n_heads * D]` f32 (rows q_stride apart); out: `[n_seqs, n_heads * D]` f32;
// block_tables: `[n_seqs, table_stride]`; context_lens: `[n_seqs]`.
// Launch: grid (n_heads, n_seqs), block ATTN_WARPS * 32 threads.
#define PAGED_ATTENTION(D)                                                                  \
    extern "C" __global__ void __launch_bounds__(ATTN_WARPS * 32)                           \
        paged_attention_d##D##_f16(float* out, const float* q, unsigned int q_stride,       \
                                   const __half* cache, unsigned int num_blocks,            \
                                   const unsigned int* block_tables,                        \
                                   unsigned int table_stride,                               \
                                   const unsigned int* context_lens, unsigned int n_heads,  \
                                   unsigned int n_kv_heads, float scale) {                  \
        paged_attention<D>(out, q, q_stride, cache, num_blocks, block_tables, table_stride, \
                           context_lens, n_heads, n_kv_heads, scale);                       \
    }

PAGED_ATTENTION(64)
PAGED_ATTENTION(128)
PAGED_ATTENTION(256)
