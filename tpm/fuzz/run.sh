#!/usr/bin/env bash
# Bounded fuzz run for CI: builds the libFuzzer target with cargo-fuzz on the
# stable toolchain (RUSTC_BOOTSTRAP=1 unlocks the sanitizer flags it needs),
# seeds a scratch corpus from seeds/, and fuzzes Tpm::execute for
# FUZZ_SECONDS (default 60). Fails on a panic, a hang (> FUZZ_TIMEOUT s for
# one input), or a malformed response. Needs: cargo install cargo-fuzz; g++.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-60}"
timeout="${FUZZ_TIMEOUT:-10}"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/../../target-fuzz}"
corpus="$(mktemp -d)"
artifacts="${FUZZ_ARTIFACTS:-$(mktemp -d)}"
trap 'rm -rf "$corpus"' EXIT
cp seeds/* "$corpus"/
cargo fuzz build execute
cargo fuzz run execute "$corpus" -- \
    -max_total_time="$seconds" -timeout="$timeout" -rss_limit_mb=2048 \
    -max_len=8192 -artifact_prefix="$artifacts/" -print_final_stats=1
echo "fuzz: ${seconds}s without a finding (corpus $(ls "$corpus" | wc -l) inputs)"
