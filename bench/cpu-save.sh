#!/bin/bash
# CPU (user + sys) of `iohelper save` alone, by RAM read path: full and delta (--base, after a
# 5 % rewrite), image on tmpfs and on the local disk (--direct), medians taken by hand from
# the printed rows. Also the read paths alone (bench/ref/read-cost.c).
#   bench/cpu-save.sh [SIZE_MIB=2048] [RUNS=3] [TREES="."]   (TREES: checkouts to compare, e.g. ". /work/main")
# Guest RAM: SIZE_MIB on /dev/shm, 60 % of its 2 MiB regions data (10 % of their pages written
# zeros), the rest holes: about the share of data the `real` profile has (1.2 of 2 GiB).
set -euo pipefail
SIZE=${1:-2048}; RUNS=${2:-3}; TREES=${3:-.}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
D=$(mktemp -d /dev/shm/iohelper-cpu-XXXXXX); DISK="$ROOT/bench/data"; mkdir -p "$DISK"
trap 'rm -rf "$D" "$DISK"/cpu-*.img' EXIT
node -e '
const fs = require("fs"), crypto = require("crypto");
const [file, mib] = process.argv.slice(1), size = Number(mib) * 2 ** 20, R = 2 << 20;
const pool = crypto.randomBytes(16 << 20), buf = Buffer.alloc(R), fd = fs.openSync(file, "w", 0o600);
fs.ftruncateSync(fd, size);
let seed = 12345; const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
for (let r = 0; r < size / R; r++) {
  if (rnd() >= 0.6) continue;
  const off = Math.floor(rnd() * 14) << 20; pool.copy(buf, 0, off, off + R);
  for (let p = 0; p < R; p += 4096) if (rnd() < 0.1) buf.fill(0, p, p + 4096); else buf.writeUInt32LE(r * 512 + p / 4096, p);
  fs.writeSync(fd, buf, 0, R, r * R);
}' "$D/ram" "$SIZE"
(cd "$ROOT" && node bin/iohelper save --no-stream-check --image "$D/base.img" --ram pc.ram="$D/ram" </dev/null)
node -e '
const fs = require("fs"), crypto = require("crypto"), [file] = process.argv.slice(1);
const fd = fs.openSync(file, "r+"), size = fs.fstatSync(fd).size, U = 65536, probe = Buffer.alloc(8);
let left = Math.floor(size * 0.05 / U), seed = 777; const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
while (left > 0) { const at = Math.floor(rnd() * (size / U)) * U; fs.readSync(fd, probe, 0, 8, at); if (probe.readBigUInt64LE(0) === 0n) continue; fs.writeSync(fd, crypto.randomBytes(U), 0, U, at); left--; }' "$D/ram"
cc -O2 -Wall -o "$D/read-cost" "$ROOT/bench/ref/read-cost.c"
echo "# tree target kind path user sys wall image-MiB"
for i in $(seq 1 "$RUNS"); do
  for mode in fault mmap pread; do echo "# read alone: $("$D/read-cost" $mode "$D/ram")"; done
  for tree in $TREES; do
    for target in tmpfs disk; do
      for kind in full delta; do
        for mode in pread mmap auto; do
          if [ $target = tmpfs ]; then out=$D/cpu-$kind.img; direct=; else out=$DISK/cpu-$kind.img; direct=--direct; fi
          base=; [ $kind = delta ] && base="--base $D/base.img"
          # a tree without --ram-read (before the reader) runs once, as "auto"
          if ! grep -q ram-read "$tree/src/cli/image-commands.ts"; then [ $mode = auto ] || continue; rr=; else rr=--ram-read=$mode; fi
          rm -f "$out"
          (cd "$tree" && /usr/bin/time -o "$D/t" -f '%U %S %e' node bin/iohelper save $direct --no-stream-check --image "$out" --ram pc.ram="$D/ram" $rr $base --progress </dev/null >/dev/null 2>"$D/err") || { cat "$D/err"; exit 1; }
          ran=$(tail -1 "$D/err" | sed -n 's/.*"ramRead":"\([a-z+]*\)".*/\1/p')
          echo "$tree $target $kind $mode${ran:+($ran)} $(cat "$D/t") $(du -m "$out" | cut -f1)"
        done
      done
    done
  done
done
