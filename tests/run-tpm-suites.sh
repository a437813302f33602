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
# The suites start the server binaries; cargo builds them for the packages'
# own integration tests (tools/tests, tests/libtpms/tests) in the same run.
cargo test --no-fail-fast -p rivet-tools -p rivet-libtpms -p rivet-tests \
    --lib --bins --test cli --test mssim_server --test tpm2_tools --test tpm2_tools_keys --test abrmd \
    --test differential
if [ "${FUZZ_SECONDS:-60}" != 0 ]; then
    CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/fuzz" tpm/fuzz/run.sh
fi
