#!/usr/bin/env bash
# Checks the logic of wick's CUDA kernels on the CPU, where there is no GPU: each kernel file
# is compiled as C++ against include/cuda_emu.h (one std::thread per CUDA thread, barriers
# for __syncthreads and warp shuffles) and its results compared with a port of the Rust CPU
# reference. It says nothing about speed, the memory model or the real compiler's rounding
# (expf, fused multiply-adds): the GPU tests (`cargo test --features cuda -- --ignored`) do.
#
#   kernels/emulation/run.sh        # needs g++ 12+ (C++20, _Float16); about a minute on 2 cores
set -euo pipefail
cd "$(dirname "$0")"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
flags=(-std=c++20 -O2 -ffp-contract=off -pthread -I include -I ..)
g++ "${flags[@]}" -o "$out/attention_check" attention_check.cpp
g++ "${flags[@]}" -o "$out/sampling_check" sampling_check.cpp
"$out/attention_check"
# A small vocabulary, one smaller than a block of threads, and Qwen2.5's.
"$out/sampling_check" 1000 4
"$out/sampling_check" 37 2
"$out/sampling_check" 151936 1
