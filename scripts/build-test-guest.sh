#!/usr/bin/env bash
# Builds a tiny Linux guest for the "a guest that actually runs" tests: Debian's kernel and a
# busybox initramfs whose init prints a counter on the serial port forever, keeping it (and a
# growing file) in guest RAM. With `iohelper.workload` on the kernel command line, init first
# runs a memory workload (bench/lib/real-guest.ts builds the `real` benchmark profile from it)
# and prints "iohelper-workload-done". With `iohelper.ttw=MB` (the time-to-work benchmark,
# bench/ttw.ts) it writes a working set of MB 1 MiB files, each followed in memory by 3 MiB of
# cold data, prints "iohelper-ttw-ready", waits for a line on the serial port (sent after a
# restore), reads the working set and prints "iohelper-ttw-done". With `iohelper.workload
# iohelper.rewrite` (the incremental-save benchmarks, bench/unit-size.ts and bench/incremental.ts),
# after the workload init writes a held tmpfs file of 40 % of RAM (/work/rewrite), prints
# "iohelper-rewrite-ready", then forever reads a line "PCT SEED" on the serial port, rewrites PCT %
# of the guest's RAM inside that file in scattered runs of 4 KiB to 1 MiB with new pseudo-random
# bytes (scripts/guest-rewrite.c, compiled static here) and prints "iohelper-rewrite-done
# bytes=N runs=M". The other modes do what they did before. Output: DIR/vmlinuz and
# DIR/initrd.gz (default .cache/guest); DIR/version names the init's version, so an older build
# is replaced (raise it when the init or guest-rewrite.c changes).
# Packages come from the machine's own apt sources (no host names here).
set -euo pipefail
out=${1:-"$(dirname "$0")/../.cache/guest"}
mkdir -p "$out"
out=$(cd "$out" && pwd)
version=6
rewrite_src=$(cd "$(dirname "$0")" && pwd)/guest-rewrite.c
if [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.gz" ] && [ "$(cat "$out/version" 2>/dev/null)" = "$version" ]; then
  echo "build-test-guest: already built in $out"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
command -v cpio >/dev/null || apt-get install -y -qq cpio >/dev/null || { apt-get update -qq; apt-get install -y -qq cpio >/dev/null; }
# gcc and libc6-dev (libc.a) build the rewriter static: the initramfs has no libc.
if ! command -v gcc >/dev/null || ! dpkg -s libc6-dev >/dev/null 2>&1; then
  apt-get install -y -qq gcc libc6-dev >/dev/null || { apt-get update -qq; apt-get install -y -qq gcc libc6-dev >/dev/null; }
fi
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
gcc -static -O2 -s -o root/bin/rewrite "$rewrite_src"
cat > root/init <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox mount -t proc proc /proc
if /bin/busybox grep -q iohelper.workload /proc/cmdline; then
  # What a guest that has been working leaves in its RAM, in shares of its memory: page cache
  # of incompressible files, compressible text, a file of zeros, data written and then freed
  # (the kernel does not clear freed pages), and anonymous memory still held when it is
  # paused. The rest was never touched.
  export PATH=/bin
  /bin/busybox --install -s /bin
  mkdir -p /work
  mount -t tmpfs -o size=90% tmpfs /work
  total_mb=$(( $(awk '/MemTotal/ { print $2 }' /proc/meminfo) / 1024 ))
  share() { echo $(( total_mb * $1 / 100 )); }
  dd if=/dev/urandom of=/work/freed bs=1M count="$(share 12)" 2>/dev/null
  rm /work/freed
  dd if=/dev/urandom of=/work/random bs=1M count="$(share 25)" 2>/dev/null
  text_kb=$(( $(share 10) * 1024 ))
  while [ "$(du -k /work/text 2>/dev/null | cut -f1)0" -lt "${text_kb}0" ]; do cat /proc/kallsyms /proc/slabinfo /proc/meminfo >> /work/text; done
  dd if=/dev/zero of=/work/zero bs=1M count="$(share 6)" 2>/dev/null
  # dd holds its one block while blocked writing into a pipe nobody reads.
  dd if=/dev/urandom bs="$(share 8)M" count=1 2>/dev/null | sleep 2147483647 &
  sleep 2
  sync
  echo "iohelper-workload-done" > /dev/ttyS0
fi
if /bin/busybox grep -q iohelper.rewrite /proc/cmdline; then
  export PATH=/bin
  /bin/busybox mkdir -p /work
  # The serial port stays open: a line sent between two opens would be lost.
  exec 3<>/dev/ttyS0
  rewrite create /work/rewrite 40 1 >&3
  while read -r pct seed <&3; do
    rewrite /work/rewrite "$pct" "$seed" >&3 2>&3 || echo "iohelper-rewrite-failed" >&3
  done
fi
if /bin/busybox grep -q iohelper.ttw= /proc/cmdline; then
  export PATH=/bin
  /bin/busybox --install -s /bin
  ws_mb=$(sed -n 's/.*iohelper\.ttw=\([0-9]*\).*/\1/p' /proc/cmdline)
  mkdir -p /ttw
  mount -t tmpfs -o size=95% tmpfs /ttw
  i=0
  while [ "$i" -lt "$ws_mb" ]; do
    dd if=/dev/urandom of=/ttw/ws-$i bs=1M count=1 2>/dev/null
    dd if=/dev/urandom of=/ttw/cold-$i bs=1M count=3 2>/dev/null
    i=$((i + 1))
  done
  sync
  echo "iohelper-ttw-ready" > /dev/ttyS0
  read -r go < /dev/ttyS0
  # md5sum reads every byte (cat to /dev/null may splice without touching the pages).
  md5sum /ttw/ws-* > /dev/null
  echo "iohelper-ttw-done" > /dev/ttyS0
fi
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
echo "$version" > "$out/version"
echo "build-test-guest: $out/vmlinuz ($kpkg), $out/initrd.gz"
