// Picks one token per row of logits with the row's own temperature, top-k, min-p and top-p,
// from a uniform number in [0, 1) that the host draws (from the request's seeded generator,
// as the CPU sampler does). The Rust side is src/model/cuda/sampling.rs; its CPU reference
// defines what this kernel computes, step by step:
//
//   temperature <= 0 or top_k == 1: the first index of the largest logit.
//   otherwise, with s = logit * (1 / temperature) and the order "s descending, then index":
//     top-k keeps the first top_k tokens of that order (0 or >= vocab: all);
//     each kept token weighs w = exp(s - max s), dropped if w < min_p;
//     top-p keeps the shortest prefix of the order whose weight reaches top_p of the total;
//     the draw returns the first token at which the running weight reaches u * total,
//     running in that order when top-p cut, else in index order (the CPU sampler's orders).
//
// Weights are summed as 64-bit fixed point (w * 2^40, truncated): integer sums do not depend
// on the order the threads add them in, so a row gives the same token on every run and the
// CPU reference can reproduce the sums exactly. A weight below 2^-40 of the top token's
// counts as 0.
//
// One block per row. Each cut is found without sorting the vocabulary: a radix select over
// the order-preserving bits of s (four passes of 8-bit digits, each a histogram of weight
// per digit) finds the value at which the running weight crosses the target, then a scan
// in index order among the tokens of exactly that value settles ties.

#include "reduce.cuh"

typedef unsigned long long u64;

#define SAMPLE_THREADS 512
#define RADIX_BINS 256
#define FIXED_ONE 1099511627776.0f  // 2^40
#define NO_TOKEN 0xffffffffu

// Maps a float to an unsigned key with the same order (negative floats reversed).
__device__ __forceinline__ unsigned int order_key(float f) {
    const unsigned int u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Keeps the tokens up to and including (key, index) in the order "key descending, then
// index ascending"; the default keeps everything.
struct Cut {
    unsigned int key = 0;
    unsigned int index = NO_TOKEN;
    __device__ bool keeps(unsigned int k, unsigned int i) const {
        return k > key || (k == key && i <= index);
    }
};

// One row and the cuts found so far.
struct Row {
    const float* logits;
    unsigned int vocab;
    float inv_temperature;
    float max_scaled;
    float min_p;
    Cut top_k, top_p;

    __device__ float scaled(unsigned int i) const { return logits[i] * inv_temperature; }

    // The fixed-point weight of a token, 0 if a cut or min-p drops it.
    __device__ u64 weight(unsigned int i, float s, unsigned int key) const {
        if (!top_k.keeps(key, i) || !top_p.keeps(key, i)) return 0;
        const float w = expf(s - max_scaled);
        if (w < min_p) return 0;
        return (u64)(w * FIXED_ONE);
    }
};

// Weight functions for the selections: each token counts 1 (top-k) ...
struct CountAll {
    __device__ u64 operator()(const Row&, unsigned int, float, unsigned int) const { return 1; }
};
// ... or its kept weight ...
struct Kept {
    __device__ u64 operator()(const Row& r, unsigned int i, float s, unsigned int key) const {
        return r.weight(i, s, key);
    }
};
// ... restricted to the tokens of one key (ties), counting or weighing.
template <class W>
struct OnlyKey {
    W inner;
    unsigned int key;
    __device__ u64 operator()(const Row& r, unsigned int i, float s, unsigned int k) const {
        return k == key ? inner(r, i, s, k) : 0;
    }
};

__device__ __forceinline__ u64 warp_sum_u64(u64 v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(FULL_WARP, v, offset);
    return v;
}

template <class W>
__device__ u64 total_weight(const Row& r, W weight) {
    __shared__ u64 per_warp[32];
    __syncthreads();  // per_warp may still be read by a previous call
    u64 sum = 0;
    for (unsigned int i = threadIdx.x; i < r.vocab; i += blockDim.x) {
        const float s = r.scaled(i);
        sum += weight(r, i, s, order_key(s));
    }
    sum = warp_sum_u64(sum);
    if (threadIdx.x % 32 == 0) per_warp[threadIdx.x / 32] = sum;
    __syncthreads();
    u64 total = 0;
    for (unsigned int w = 0; w < blockDim.x / 32; ++w) total += per_warp[w];
    return total;
}

// In the order "key descending", the key of the token at which the running weight first
// reaches `target`, and the weight of all tokens with a larger key. Four passes, one per
// byte of the key from the top: each histograms the weight of the tokens that share the
// bytes found so far, then one warp walks the 256 bins from the largest digit down.
template <class W>
__device__ void radix_select(const Row& r, W weight, u64 target, unsigned int* key_out,
                             u64* above_out) {
    __shared__ u64 bins[RADIX_BINS];
    __shared__ unsigned int found_prefix;
    __shared__ u64 found_above;
    const unsigned int lane = threadIdx.x % 32;
    unsigned int prefix = 0;
    u64 above = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
        const unsigned int known = shift == 24 ? 0u : 0xffffffffu << (shift + 8);
        __syncthreads();  // bins and found_* may still be read by the previous pass or call
        for (unsigned int d = threadIdx.x; d < RADIX_BINS; d += blockDim.x) bins[d] = 0;
        __syncthreads();
        for (unsigned int i = threadIdx.x; i < r.vocab; i += blockDim.x) {
            const float s = r.scaled(i);
            const unsigned int key = order_key(s);
            if ((key & known) != prefix) continue;
            const u64 w = weight(r, i, s, key);
            if (w != 0) atomicAdd(&bins[(key >> shift) & 0xff], w);
        }
        __syncthreads();
        if (threadIdx.x < 32) {
            // Lane l holds bins 255 - 8l down to 248 - 8l: lanes in descending digit order.
            u64 local = 0;
            for (int j = 0; j < 8; ++j) local += bins[255 - 8 * lane - j];
            u64 inclusive = local;
            for (int offset = 1; offset < 32; offset <<= 1) {
                const u64 before = __shfl_up_sync(FULL_WARP, inclusive, offset);
                if (lane >= offset) inclusive += before;
            }
            const unsigned int reached = __ballot_sync(FULL_WARP, above + inclusive >= target);
            // Nothing reaches the target only if it exceeds the total (a caller's bug): then
            // the smallest digit, which keeps the result inside the row.
            const unsigned int winner = reached ? __ffs(reached) - 1 : 31;
            if (lane == winner) {
                u64 running = above + inclusive - local;
                unsigned int digit = 255 - 8 * lane - 7;
                for (int j = 0; j < 8; ++j) {
                    const unsigned int d = 255 - 8 * lane - j;
                    if (running + bins[d] >= target) {
                        digit = d;
                        break;
                    }
                    running += bins[d];
                }
                found_prefix = prefix | (digit << shift);
                found_above = running;
            }
        }
        __syncthreads();
        prefix = found_prefix;
        above = found_above;
    }
    *key_out = prefix;
    *above_out = above;
}

