#!/usr/bin/env bash
# Builds wick and its test binaries with the `cuda` feature here (a machine with the Rust
# toolchain and no GPU) and packs them, with the model the tests use, into parts small
# enough to carry to a GPU machine that has NVIDIA's driver but no toolchain, registry or
# model hub:
#
#   scripts/gpu-bundle.sh [TEST ...]     # e.g. wick engine_batching chat_api; default: all
#
# writes gpu-bundle/part-00, part-01, ... (each at most 60 MiB; the folder is git-ignored) and
# gpu-bundle/MANIFEST. On the GPU machine, in a copy of this repository, once every part is
# there (carry them a few per call: the parts stay between calls while it is warm):
#
#   scripts/gpu-unpack.sh            # unpacks into /tmp/wick-gpu and prints what to export
#
# See README.md, "On a GPU".
set -euo pipefail
cd "$(dirname "$0")/.."

eval "$(scripts/cuda-toolkit.sh)"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/tests" "$stage/models"

cargo build --release --features cuda
target=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
cp "$target/release/wick" "$stage/bin/"

# The test executables cargo builds, as it names them: the named ones (`wick` for the
# library's unit tests, else a file of tests/), or all.
targets=()
for name in "$@"; do
  if [ "$name" = wick ]; then targets+=(--lib); else targets+=(--test "$name"); fi
done
cargo test --release --features cuda --no-run --message-format=json "${targets[@]}" |
  jq -r 'select(.reason == "compiler-artifact" and .profile.test and .executable != null)
         | "\(.target.name) \(.executable)"' |
  while read -r name exe; do
    cp "$exe" "$stage/tests/$name"
  done
strip "$stage"/bin/* "$stage"/tests/*

# The default model, with the marker that says its checksum was verified, so nothing tries
# to download it there.
cache="${WICK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wick}/models"
for f in "$cache"/SmolLM2-135M-Instruct.Q4_1.gguf*; do cp "$f" "$stage/models/"; done

rm -rf gpu-bundle && mkdir gpu-bundle
tar -C "$stage" -cf - . | zstd -q -T0 -12 | split -b 60M -d -a 2 - gpu-bundle/part-
(cd "$stage" && find . -type f -printf '%s %p\n' | sort -k2) >gpu-bundle/MANIFEST
ls -l gpu-bundle
echo "carry gpu-bundle/part-NN (60 MiB each, at most one per call with the 64 MiB limit)" >&2
