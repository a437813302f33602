#!/usr/bin/env bash
# Every test: formatting, lints (host and kernel target), the kernel built
# for bare metal, then the whole workspace's tests (unit tests, the kernel
# under QEMU, tpm2-tools against the TPM server, the engine against libtpms).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
qemu/setup.sh test

step() { echo "== $*" >&2; "$@"; }
step cargo fmt --all -- --check
step cargo clippy --quiet --workspace --all-targets -- -D warnings
step cargo clippy --quiet -p rivet-kernel --target x86_64-unknown-none -- -D warnings
step cargo clippy --quiet -p rivet-kernel --target x86_64-unknown-none --features ktest -- -D warnings
# Separately: linked alone, the guest firmware has no allocator.
step cargo clippy --quiet -p rivet-firmware-guest --target x86_64-unknown-none -- -D warnings
step cargo build --quiet -p rivet-tpm --target x86_64-unknown-none
step cargo test --workspace
echo "== all tests passed in $(( $(date +%s) - start )) s" >&2
