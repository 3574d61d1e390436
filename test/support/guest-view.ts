/**
 * What a restored guest sees, not what a file says: QEMU's own mappings (no RAM file that was
 * replaced under it: "(deleted)") and guest-physical memory read through QEMU (pmemsave for a
 * whole range, HMP `xp` at sampled addresses) compared with the RAM that was saved.
 */
import * as fs from 'fs';
import * as path from 'path';
import { QemuInstance } from '../../src/vm/qemu-launch';

const M = 1024 * 1024;

/** QEMU's mappings of files that no longer have a name: RAM it would run on that nobody restored. */
export function deletedMappings(vm: QemuInstance): string[] {
  return fs
    .readFileSync(`/proc/${vm.proc.pid}/maps`, 'utf8')
    .split('\n')
    .filter((l) => l.endsWith(' (deleted)'));
}

/** First differing offset of two equal-length ranges of two files, or -1. */
function firstDifference(a: string, aOffset: number, b: string, bOffset: number, length: number): number {
  const fa = fs.openSync(a, 'r');
  const fb = fs.openSync(b, 'r');
  const ba = Buffer.alloc(4 * M);
  const bb = Buffer.alloc(4 * M);
  try {
    for (let at = 0; at < length; at += ba.length) {
      const n = Math.min(ba.length, length - at);
      const ra = fs.readSync(fa, ba, 0, n, aOffset + at);
      const rb = fs.readSync(fb, bb, 0, n, bOffset + at);
      if (ra !== n || rb !== n) return at + Math.min(ra, rb);
      const c = ba.subarray(0, n).compare(bb.subarray(0, n));
      if (c !== 0) {
        for (let i = 0; i < n; i++) if (ba[i] !== bb[i]) return at + i;
      }
    }
    return -1;
  } finally {
    fs.closeSync(fa);
    fs.closeSync(fb);
  }
}

/** Two 64-bit words of guest-physical memory at `addr`, read with HMP `xp`, as hex strings. */
export async function hmpWords(vm: QemuInstance, addr: number): Promise<string[]> {
  const out: string = await vm.qmp.execute('human-monitor-command', { 'command-line': `xp /2xg 0x${addr.toString(16)}` });
  const m = /^[0-9a-f]+:\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)/m.exec(out);
  if (!m) throw new Error(`unexpected xp output: ${JSON.stringify(out)}`);
  return [m[1], m[2]].map((w) => w.padStart(16, '0'));
}

function fileWords(file: string, offset: number): string[] {
  const fd = fs.openSync(file, 'r');
  const b = Buffer.alloc(16);
  try {
    fs.readSync(fd, b, 0, 16, offset);
  } finally {
    fs.closeSync(fd);
  }
  return [b.readBigUInt64LE(0), b.readBigUInt64LE(8)].map((w) => w.toString(16).padStart(16, '0'));
}

/** One RAM block as saved: the file, and its size (blocks lie one after another from guest-physical 0). */
export interface SavedBlock {
  path: string;
  size: number;
}

/**
 * Asserts the guest of `vm` (a disk-less q35 machine whose RAM blocks, < 2 GiB in all, lie one
 * after another from guest-physical 0, as machineArgs makes them) sees `saved`, the RAM files
 * that were saved: no deleted mapping, HMP `xp` at sampled addresses of every block, and
 * pmemsave of each block byte for byte (the first block from 1 MiB: below it the firmware's ROM
 * shadows overlay RAM). `scratch` is a directory for the pmemsave output.
 */
export async function expectGuestSees(vm: QemuInstance, saved: SavedBlock[], scratch: string): Promise<void> {
  expect(deletedMappings(vm)).toEqual([]);
  let base = 0;
  for (const b of saved) {
    const from = base === 0 ? M : 0;
    for (const at of [from + M, from + 4096 * 7 + 8, b.size / 2 + 512, b.size - 2 * M + 40, b.size - 16]) {
      expect({ addr: base + at, words: await hmpWords(vm, base + at) }).toEqual({ addr: base + at, words: fileWords(b.path, at) });
    }
    const out = path.join(scratch, `guest-${vm.proc.pid}.mem`);
    await vm.qmp.execute('pmemsave', { val: base + from, size: b.size - from, filename: out });
    try {
      expect({ block: b.path, firstDifference: firstDifference(out, 0, b.path, from, b.size - from) }).toEqual({ block: b.path, firstDifference: -1 });
    } finally {
      fs.rmSync(out, { force: true });
    }
    base += b.size;
  }
}
