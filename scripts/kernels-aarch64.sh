#!/usr/bin/env bash
# wick's CPU kernels (crates/quant) on aarch64: cross-compiled here and run under qemu-user,
# once on an emulated CPU with the dot-product extension (NEON + sdot paths) and once on one
# without it (NEON only). Each time the tests check every path the CPU has against the
# scalar reference, to the bit. Speed on ARM cannot be measured this way; only correctness.
set -euo pipefail
cd "$(dirname "$0")/.."

target=aarch64-unknown-linux-gnu
need=()
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
# The cross C library (only recommended by the compiler package, so named here).
[ -d /usr/aarch64-linux-gnu/lib ] || need+=(libc6-dev-arm64-cross)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -q && apt-get install -y -q "${need[@]}"
fi
rustup target list --installed | grep -qx "$target" || rustup target add "$target"

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
# .cargo/config.toml builds for this machine's CPU; the ARM build targets any aarch64 (NEON is
# baseline; sdot is detected at run time).
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-cpu=generic"
cargo clippy --release -p wick-quant --all-targets --target "$target" -- -D warnings
# cortex-a76 has sdot (NeonDot and Neon checked); cortex-a57 does not (Neon checked).
for cpu in cortex-a76 cortex-a57; do
    case $cpu in
        cortex-a76) expect="[Neon, NeonDot]" ;;
        *) expect="[Neon]" ;;
    esac
    echo "== wick-quant tests on an emulated $cpu (must check $expect)"
    WICK_QUANT_EXPECT_ISAS="$expect" \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -cpu $cpu -L /usr/aarch64-linux-gnu" \
        cargo test --release -p wick-quant --target "$target" -- --nocapture 2>&1 |
        tee /tmp/wick-quant-aarch64.log | grep -E "^test |checked against|test result|panicked"
done
