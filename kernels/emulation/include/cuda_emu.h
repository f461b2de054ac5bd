// A CPU stand-in for the few CUDA features wick's kernels use: one std::thread per CUDA
// thread, std::barrier for __syncthreads and for warp shuffles. Blocks run one at a time, so
// __shared__ (static) storage is per block. Only for checking kernel logic.
#pragma once
#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __forceinline__
#define __launch_bounds__(x)
#define __restrict__ __restrict
#define __shared__ static

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

struct WarpSync {
    std::barrier<> bar{32};
    uint64_t buf[32];
};
inline std::unique_ptr<std::barrier<>> block_barrier;
inline std::vector<std::unique_ptr<WarpSync>> warps;

inline void __syncthreads() { block_barrier->arrive_and_wait(); }

template <class T>
inline T warp_read(T v, int src) {
    auto& w = *warps[threadIdx.x / 32];
    unsigned lane = threadIdx.x % 32;
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    w.buf[lane] = bits;
    w.bar.arrive_and_wait();
    T r;
    uint64_t got = w.buf[src];
    std::memcpy(&r, &got, sizeof(T));
    w.bar.arrive_and_wait();
    return r;
}
template <class T>
inline T __shfl_xor_sync(unsigned, T v, int offset) {
    return warp_read(v, (threadIdx.x % 32) ^ offset);
}
template <class T>
inline T __shfl_up_sync(unsigned, T v, int offset) {
    int lane = threadIdx.x % 32;
    return warp_read(v, lane >= offset ? lane - offset : lane);
}
inline unsigned __ballot_sync(unsigned, bool pred) {
    auto& w = *warps[threadIdx.x / 32];
    w.buf[threadIdx.x % 32] = pred;
    w.bar.arrive_and_wait();
    unsigned bits = 0;
    for (int l = 0; l < 32; ++l) bits |= (w.buf[l] ? 1u : 0u) << l;
    w.bar.arrive_and_wait();
    return bits;
}
inline int __ffs(unsigned x) { return __builtin_ffs(x); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
inline unsigned __float_as_uint(float f) {
    unsigned u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, 4);
    return f;
}
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
template <class A, class B>
inline auto min(A a, B b) {
    using C = std::common_type_t<A, B>;
    return (C)a < (C)b ? (C)a : (C)b;
}

// Runs `kernel` over `grid` blocks of `block` threads, one block after another.
inline void launch(dim3 grid, dim3 block, const std::function<void()>& kernel) {
    blockDim = block;
    gridDim = grid;
    for (unsigned by = 0; by < grid.y; ++by) {
        for (unsigned bx = 0; bx < grid.x; ++bx) {
            block_barrier = std::make_unique<std::barrier<>>(block.x);
            warps.clear();
            for (unsigned w = 0; w < block.x / 32; ++w) warps.push_back(std::make_unique<WarpSync>());
            std::vector<std::thread> threads;
            for (unsigned t = 0; t < block.x; ++t) {
                threads.emplace_back([=, &kernel] {
                    threadIdx = dim3{t, 0, 0};
                    blockIdx = dim3{bx, by, 0};
                    kernel();
                });
            }
            for (auto& th : threads) th.join();
        }
    }
}
