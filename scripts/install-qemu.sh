#!/usr/bin/env bash
# Installs QEMU 10 (and, with --libvirt, libvirtd with its QEMU driver, virsh, libvirt_iohelper
# and the compressors of libvirt's save image formats; with --bench, fio) from Debian
# bookworm-backports. The apt source is derived from the machine's existing debian.sources entry
# (same URI, suite bookworm-backports), so no mirror host name lives in this repository.
set -euo pipefail

want_libvirt=0
want_bench=0
list=0
for a in "$@"; do
  case "$a" in
    --libvirt) want_libvirt=1 ;;
    --bench) want_bench=1; want_libvirt=1 ;;
    --list) list=1 ;;
    -h|--help) echo "usage: $0 [--libvirt] [--bench] [--list: print the packages and install nothing]"; exit 0 ;;
    *) echo "$0: unknown option $a" >&2; exit 1 ;;
  esac
done

# What is installed from bookworm-backports, and what from the release itself.
pkgs=(qemu-system-x86 qemu-utils)
[ $want_libvirt = 1 ] && pkgs+=(libvirt-daemon libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients)
[ $want_bench = 1 ] && pkgs+=(fio)
release_pkgs=()
[ $want_libvirt = 1 ] && release_pkgs+=(lzop zstd xz-utils bzip2 gzip)
if [ $list = 1 ]; then
  echo "${pkgs[@]}" "${release_pkgs[@]}"
  exit 0
fi

qemu_major() {
  command -v qemu-system-x86_64 >/dev/null 2>&1 || { echo 0; return; }
  qemu-system-x86_64 --version | sed -n 's/^QEMU emulator version \([0-9]*\).*/\1/p'
}

have_all() {
  [ "$(qemu_major)" -ge 10 ] || return 1
  [ $want_libvirt = 0 ] || { [ -x /usr/lib/libvirt/libvirt_iohelper ] && [ -x /usr/sbin/libvirtd ] && command -v virsh lzop zstd xz bzip2 >/dev/null 2>&1; } || return 1
  [ $want_bench = 0 ] || command -v fio >/dev/null 2>&1 || return 1
  return 0
}

if have_all; then
  echo "install-qemu: already installed: $(qemu-system-x86_64 --version | head -1)"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "install-qemu: must run as root (apt-get)" >&2
  exit 1
fi

src=/etc/apt/sources.list.d/debian.sources
bp=/etc/apt/sources.list.d/iohelper-backports.sources
if [ ! -f "$bp" ]; then
  [ -f "$src" ] || { echo "install-qemu: $src not found; add bookworm-backports by hand" >&2; exit 1; }
  uri=$(awk '/^URIs:/ { print $2; exit }' "$src")
  keyring=$(awk '/^Signed-By:/ { print $2; exit }' "$src")
  [ -n "$uri" ] || { echo "install-qemu: no URIs: line in $src" >&2; exit 1; }
  {
    echo "Types: deb"
    echo "URIs: $uri"
    echo "Suites: bookworm-backports"
    echo "Components: main"
    [ -n "$keyring" ] && echo "Signed-By: $keyring"
  } > "$bp"
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends -t bookworm-backports "${pkgs[@]}" >/dev/null
[ ${#release_pkgs[@]} -gt 0 ] && apt-get install -y -qq --no-install-recommends "${release_pkgs[@]}" >/dev/null
echo "install-qemu: $(qemu-system-x86_64 --version | head -1)"
[ $want_libvirt = 1 ] && ls -l /usr/lib/libvirt/libvirt_iohelper
exit 0