// In index order, the first token at which the running weight reaches `target` (NO_TOKEN if
// the row's total stays below it). Thread t sums its own contiguous range of the row; a
// block-wide scan of those sums tells the one thread whose range holds the target, which
// walks its range again.
template <class W>
__device__ unsigned int index_scan(const Row& r, W weight, u64 target) {
    __shared__ u64 warp_totals[32];
    __shared__ unsigned int found;
    const unsigned int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const unsigned int chunk = (r.vocab + blockDim.x - 1) / blockDim.x;
    const unsigned int begin = min(threadIdx.x * chunk, r.vocab);
    const unsigned int end = min(begin + chunk, r.vocab);
    u64 local = 0;
    for (unsigned int i = begin; i < end; ++i) {
        const float s = r.scaled(i);
        local += weight(r, i, s, order_key(s));
    }
    u64 inclusive = local;
    for (int offset = 1; offset < 32; offset <<= 1) {
        const u64 before = __shfl_up_sync(FULL_WARP, inclusive, offset);
        if (lane >= offset) inclusive += before;
    }
    __syncthreads();  // warp_totals and found may still be read by a previous call
    if (lane == 31) warp_totals[warp] = inclusive;
    if (threadIdx.x == 0) found = NO_TOKEN;
    __syncthreads();
    u64 before_warp = 0;
    for (unsigned int w = 0; w < warp; ++w) before_warp += warp_totals[w];
    const u64 exclusive = before_warp + inclusive - local;
    if (exclusive < target && target <= exclusive + local) {
        u64 running = exclusive;
        for (unsigned int i = begin; i < end; ++i) {
            const float s = r.scaled(i);
            running += weight(r, i, s, order_key(s));
            if (running >= target) {
                found = i;
                break;
            }
        }
    }
    __syncthreads();
    return found;
}

