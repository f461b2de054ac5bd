#!/usr/bin/env bash
# Installs the CUDA compiler and headers that `cargo build --features cuda` needs, from
# NVIDIA's Python wheels (no system CUDA, no GPU and no root needed), then prints the
# environment to export:
#
#   eval "$(scripts/cuda-toolkit.sh)"
#   cargo build --release --features cuda
#
# The versions are pinned to CUDA 13.0, the newest that the driver of the GPU machines wick is
# checked on (580.x) runs: PTX from a newer nvcc would not load there. The directory defaults
# to ~/.cache/wick/cuda-13.0 (WICK_CUDA_TOOLKIT overrides it); a second run reuses it.
# CUDA_COMPUTE_CAP names the GPU generation to build for (default 90: H100/H200), since a
# machine without a GPU cannot ask the driver.
set -euo pipefail

dir="${WICK_CUDA_TOOLKIT:-${XDG_CACHE_HOME:-$HOME/.cache}/wick/cuda-13.0}"
cap="${CUDA_COMPUTE_CAP:-90}"
# nvcc's wheel needs nvvm's (cicc, the device compiler) beside it. candle links cuBLAS,
# cuRAND and NVRTC at build time (the GPU machine has its own copies at run time).
wheels=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-nvrtc==13.0.88
  nvidia-curand==10.4.0.35
  nvidia-cublas==13.0.2.14
)
root="$dir/site/nvidia/cu13"

stamp="$dir/installed"
if [ "$(cat "$stamp" 2>/dev/null)" != "${wheels[*]}" ]; then
  echo "installing ${wheels[*]} into $dir" >&2
  mkdir -p "$dir"
  # All wheels in one fresh directory, then moved into place: pip's --target does not merge
  # the wheels' shared nvidia/ folder into an existing one.
  rm -rf "$dir/site.partial"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps \
    --target "$dir/site.partial" "${wheels[@]}" >&2
  rm -rf "$dir/site"
  mv "$dir/site.partial" "$dir/site"
  echo "${wheels[*]}" >"$stamp"
fi
"$root/bin/nvcc" --version >&2

# Some build scripts look for lib64/ (the system toolkit's layout) and for unversioned
# library names, which the wheels leave out.
[ -e "$root/lib64" ] || ln -s lib "$root/lib64"
for lib in "$root"/lib/lib*.so.*; do
  plain="${lib%%.so.*}.so"
  [ -e "$plain" ] || ln -s "$(basename "$lib")" "$plain"
done

# libcuda comes with the driver, which a machine without a GPU lacks: link against a stub
# that defines every driver entry point cuda.h names (as the full toolkit's lib/stubs does)
# and carries the driver's soname, so the binary loads the real driver where it runs.
stub="$root/lib/stubs/libcuda.so"
if [ ! -e "$stub" ]; then
  mkdir -p "$(dirname "$stub")"
  grep -ohE '\bcu[A-Z][A-Za-z0-9_]*\b' "$root/include/cuda.h" | sort -u |
    awk '{ print "void " $1 "(void) {}" }' >"$dir/libcuda-stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stub" "$dir/libcuda-stub.c"
fi

cat <<ENV
export CUDA_ROOT="$root"
export CUDA_PATH="$root"
export CUDA_TOOLKIT_ROOT_DIR="$root"
export PATH="$root/bin:\$PATH"
export LIBRARY_PATH="$root/lib:$root/lib/stubs\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
export CUDA_COMPUTE_CAP="$cap"
ENV
