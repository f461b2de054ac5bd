#!/usr/bin/env bash
# On the GPU machine: unpacks the parts written by scripts/gpu-bundle.sh into /tmp/wick-gpu
# and prints the environment the binaries need there.
#
#   eval "$(scripts/gpu-unpack.sh)"
#   /tmp/wick-gpu/bin/wick serve --device cuda
#   for t in /tmp/wick-gpu/tests/*; do "$t" --test-threads 1 || echo "FAILED: $t"; done
set -euo pipefail
cd "$(dirname "$0")/.."
dest=/tmp/wick-gpu
if [ ! -x "$dest/bin/wick" ]; then
  mkdir -p "$dest"
  # zstd may be missing there: Python's zstd module or the binary, whichever exists.
  if command -v zstd >/dev/null; then
    cat gpu-bundle/part-* | zstd -dc | tar -C "$dest" -xf -
  else
    cat gpu-bundle/part-* | python3 -c 'import sys, zstandard as z; z.ZstdDecompressor().copy_stream(sys.stdin.buffer, sys.stdout.buffer)' | tar -C "$dest" -xf -
  fi
fi
mkdir -p "$dest/cache/models"
cp -n "$dest"/models/* "$dest/cache/models/" 2>/dev/null || true

# The test binaries read models.toml and fixtures from the path of the checkout they were
# built in; point that path at this copy.
built_in=/work/main
if [ ! -e "$built_in/models.toml" ]; then
  mkdir -p "$(dirname "$built_in")"
  ln -sfn "$PWD" "$built_in"
fi

# cudarc opens the CUDA libraries at run time: the driver's libcuda, and cuBLAS, cuRAND and
# NVRTC, which there come with PyTorch's wheels.
libs=$(find / -xdev \( -name 'libcublas.so*' -o -name 'libcurand.so*' -o -name 'libnvrtc.so*' \
  -o -name 'libcudart.so*' \) -printf '%h\n' 2>/dev/null | sort -u | paste -sd: -)
echo "export WICK_CACHE=$dest/cache"
echo "export LD_LIBRARY_PATH=$libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
echo "export PATH=$dest/bin:\$PATH"