// The token at which the running weight reaches `target` in the order "s descending, then
// index": the value by radix select, the token among that value's ties by index scan.
template <class W>
__device__ unsigned int select_in_order(const Row& r, W weight, u64 target, unsigned int* key) {
    u64 above;
    radix_select(r, weight, target, key, &above);
    return index_scan(r, OnlyKey<W>{weight, *key}, target - above);
}

// The first index of the largest logit (the CPU sampler's argmax).
__device__ unsigned int argmax(const float* logits, unsigned int vocab) {
    __shared__ float warp_best[32];
    __shared__ unsigned int warp_index[32];
    float best = -INFINITY;
    unsigned int index = NO_TOKEN;
    for (unsigned int i = threadIdx.x; i < vocab; i += blockDim.x) {
        const float v = logits[i];
        if (v > best || index == NO_TOKEN) {
            best = v;
            index = i;
        }
    }
    for (int offset = 16; offset > 0; offset >>= 1) {
        const float other = __shfl_xor_sync(FULL_WARP, best, offset);
        const unsigned int other_index = __shfl_xor_sync(FULL_WARP, index, offset);
        if (other > best || (other == best && other_index < index)) {
            best = other;
            index = other_index;
        }
    }
    if (threadIdx.x % 32 == 0) {
        warp_best[threadIdx.x / 32] = best;
        warp_index[threadIdx.x / 32] = index;
    }
    __syncthreads();
    best = warp_best[0];
    index = warp_index[0];
    for (unsigned int w = 1; w < blockDim.x / 32; ++w) {
        if (warp_best[w] > best || (warp_best[w] == best && warp_index[w] < index)) {
            best = warp_best[w];
            index = warp_index[w];
        }
    }
    return index;
}

// The smallest whole weight that reaches `fraction` of `total`, at least 1 (the first kept
// token), at most `total`.
__device__ __forceinline__ u64 weight_target(float fraction, u64 total) {
    const double t = ceil((double)fraction * (double)total);
    const u64 whole = t < 1.0 ? 1 : (u64)t;
    return whole < total ? whole : total;
}

// logits: `[rows, vocab]`; params: `[rows, 4]` of (temperature, top_p, min_p, uniform);
// top_k: `[rows]`; out: `[rows]` token ids. Launch: grid rows, block SAMPLE_THREADS.
extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS)
    sample_f32(const float* __restrict__ logits, unsigned int vocab,
               const float* __restrict__ params, const unsigned int* __restrict__ top_k,
               unsigned int* __restrict__ out) {
    const unsigned int row_index = blockIdx.x;
    const float temperature = params[row_index * 4 + 0];
    const float top_p = params[row_index * 4 + 1];
    const float min_p = params[row_index * 4 + 2];
    const float uniform = params[row_index * 4 + 3];
    const unsigned int k = top_k[row_index];

    Row r;
    r.logits = logits + (size_t)row_index * vocab;
    r.vocab = vocab;
    const unsigned int best = argmax(r.logits, vocab);
    if (temperature <= 0.0f || k == 1) {
        if (threadIdx.x == 0) out[row_index] = best;
        return;
    }
    r.inv_temperature = 1.0f / temperature;
    // Rounding is monotonic, so the largest scaled logit is the largest logit scaled.
    r.max_scaled = r.logits[best] * r.inv_temperature;
    r.min_p = min_p > 0.0f ? min_p : 0.0f;
    unsigned int key;
    if (k > 0 && k < vocab) {
        const unsigned int last = select_in_order(r, CountAll{}, k, &key);
        r.top_k.key = key;
        r.top_k.index = last;
    }
    u64 total = total_weight(r, Kept{});
    if (top_p < 1.0f) {
        const unsigned int last = select_in_order(r, Kept{}, weight_target(top_p, total), &key);
        r.top_p.key = key;
        r.top_p.index = last;
        total = total_weight(r, Kept{});
    }
    const u64 target = weight_target(uniform, total);
    const unsigned int token = top_p < 1.0f ? select_in_order(r, Kept{}, target, &key)
                                            : index_scan(r, Kept{}, target);
    if (threadIdx.x == 0) out[row_index] = token == NO_TOKEN ? best : token;
}
