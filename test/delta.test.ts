/**
 * Delta images (docs/FORMAT.md, version 3): a chain round-trips byte for byte, stores only the
 * units that changed, and every refusal (missing, replaced, changed, incomplete, cyclic or too
 * deep base; saving onto a base) happens before any RAM target is touched. Hostile headers and
 * chain references, fuzzed, are refused with an image error, never a crash or a write.
 */
import { spawnSync } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import fc from 'fast-check';
import { HASH_BYTES, HEADER_SIZE, INDEX_ENTRY, MAX_DEPTH } from '../src/image/format';
import { readHashTables, readImageMetadata } from '../src/image/io/read-image';
import { native } from '../src/native';
import { cloneVm, restoreVm } from '../src/vm/manager';
import { IOHELPER } from './support/cli';

const M = 1024 * 1024;
const UNIT = 64 * 1024;
const RAM_SIZE = 16 * M;
let dir: string;
const deviceState = crypto.randomBytes(10000);

function iohelper(args: string[], input?: Buffer) {
  const r = spawnSync(process.execPath, [IOHELPER, ...args], { input, cwd: dir, maxBuffer: 64 * M });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr.toString() };
}

function save(image: string, ram: string, extra: string[] = []): void {
  const r = iohelper(['save', '--no-stream-check', '--image', image, '--ram', `pc.ram=${ram}`, ...extra], deviceState);
  expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
}

/** Restores `image` into a fresh file; returns the file's bytes and the device state. */
function restoreBytes(image: string): { ram: Buffer; state: Buffer } {
  const out = path.join(dir, `restored-${crypto.randomBytes(4).toString('hex')}`);
  const r = iohelper(['restore', '--image', image, '--ram', `pc.ram=${out}`]);
  expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
  const ram = fs.readFileSync(out);
  fs.rmSync(out);
  return { ram, state: r.stdout };
}

/** Overwrites `count` runs of `len` (a page multiple) random bytes at random page-aligned places of the RAM file: a page never straddles two units. */
function scribble(ram: string, count: number, len: number): void {
  const fd = fs.openSync(ram, 'r+');
  for (let i = 0; i < count; i++) fs.writeSync(fd, crypto.randomBytes(len), 0, len, crypto.randomInt(0, (RAM_SIZE - len) / 4096) * 4096);
  fs.closeSync(fd);
}

/** A RAM file: half random data, the rest zeros and holes. */
function makeRam(file: string): void {
  const fd = fs.openSync(file, 'w');
  fs.ftruncateSync(fd, RAM_SIZE);
  for (let at = 0; at < RAM_SIZE / 2; at += M) fs.writeSync(fd, crypto.randomBytes(M), 0, M, at * 2 % RAM_SIZE);
  fs.closeSync(fd);
}

/** Rewrites header bytes [at, at + bytes.length) and the header CRC, as a hostile writer would. */
function patchHeader(image: string, at: number, bytes: Buffer): void {
  const fd = fs.openSync(image, 'r+');
  const h = Buffer.alloc(HEADER_SIZE);
  fs.readSync(fd, h, 0, HEADER_SIZE, 0);
  bytes.copy(h, at);
  h.writeUInt32LE(native.crc32c(h.subarray(0, HEADER_SIZE - 4)), HEADER_SIZE - 4);
  fs.writeSync(fd, h, 0, HEADER_SIZE, 0);
  fs.closeSync(fd);
}

