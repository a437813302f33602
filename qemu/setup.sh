#!/usr/bin/env bash
# Installs what Rivet needs, only what is missing: the Rust target for the
# kernel, and the Debian packages for running it (`run`), for the Linux guest
# of qemu/ovmf-linux.sh (`linux`) or for the whole test suite (`test`, the
# default).
set -euo pipefail

what="${1:-test}"
packages=(qemu-system-x86)
# The Linux guest under OVMF: firmware, the initramfs's busybox and cpio,
# tpm2-tools with the device TCTI, swtpm to compare with.
linux_guest=(ovmf busybox-static cpio tpm2-tools libtss2-tcti-device0 swtpm swtpm-tools)
if [ "$what" = linux ]; then
    packages+=("${linux_guest[@]}")
fi
if [ "$what" = test ]; then
    # Peer tools (swtpm and tpm2-tools come with the Linux guest's list),
    # the reference TPM the engine is compared with, and g++ for the
    # fuzzer's libFuzzer runtime.
    packages+=(tpm2-abrmd libtss2-tcti-tabrmd0 libtpms-dev dbus g++)
    # OVMF for the IGVM builder's tests; the Linux guest's packages.
    packages+=("${linux_guest[@]}")
fi

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    echo "setup: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
        $sudo apt-get update -qq
        $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

# rust-toolchain.toml names the target and components; make sure they are here.
if ! rustup target list --installed | grep -qx x86_64-unknown-none; then
    rustup target add x86_64-unknown-none
fi
for c in rustfmt clippy; do
    rustup component list --installed | grep -q "^$c" || rustup component add "$c"
done

# The Linux guest of the OVMF tests (tests/tests/linux_guest.rs,
# qemu/ovmf-linux.sh): Debian's cloud kernel, unpacked into a cache rather
# than installed on this machine.
if [ "$what" = test ] || [ "$what" = linux ]; then
    "$(dirname "$0")/fetch-linux-kernel.sh" >/dev/null
fi

# The independent SEV-SNP launch-digest computation the IGVM tests compare with.
if [ "$what" = test ] && ! python3 -c "import sevsnpmeasure" >/dev/null 2>&1; then
    echo "setup: installing sev-snp-measure" >&2
    python3 -m pip install --quiet sev-snp-measure==0.0.13
fi

if [ "$what" = test ] && ! cargo fuzz --version >/dev/null 2>&1; then
    echo "setup: installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz@0.13.2
fi
