#!/usr/bin/env bash
# Bounded fuzz run for CI: builds the libFuzzer targets with cargo-fuzz on the
# stable toolchain (RUSTC_BOOTSTRAP=1 unlocks the sanitizer flags it needs),
# seeds scratch corpora from seeds/, fuzzes Tpm::execute for FUZZ_SECONDS
# (default 60) and Tpm::restore for FUZZ_RESTORE_SECONDS (default 20). Fails
# on a panic, a hang (> FUZZ_TIMEOUT s for one input), or a malformed
# response; a crashing input is kept in artifacts/ (or FUZZ_ARTIFACTS).
# Needs: cargo install cargo-fuzz; g++.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-60}"
timeout="${FUZZ_TIMEOUT:-10}"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/../../target-fuzz}"
restore_seconds="${FUZZ_RESTORE_SECONDS:-20}"
work="$(mktemp -d)"
artifacts="${FUZZ_ARTIFACTS:-$PWD/artifacts}"
mkdir -p "$artifacts"
trap 'rm -rf "$work"' EXIT
cargo fuzz build execute
cargo fuzz build restore
fuzz() { # target seconds
    mkdir -p "$work/$1"
    cp "seeds/$1"/* "$work/$1"/
    cargo fuzz run "$1" "$work/$1" -- \
        -max_total_time="$2" -timeout="$timeout" -rss_limit_mb=2048 \
        -max_len=8192 -artifact_prefix="$artifacts/$1-" -print_final_stats=1
    echo "fuzz $1: ${2}s without a finding (corpus $(ls "$work/$1" | wc -l) inputs)"
}
fuzz execute "$seconds"
fuzz restore "$restore_seconds"
