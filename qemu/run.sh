#!/usr/bin/env bash
# The main job: build the Rivet SVSM image and boot it under QEMU (TCG) to
# its ready line. Arguments go to the runner (try --help), e.g.
#   qemu/run.sh --ktest            run the in-kernel tests
#   qemu/run.sh --boots 9          median boot-to-ready time over 9 boots
#   qemu/run.sh --append rivet.log=debug
set -euo pipefail
cd "$(dirname "$0")/.."
qemu/setup.sh run
cargo build --quiet -p rivet-qemu --bin rivet-run
exec target/debug/rivet-run "$@"
