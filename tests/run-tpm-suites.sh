#!/usr/bin/env bash
# The TPM server and engine suites, in the order CI runs them:
# server protocol, tpm2-tools, tpm2-abrmd, differential against libtpms, and
# a bounded fuzz run. Needs the apt packages tpm2-tools tpm2-abrmd
# libtss2-tcti-tabrmd0 libtpms-dev dbus g++ and `cargo install cargo-fuzz`.
# FUZZ_SECONDS=0 skips the fuzz run (for a quick local pass).
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in tpm2_startup tpm2-abrmd dbus-daemon; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
# The suites start the servers as binaries: build them first.
cargo build --bins -p rivet-tools -p rivet-libtpms
cargo test -p rivet-tools -p rivet-libtpms
cargo test -p rivet-tests --test mssim_server --test tpm2_tools --test abrmd --test differential
if [ "${FUZZ_SECONDS:-60}" != 0 ]; then
    CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/fuzz" tpm/fuzz/run.sh
fi
