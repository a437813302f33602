#!/usr/bin/env bash
# Builds a gzip'd initramfs for a Linux guest with a TPM: the host's static
# busybox, the host's tpm2-tools (the `tpm2` multi-call binary and its
# tpm2_* names) with the shared libraries they need (found with ldd, plus
# the device TCTI that libtss2-tctildr loads at run time), and INIT as /init.
#
# usage: qemu/linux-initramfs.sh OUT.cpio.gz INIT
set -euo pipefail

out="${1:?usage: linux-initramfs.sh OUT.cpio.gz INIT}"
init="${2:?usage: linux-initramfs.sh OUT.cpio.gz INIT}"
for tool in busybox cpio gzip ldd; do
    command -v "$tool" >/dev/null || { echo "linux-initramfs: $tool missing (qemu/setup.sh installs it)" >&2; exit 1; }
done
busybox=/bin/busybox
ldd "$busybox" >/dev/null 2>&1 &&
    { echo "linux-initramfs: $busybox is not static (install busybox-static)" >&2; exit 1; }
tpm2=$(command -v tpm2) || { echo "linux-initramfs: tpm2-tools missing" >&2; exit 1; }
multiarch=/usr/lib/x86_64-linux-gnu
tcti="$multiarch/libtss2-tcti-device.so.0"
[ -e "$tcti" ] || { echo "linux-initramfs: $tcti missing (libtss2-tcti-device0)" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,dev,proc,sys,tmp,etc,usr/bin,lib64,"$multiarch"}
cp "$busybox" "$root/bin/busybox"
cp "$init" "$root/init"
chmod 755 "$root/init"
cp "$tpm2" "$root/usr/bin/tpm2"
for link in /usr/bin/tpm2_*; do
    ln -s tpm2 "$root/usr/bin/$(basename "$link")"
done

# Shared libraries, each copied to its own path (with /lib → /usr/lib merged).
copy_lib() {
    local real
    real=$(readlink -f "$1")
    local dest="$root$1"
    case "$1" in /lib/*) dest="$root/usr$1" ;; esac
    [ -e "$dest" ] && return 0
    mkdir -p "$(dirname "$dest")"
    cp "$real" "$dest"
}
libs() {
    ldd "$1" | sed -n 's/.*=> \(\/[^ ]*\).*/\1/p; s/^\s*\(\/[^ ]*\) (.*/\1/p'
}
for lib in $( (libs "$tpm2"; libs "$tcti"; echo "$tcti") | sort -u); do
    copy_lib "$lib"
done
ln -s usr/lib "$root/lib"
cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"

(cd "$root" && find . -mindepth 1 | sort | cpio -o -H newc --quiet -R 0:0) | gzip -1 > "$out.tmp"
mv "$out.tmp" "$out"
