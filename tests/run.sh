#!/usr/bin/env bash
# Every test: formatting, lints (host and kernel target), the engine built
# for bare metal, the whole workspace's tests (unit tests; the kernel and the
# SVSM serving its guest under QEMU; tpm2-tools, tpm2-abrmd, the mssim and
# swtpm protocols against the TPM server; OVMF + Linux on our TPM and on
# swtpm; the IGVM images; the engine against libtpms), then a bounded fuzz
# run.
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
step cargo test --workspace --no-fail-fast
# A bounded fuzz run of the engine's command entry point and state restore.
step env FUZZ_SECONDS="${FUZZ_SECONDS:-60}" FUZZ_RESTORE_SECONDS="${FUZZ_RESTORE_SECONDS:-20}" \
    CARGO_TARGET_DIR="$PWD/target/fuzz" tpm/fuzz/run.sh
echo "== all tests passed in $(( $(date +%s) - start )) s" >&2
