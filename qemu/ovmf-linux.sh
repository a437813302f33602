#!/usr/bin/env bash
# Boots OVMF + Debian's cloud kernel + a busybox/tpm2-tools initramfs under
# QEMU (TCG) with a TPM 2.0 CRB device backed by Rivet's TPM engine
# (rivet-tpm-server speaking the swtpm control channel), or by swtpm.
#
#   qemu/ovmf-linux.sh                   a shell in the guest (tpm2-tools on /dev/tpmrm0)
#   qemu/ovmf-linux.sh --check           the end-to-end test's guest: EK, AK, quote, then power off
#   qemu/ovmf-linux.sh --swtpm           the same with swtpm instead of Rivet's engine
#   qemu/ovmf-linux.sh --state DIR       keep TPM state and OVMF variables in DIR
#                                        (default target/ovmf-linux/rivet or …/swtpm)
#   qemu/ovmf-linux.sh --release         a release build of the TPM server
#   qemu/ovmf-linux.sh -- -smp 2         more QEMU arguments after --
#
# The TPM state (and OVMF's variable store) persists in the state directory
# across runs: delete it for a factory-fresh TPM. Ctrl-A X quits QEMU.
set -euo pipefail
cd "$(dirname "$0")/.."

backend=rivet
init=qemu/linux-guest/init-shell
state=""
profile=debug
append=""
while [ $# -gt 0 ]; do
    case "$1" in
        --swtpm) backend=swtpm ;;
        --check) init=qemu/linux-guest/init-check
                 append="rivet.nonce.first=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
                 append+=" rivet.nonce.second=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
                 append+=" rivet.nvdata=ovmf-linux-check rivet.after=poweroff" ;;
        --state) state="$2"; shift ;;
        --release) profile=release ;;
        --) shift; break ;;
        *) echo "ovmf-linux: unknown option $1 (see the comment at the top)" >&2; exit 2 ;;
    esac
    shift
done
state="${state:-target/ovmf-linux/$backend}"

qemu/setup.sh linux >&2
kernel=$(qemu/fetch-linux-kernel.sh)
mkdir -p "$state"
state=$(cd "$state" && pwd)
qemu/linux-initramfs.sh "$state/initramfs.cpio.gz" "$init"
[ -e "$state/OVMF_VARS_4M.fd" ] || cp /usr/share/OVMF/OVMF_VARS_4M.fd "$state/"

ctrl="$state/ctrl.sock"
rm -f "$ctrl"
if [ "$backend" = rivet ]; then
    flag=""
    [ "$profile" = release ] && flag=--release
    cargo build --quiet $flag -p rivet-tools --bin rivet-tpm-server
    target="${CARGO_TARGET_DIR:-target}"
    "$target/$profile/rivet-tpm-server" --ctrl "$ctrl" --state "$state/tpm.state" > "$state/tpm.log" 2>&1 &
else
    if [ ! -d "$state/swtpm" ]; then
        # The PCR banks Rivet's engine has (swtpm's default adds SHA-384/512).
        mkdir -p "$state/swtpm"
        swtpm_setup --tpm2 --pcr-banks sha1,sha256 --tpmstate "$state/swtpm" >&2
    fi
    swtpm socket --tpm2 --ctrl type=unixio,path="$ctrl" --tpmstate dir="$state/swtpm" \
        --log file="$state/tpm.log" &
fi
tpm_pid=$!
trap 'kill $tpm_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -S "$ctrl" ] && break; sleep 0.05; done
[ -S "$ctrl" ] || { echo "ovmf-linux: the TPM did not start; see $state/tpm.log" >&2; exit 1; }

qemu-system-x86_64 -machine q35 -accel tcg -cpu max -m 512M -smp 1 \
    -nodefaults -nographic -serial mon:stdio \
    -drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
    -drive if=pflash,format=raw,unit=1,file="$state/OVMF_VARS_4M.fd" \
    -chardev socket,id=chrtpm,path="$ctrl" \
    -tpmdev emulator,id=tpm0,chardev=chrtpm -device tpm-crb,tpmdev=tpm0 \
    -kernel "$kernel" -initrd "$state/initramfs.cpio.gz" \
    -append "console=ttyS0 quiet loglevel=1 panic=-1 $append" "$@"