/** A refused restore: exit 1, one line naming what differs, and the target left as it was. */
function expectRefused(image: string, pattern: RegExp): void {
  const target = path.join(dir, 'target');
  fs.writeFileSync(target, Buffer.alloc(RAM_SIZE, 0x5a));
  const r = iohelper(['restore', '--image', image, '--ram', `pc.ram=${target}`]);
  expect(r.status).toBe(1);
  expect(r.stderr.trim().split('\n')).toHaveLength(1);
  expect(r.stderr).toMatch(pattern);
  expect(fs.readFileSync(target).equals(Buffer.alloc(RAM_SIZE, 0x5a))).toBe(true);
  fs.rmSync(target);
}

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-delta-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('chains round-trip and store only what changed', () => {
  let ram: string;
  beforeAll(() => {
    ram = path.join(dir, 'ram');
    makeRam(ram);
    save('full.img', ram);
  });

  test('every image records the AES-128-GMAC tag of each unit of its RAM under its own key (holes hashed as zeros)', () => {
    const fd = fs.openSync(path.join(dir, 'full.img'), 'r');
    try {
      const meta = readImageMetadata(fd, 'full.img');
      expect(meta.header.hashes?.unit).toBe(UNIT);
      expect(meta.header.hashes?.depth).toBe(0);
      const key = meta.header.hashes!.key;
      const [table] = readHashTables(fd, 'full.img', meta.header, meta.entries);
      const bytes = fs.readFileSync(ram);
      for (let u = 0; u < RAM_SIZE / UNIT; u++) {
        const gmac = crypto.createCipheriv('aes-128-gcm', key, Buffer.alloc(12));
        gmac.setAAD(bytes.subarray(u * UNIT, (u + 1) * UNIT));
        gmac.final();
        expect(table.subarray(u * HASH_BYTES, (u + 1) * HASH_BYTES).toString('hex')).toBe(gmac.getAuthTag().toString('hex'));
      }
    } finally {
      fs.closeSync(fd);
    }
  });

  test('a delta holds only the changed units; depth 1, 2 (compressed) and 3 restore byte for byte', () => {
    const states: Buffer[] = [];
    let base = 'full.img';
    for (const [i, extra] of [[], ['--compress'], []].entries()) {
      scribble(ram, 5, 4096); // 5 scattered pages: at most 5 units change
      const image = `d${i + 1}.img`;
      save(image, ram, ['--base', base, ...extra]);
      states.push(fs.readFileSync(ram));
      const meta = readImageMetadata(fs.openSync(path.join(dir, image), 'r'), image);
      expect(meta.header.version).toBe(3);
      expect(meta.header.hashes?.depth).toBe(i + 1);
      expect(meta.header.base?.path).toBe(base); // relative to the delta's directory
      expect(meta.entries[0].dataBytes).toBeLessThanOrEqual(5 * UNIT);
      expect(meta.entries[0].dataBytes).toBeGreaterThan(0);
      const back = restoreBytes(image);
      expect(back.ram.equals(states[i])).toBe(true);
      expect(back.state.equals(deviceState)).toBe(true);
      base = image;
    }
    const shown = iohelper(['inspect', 'd3.img', '--json']);
    expect(shown.status).toBe(0);
    const info = JSON.parse(shown.stdout.toString());
    expect(info.chain.map((l: { path: string; depth: number }) => [path.basename(l.path), l.depth])).toEqual([['d3.img', 3], ['d2.img', 2], ['d1.img', 1], ['full.img', 0]]);
    expect(info.chain.reduce((n: number, l: { units: number }) => n + l.units, 0)).toBe(RAM_SIZE / UNIT);
  });

  test('convert --flatten writes one standalone image with the same RAM; without --flatten a delta is refused', () => {
    const refused = iohelper(['convert', 'd3.img', 'nope.img']);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/d3\.img is a delta .*convert --flatten d3\.img nope\.img/);
    expect(fs.existsSync(path.join(dir, 'nope.img'))).toBe(false);
    const r = iohelper(['convert', '--flatten', 'd3.img', 'flat.img']);
    expect({ status: r.status }).toEqual({ status: 0 });
    const fd = fs.openSync(path.join(dir, 'flat.img'), 'r');
    expect(readImageMetadata(fd, 'flat.img').header.version).toBe(1);
    fs.closeSync(fd);
    expect(restoreBytes('flat.img').ram.equals(restoreBytes('d3.img').ram)).toBe(true);
  });

  test('saving onto the base, or any image of its chain, is refused and leaves it as it was', () => {
    for (const target of ['d3.img', 'd1.img', 'full.img']) {
      const before = fs.readFileSync(path.join(dir, target));
      const r = iohelper(['save', '--no-stream-check', '--image', target, '--base', 'd3.img', '--ram', `pc.ram=${ram}`], deviceState);
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/a delta never replaces an image of its own chain/);
      expect(fs.readFileSync(path.join(dir, target)).equals(before)).toBe(true);
    }
    expect(restoreBytes('d3.img').ram.length).toBe(RAM_SIZE);
  });

  test('a missing, replaced, changed or incomplete base is refused before any write, naming it', () => {
    const copy = (from: string, to: string) => fs.copyFileSync(path.join(dir, from), path.join(dir, to));
    // Missing.
    copy('d1.img', 'm1.img');
    fs.renameSync(path.join(dir, 'full.img'), path.join(dir, 'full.moved'));
    try {
      expectRefused('m1.img', /base \S*full\.img of \S*m1\.img cannot be opened: .*ENOENT.*\(EIMG_BASE\)\n$/);
    } finally {
      fs.renameSync(path.join(dir, 'full.moved'), path.join(dir, 'full.img'));
    }
    // Replaced by another valid image: a new id and header.
    save('other.img', ram);
    copy('full.img', 'full.keep');
    copy('other.img', 'full.img');
    try {
      expectRefused('d2.img', /base \S*full\.img of \S*d1\.img is not the image the delta was saved against .*its id is [0-9a-f]{32}, the delta's base was [0-9a-f]{32}/);
      const shown = iohelper(['inspect', 'd2.img']);
      expect(shown.status).toBe(2);
      expect(shown.stdout.toString()).toMatch(/chain REFUSED/);
    } finally {
      copy('full.keep', 'full.img');
    }
    // Changed in one data byte: its header still matches, so the chunk CRC catches it.
    copy('d1.img', 'd1.keep');
    const fd = fs.openSync(path.join(dir, 'd1.img'), 'r+');
    const meta = readImageMetadata(fd, 'd1.img');
    const index = Buffer.alloc(meta.entries[0].checksumCount * INDEX_ENTRY);
    fs.readSync(fd, index, 0, index.length, meta.entries[0].checksumOffset);
    let stored = -1;
    for (let u = 0; u < meta.entries[0].checksumCount && stored < 0; u++) if (index.readUInt32LE(u * INDEX_ENTRY + 16) === 1) stored = Number(index.readBigUInt64LE(u * INDEX_ENTRY));
    const byte = Buffer.alloc(1);
    fs.readSync(fd, byte, 0, 1, stored + 100);
    byte[0] ^= 0x42;
    fs.writeSync(fd, byte, 0, 1, stored + 100);
    fs.closeSync(fd);
    try {
      expectRefused('d2.img', /corrupted: block 'pc\.ram' chunk \d+ .*stored in its base \S*d1\.img has CRC-32C/);
    } finally {
      copy('d1.keep', 'd1.img');
    }
    // Incomplete: the base's state is 0 (a save that never finished).
    patchHeader(path.join(dir, 'd1.img'), 20, Buffer.from([0, 0, 0, 0]));
    try {
      expectRefused('d2.img', /base \S*d1\.img of \S*d2\.img is not a valid image: the image is incomplete/);
    } finally {
      copy('d1.keep', 'd1.img');
    }
    expect(restoreBytes('d2.img').ram.length).toBe(RAM_SIZE);
  });

  test('clones and lazy restores of a delta are refused before any QEMU starts, naming convert --flatten', async () => {
    const image = path.join(dir, 'd1.img');
    const qemuArgs = ['-object', `memory-backend-file,id=pc.ram,size=${RAM_SIZE},mem-path=${path.join(dir, 'never')},share=on`];
    for (const start of [() => cloneVm({ image, qemuArgs, count: 2 }), () => restoreVm({ image, lazy: true, qemuArgs })]) {
      const e = (await start().then(() => undefined, (x: Error & { code?: string }) => x))!;
      expect(e.code).toBe('EIMG_COMPRESSED');
      expect(e.message).toMatch(/is a delta .*iohelper convert --flatten \S*d1\.img OUT/);
    }
    expect(fs.existsSync(path.join(dir, 'never'))).toBe(false);
  });

  test('a delta whose base path names itself (a cycle) is refused', () => {
    fs.copyFileSync(path.join(dir, 'd1.img'), path.join(dir, 'self.img'));
    const p = Buffer.from('self.img');
    const len = Buffer.alloc(4);
    len.writeUInt32LE(p.length);
    patchHeader(path.join(dir, 'self.img'), 204, Buffer.concat([len, p, Buffer.alloc(1024 - p.length)]));
    expectRefused('self.img', /base \S*self\.img of \S*self\.img is a file already in the chain: the chain is cyclic/);
  });

  test(`a chain deeper than ${MAX_DEPTH} is refused: saving one more names convert --flatten`, () => {
    let base = 'full.img';
    for (let i = 1; i <= MAX_DEPTH; i++) {
      scribble(ram, 1, 4096);
      save(`deep${i}.img`, ram, ['--base', base]);
      base = `deep${i}.img`;
    }
    expect(restoreBytes(base).ram.equals(fs.readFileSync(ram))).toBe(true);
    const r = iohelper(['save', '--no-stream-check', '--image', 'deeper.img', '--base', base, '--ram', `pc.ram=${ram}`], deviceState);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`already ${MAX_DEPTH} deltas deep; .*convert --flatten`));
    expect(fs.existsSync(path.join(dir, 'deeper.img'))).toBe(false);
    // A header claiming depth 17 is refused by the reader itself.
    fs.copyFileSync(path.join(dir, base), path.join(dir, 'd17.img'));
    const depth = Buffer.alloc(4);
    depth.writeUInt32LE(MAX_DEPTH + 1);
    patchHeader(path.join(dir, 'd17.img'), 156, depth);
    expectRefused('d17.img', /depth 17 is not in 1\.\.16/);
  });

  test('fuzzed delta headers and chain references are refused with an image error, the target untouched', () => {
    const good = fs.readFileSync(path.join(dir, 'd1.img'));
    const target = path.join(dir, 'fuzz-target');
    fc.assert(
      fc.property(fc.integer({ min: 132, max: 1300 }), fc.uint8Array({ minLength: 1, maxLength: 8 }), (at, bytes) => {
        const bad = Buffer.from(good);
        Buffer.from(bytes).copy(bad, at);
        bad.writeUInt32LE(native.crc32c(bad.subarray(0, HEADER_SIZE - 4)), HEADER_SIZE - 4);
        const same = bad.subarray(0, HEADER_SIZE).equals(good.subarray(0, HEADER_SIZE));
        fs.writeFileSync(path.join(dir, 'fuzz.img'), bad);
        fs.writeFileSync(target, Buffer.alloc(RAM_SIZE, 0x5a));
        const r = iohelper(['restore', '--image', 'fuzz.img', '--ram', `pc.ram=${target}`]);
        if (same) return r.status === 0;
        // A change to the id of this image itself is harmless (nothing refers to it); anything else is refused.
        if (r.status === 0) return at + bytes.length <= 148 && at >= 132;
        return r.status === 1 && /\(EIMG_[A-Z]+\)$/.test(r.stderr.trim()) && r.stderr.trim().split('\n').length === 1 && fs.readFileSync(target).equals(Buffer.alloc(RAM_SIZE, 0x5a));
      }),
      { numRuns: 40 },
    );
  });
});
