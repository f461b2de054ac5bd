#!/usr/bin/env bash
# An `nvcc` for lint-only builds (CI's `cargo clippy --features cuda`): candle's own kernels
# (the candle-kernels crate: its PTX modules and its static library of llama.cpp-derived
# matrix kernels, most of a cuda build's time on two cores) are replaced by empty outputs,
# since a lint build never links or runs them; everything else, wick's own kernels/*.cu
# included, goes to the real compiler. Never use it for a build that runs on a GPU, and
# remove candle-kernels' build outputs after it (.ci/run does), or a later cuda build in the
# same target dir keeps the stubs.
#
# Usage: NVCC="$PWD/scripts/nvcc-lint.sh" REAL_NVCC="$CUDA_ROOT/bin/nvcc" cargo clippy ...
set -euo pipefail
real="${REAL_NVCC:?REAL_NVCC names the real nvcc}"

candle=false
for arg in "$@"; do
    case "$arg" in *candle-kernels*) candle=true ;; esac
done
$candle || exec "$real" "$@"

orig=("$@")

mode="" out="" dir="" sources=() objects=()
while [ $# -gt 0 ]; do
    case "$1" in
        --ptx) mode=ptx ;;
        -c) mode=object ;;
        --lib) mode=lib ;;
        -o) out="$2"; shift ;;
        --output-directory) dir="$2"; shift ;;
        *.cu) sources+=("$1") ;;
        *.o) objects+=("$1") ;;
    esac
    shift
done
case "$mode" in
    ptx)
        for src in "${sources[@]}"; do
            name="$(basename "$src" .cu)"
            printf '// empty: lint-only build (scripts/nvcc-lint.sh)\n' >"$dir/$name.ptx"
        done ;;
    object) cc -c -x c /dev/null -o "$out" ;;
    lib) ar rcs "$out" "${objects[@]}" ;;
    *) exec "$real" "${orig[@]}" ;;
esac
