#!/usr/bin/env bash
# Builds a tiny Linux guest for the "a guest that actually runs" tests: Debian's kernel and a
# busybox initramfs whose init prints a counter on the serial port forever, keeping it (and a
# growing file) in guest RAM. Output: DIR/vmlinuz and DIR/initrd.gz (default .cache/guest).
# Packages come from the machine's own apt sources (no host names here).
set -euo pipefail
out=${1:-"$(dirname "$0")/../.cache/guest"}
mkdir -p "$out"
out=$(cd "$out" && pwd)
if [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.gz" ]; then
  echo "build-test-guest: already built in $out"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
command -v cpio >/dev/null || apt-get install -y -qq cpio >/dev/null || { apt-get update -qq; apt-get install -y -qq cpio >/dev/null; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
find_kernel() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }'; }
kpkg=$(find_kernel)
if [ -z "$kpkg" ]; then apt-get update -qq; kpkg=$(find_kernel); fi
[ -n "$kpkg" ] || { echo "build-test-guest: cannot find the kernel package (apt-get update?)" >&2; exit 1; }
chmod 777 "$work"
apt-get download -qq "$kpkg" busybox-static
dpkg-deb -x linux-image-*.deb kernel
dpkg-deb -x busybox-static*.deb bb
cp kernel/boot/vmlinuz-* "$out/vmlinuz"
mkdir -p root/bin root/dev root/proc
cp bb/bin/busybox root/bin/busybox
cat > root/init <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox mount -t proc proc /proc
i=0
while true; do
  i=$((i + 1))
  echo "tick $i" >> /ram-log
  echo "tick $i" > /dev/ttyS0
  /bin/busybox usleep 200000
done
INIT
chmod +x root/init
(cd root && find . | cpio -o -H newc --quiet | gzip -1) > "$out/initrd.gz"
echo "build-test-guest: $out/vmlinuz ($kpkg), $out/initrd.gz"
