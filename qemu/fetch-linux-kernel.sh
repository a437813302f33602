#!/usr/bin/env bash
# Fetches the kernel of Debian's linux-image-cloud-amd64 (the package the
# metapackage points at) with `apt-get download`, unpacks it with dpkg-deb
# into a cache, and prints the path of the vmlinuz. Nothing is installed.
# Cache: $RIVET_CACHE (default ~/.cache/rivet)/linux-cloud.
set -euo pipefail

cache="${RIVET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rivet}/linux-cloud"
out="$cache/vmlinuz"
if [ -s "$out" ]; then
    echo "$out"
    exit 0
fi

package=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -n1)
if [ -z "$package" ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    package=$(apt-cache depends linux-image-cloud-amd64 |
        sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -n1)
fi
[ -n "$package" ] || { echo "fetch-linux-kernel: no linux-image-cloud-amd64 in apt" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "fetch-linux-kernel: downloading $package" >&2
(cd "$work" && apt-get download -qq "$package" 2>/dev/null)
dpkg-deb -x "$work"/"$package"_*.deb "$work/root"
mkdir -p "$cache"
cp "$work"/root/boot/vmlinuz-* "$out.tmp"
echo "$package" > "$cache/package"
mv "$out.tmp" "$out"
echo "$out"
