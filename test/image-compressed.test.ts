/**
 * Compressed images (format version 2) end to end through the `iohelper` command: round trips
 * of RAM with every kind of chunk (zstd, raw, zero, holes inside a chunk), inspect's ratio,
 * convert in both directions, hostile chunks refused with the RAM targets untouched, clones
 * and --lazy refused, and the build without libzstd.
 */
import { execFileSync, spawnSync } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { INDEX_ENTRY } from '../src/image/format';
import { save } from '../src/image/save';
import { convert } from '../src/image/convert';
import { errnoNames, native } from '../src/native';
import { createRamFile, fillPattern, filesEqual, sha256File } from '../bench/lib/ram-file';
import { lastLine, runHelper } from './support/cli';
import { machineArgs } from './support/qemu';
import { describeAsRoot, mountFs } from './support/mounts';

const K = 1024;
const M = 1024 * K;
const DEVICE_STATE = crypto.randomBytes(2 * M + 77);
let dir: string;
let shm: string;
const SRC = { a: '', b: '' };
const ROOT = path.join(__dirname, '..');

/** Text pages: compressible, no two lines alike. */
function text(bytes: number, seed: number): Buffer {
  const lines: string[] = [];
  let len = 0;
  for (let n = 0; len < bytes; n++) {
    const line = `${seed}:${n} systemd[1]: Started session ${n * 7} of user ${n % 13}; cgroup /user.slice/${n % 5}\n`;
    lines.push(line);
    len += line.length;
  }
  return Buffer.from(lines.join('')).subarray(0, bytes);
}

/**
 * Block a (40 MiB, more than the inline limit, so the worker pool runs): random pages (raw
 * chunks), text (zstd chunks), a chunk of written zeros and one never touched (zero chunks),
 * and a chunk that is part hole, part text. Block b (8 MiB): random with scattered zeros.
 */
function makeSources(): void {
  SRC.a = path.join(shm, 'src-a');
  SRC.b = path.join(shm, 'src-b');
  createRamFile(SRC.a, 40 * M);
  const fd = fs.openSync(SRC.a, 'r+');
  fs.writeSync(fd, crypto.randomBytes(8 * M), 0, 8 * M, 0); // chunk 0: raw
  fs.writeSync(fd, text(8 * M, 1), 0, 8 * M, 8 * M); // chunk 1: zstd
  fs.writeSync(fd, Buffer.alloc(8 * M), 0, 8 * M, 16 * M); // chunk 2: written zeros
  // chunk 3 (24..32 MiB): never touched, a hole
  fs.writeSync(fd, text(1 * M, 2), 0, 1 * M, 35 * M); // chunk 4: hole, text, hole
  fs.closeSync(fd);
  createRamFile(SRC.b, 8 * M);
  fillPattern(SRC.b, 7, 0.25);
}

const ramArgs = (a: string, b: string) => ['--ram', `a=${a}`, '--ram', `b=${b}`];

async function saveCompressed(image: string, extra: string[] = []): Promise<void> {
  const r = await runHelper(['save', '--no-stream-check', '--image', image, ...extra, ...ramArgs(SRC.a, SRC.b)], [DEVICE_STATE, 'ignore']);
  expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
}

async function restoreInto(image: string, a: string, b: string, extra: string[] = []) {
  return runHelper(['restore', '--image', image, ...extra, ...ramArgs(a, b)], ['ignore', 'pipe']);
}

interface Index {
  dataOffset: number;
  blocks: Array<{ at: number; count: number }>;
}

/** Where the chunk indexes are (from inspect --json and the spec's header layout). */
function indexOf(image: string): Index {
  const head = Buffer.alloc(4096 + 2 * 320);
  const fd = fs.openSync(image, 'r');
  fs.readSync(fd, head, 0, head.length, 0);
  fs.closeSync(fd);
  const blocks = [0, 1].map((i) => ({ at: Number(head.readBigUInt64LE(4096 + i * 320 + 280)), count: Number(head.readBigUInt64LE(4096 + i * 320 + 288)) }));
  return { dataOffset: Number(head.readBigUInt64LE(120)), blocks };
}

function readEntry(image: string, block: { at: number }, chunk: number) {
  const b = Buffer.alloc(INDEX_ENTRY);
  const fd = fs.openSync(image, 'r');
  fs.readSync(fd, b, 0, INDEX_ENTRY, block.at + chunk * INDEX_ENTRY);
  fs.closeSync(fd);
  return { offset: Number(b.readBigUInt64LE(0)), stored: b.readUInt32LE(8), crc: b.readUInt32LE(12), kind: b.readUInt32LE(16) };
}

function writeAt(image: string, at: number, bytes: Buffer): void {
  const fd = fs.openSync(image, 'r+');
  fs.writeSync(fd, bytes, 0, bytes.length, at);
  fs.closeSync(fd);
}

function writeEntry(image: string, block: { at: number }, chunk: number, e: { offset: number; stored: number; crc: number; kind: number }): void {
  const b = Buffer.alloc(INDEX_ENTRY);
  b.writeBigUInt64LE(BigInt(e.offset), 0);
  b.writeUInt32LE(e.stored, 8);
  b.writeUInt32LE(e.crc >>> 0, 12);
  b.writeUInt32LE(e.kind, 16);
  writeAt(image, block.at + chunk * INDEX_ENTRY, b);
}

const temporaries = () => fs.readdirSync(shm).filter((f) => f.includes('.iohelper-'));

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-compressed-'));
  shm = fs.mkdtempSync('/dev/shm/iohelper-compressed-');
  makeSources();
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.rmSync(shm, { recursive: true, force: true });
});

describe('compressed round trips', () => {
  test.each([
    ['--compress (zstd 1), 2 jobs', ['--compress', '--jobs', '2']],
    ['--compress=zstd:-5, O_DIRECT, 4 jobs', ['--compress=zstd:-5', '--direct', '--jobs', '4']],
    ['--compress=zstd:19 with 1 MiB chunks, 1 job', ['--compress=zstd:19', '--chunk', '1M', '--jobs', '1']],
    ['--compress=zstd:0 (every chunk raw)', ['--compress=zstd:0']],
  ])('%s: RAM and device state byte for byte', async (_n, extra) => {
    const image = path.join(dir, 'rt.img');
    await saveCompressed(image, extra);
    const [a, b] = [path.join(shm, 'rt-a'), path.join(shm, 'rt-b')];
    const r = await restoreInto(image, a, b, extra.includes('--direct') ? ['--direct'] : []);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
    expect(r.stdout.equals(DEVICE_STATE)).toBe(true);
    expect(await filesEqual(SRC.a, a)).toEqual({ equal: true });
    expect(await filesEqual(SRC.b, b)).toEqual({ equal: true });
    // Zero chunks stay holes in the restored RAM: 8 MiB written zeros + 8 MiB never touched at least.
    expect(fs.statSync(a).blocks * 512).toBeLessThanOrEqual(40 * M - 16 * M);
    fs.rmSync(a);
    fs.rmSync(b);
  });

  test('inspect: version 2, the ratio and the chunk kinds per block; the image is packed, not sparse', async () => {
    const image = path.join(dir, 'inspect.img');
    await saveCompressed(image, ['--compress']);
    const r = await runHelper(['inspect', '--json', image], ['ignore', 'pipe']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout.toString());
    expect(j).toMatchObject({ kind: 'iohelper', version: 2, compressed: true, committed: true, deviceStateBytes: DEVICE_STATE.length });
    const a = j.blocks[0];
    expect(a.chunks).toMatchObject({ raw: 1, zero: 2, zstd: 2 });
    expect(a.dataBytes).toBeLessThan(8 * M + 2 * M); // the random chunk whole, the text compressed
    expect(a.chunks.ratio).toBeCloseTo(a.size / a.dataBytes, 1);
    expect(j.fileSize).toBeLessThan(8 * M + 2 * M + 8 * M + DEVICE_STATE.length + 1 * M);
    expect(j.allocatedBytes).toBeLessThanOrEqual(j.fileSize + 64 * K);
    const text = await runHelper(['inspect', image], ['ignore', 'pipe']);
    expect(text.stdout.toString()).toMatch(/block a: 40\.0 MiB stored in .* ratio \d+\.\d\d; 5 chunks of 8\.0 MiB: 2 zstd, 1 raw, 2 zero/);
  });

  test('inspect of a save killed after its chunk indexes were written: INCOMPLETE (exit 2), not refused', async () => {
    const image = path.join(dir, 'killed.img');
    await saveCompressed(image, ['--compress']);
    // What the header says until the commit: state 0, device state at dataOffset, nothing after.
    const fd = fs.openSync(image, 'r+');
    const h = Buffer.alloc(4096);
    fs.readSync(fd, h, 0, 4096, 0);
    const dataOffset = h.readBigUInt64LE(120);
    h.writeUInt32LE(0, 20);
    h.writeBigUInt64LE(dataOffset, 56);
    h.writeBigUInt64LE(0n, 64);
    h.writeBigUInt64LE(dataOffset, 72);
    h.writeUInt32LE(native.crc32c(h.subarray(0, 4092)), 4092);
    fs.writeSync(fd, h, 0, 4096, 0);
    fs.closeSync(fd);
    const r = await runHelper(['inspect', image], ['ignore', 'pipe']);
    expect(r.code).toBe(2);
    expect(r.stdout.toString()).toMatch(/iohelper image v2, INCOMPLETE/);
    expect(r.stdout.toString()).not.toMatch(/REFUSED/);
  });

  test('save refuses bad compression options before touching the image', async () => {
    const image = path.join(dir, 'opts.img');
    fs.writeFileSync(image, 'keep me');
    for (const [args, msg] of [
      [['--compress=zstd:20'], /level 20 is out of range/],
      [['--compress=gzip'], /expected zstd or zstd:LEVEL/],
      [['--compress', '--no-checksums'], /always has chunk checksums/],
      [['--compress', '--chunk', '128M'], /64 MiB/],
    ] as Array<[string[], RegExp]>) {
      const r = await runHelper(['save', '--no-stream-check', '--image', image, ...args, ...ramArgs(SRC.a, SRC.b)], [DEVICE_STATE, 'ignore']);
      expect(r.code).toBe(1);
      expect(lastLine(r.stderr)).toMatch(msg);
      expect(fs.readFileSync(image, 'utf8')).toBe('keep me');
    }
  });
});

describe('hostile compressed chunks are refused and the RAM targets are left as they were', () => {
  let good: string;
  beforeAll(async () => {
    good = path.join(dir, 'good.img');
    await saveCompressed(good, ['--compress']);
  });

  /** Existing targets with their own content; restores a damaged copy of the image into them. */
  async function refused(damage: (image: string, ix: Index) => void): Promise<{ stderr: string; line: string }> {
    const image = path.join(dir, 'bad.img');
    fs.copyFileSync(good, image);
    damage(image, indexOf(image));
    const [a, b] = [path.join(shm, 'keep-a'), path.join(shm, 'keep-b')];
    createRamFile(a, 40 * M);
    fillPattern(a, 31, 0.1);
    createRamFile(b, 8 * M);
    fillPattern(b, 32, 0.1);
    const before = [await sha256File(a), await sha256File(b)];
    const r = await restoreInto(image, a, b);
    expect(r.code).toBe(1);
    expect(r.stdout.length).toBe(0); // no device state went to QEMU
    expect([await sha256File(a), await sha256File(b)]).toEqual(before);
    expect(temporaries()).toEqual([]);
    return { stderr: r.stderr, line: lastLine(r.stderr) };
  }

  test('a flipped byte inside a zstd frame: the chunk does not decode or its CRC differs', async () => {
    const { line } = await refused((image, ix) => {
      const e = readEntry(image, ix.blocks[0], 1);
      expect(e.kind).toBe(2);
      const at = e.offset + Math.floor(e.stored / 2);
      const fd = fs.openSync(image, 'r+');
      const byte = Buffer.alloc(1);
      fs.readSync(fd, byte, 0, 1, at);
      byte[0] ^= 0x5a;
      fs.writeSync(fd, byte, 0, 1, at);
      fs.closeSync(fd);
    });
    expect(line).toMatch(/block 'a' chunk 1 .*(does not decode|CRC-32C)/);
    expect(line).toMatch(/EIMG_(CHUNK|CHECKSUM)/);
  });

  test('a flipped byte in a raw chunk: CRC mismatch (EIMG_CHECKSUM)', async () => {
    const { line } = await refused((image, ix) => {
      const e = readEntry(image, ix.blocks[0], 0);
      expect(e.kind).toBe(1);
      writeAt(image, e.offset + 12345, Buffer.from([0xff, 0x00, 0xff]));
    });
    expect(line).toMatch(/block 'a' chunk 0 .* has CRC-32C 0x[0-9a-f]{8}, the image recorded .*no RAM file was changed.*EIMG_CHECKSUM/);
  });

  test('a decompression bomb: a frame that declares more than its chunk (16 MiB for 8 MiB)', async () => {
    const zeros = path.join(dir, 'zeros-16M');
    fs.writeFileSync(zeros, Buffer.alloc(16 * M));
    const bomb = execFileSync('zstd', ['-19', '-c', '--no-check', zeros]); // from a file: the frame declares its size
    expect(bomb.length).toBeLessThan(8 * M);
    const { line } = await refused((image, ix) => {
      const e = readEntry(image, ix.blocks[0], 1);
      writeAt(image, e.offset, bomb);
      writeEntry(image, ix.blocks[0], 1, { ...e, stored: Math.min(e.stored, bomb.length) });
      if (bomb.length > e.stored) throw new Error('bomb larger than the slot');
    });
    expect(line).toMatch(/chunk 1 .*does not decode: the zstd frame declares 16777216 bytes, the chunk has 8388608.*EIMG_CHUNK/);
  });

  test('a bomb that hides its size (streamed frame without a content size) is refused before decompressing', async () => {
    const streamed = execFileSync('sh', ['-c', 'head -c 67108864 /dev/zero | zstd -1 -c --no-check']);
    const { line } = await refused((image, ix) => {
      const e = readEntry(image, ix.blocks[0], 1);
      writeAt(image, e.offset, streamed);
      writeEntry(image, ix.blocks[0], 1, { ...e, stored: streamed.length });
    });
    expect(line).toMatch(/chunk 1 .*does not decode: the zstd frame does not declare its size.*EIMG_CHUNK/);
  });

  test('bytes after the frame (a stored length longer than the frame)', async () => {
    const { line } = await refused((image, ix) => {
      const e = readEntry(image, ix.blocks[0], 1);
      writeEntry(image, ix.blocks[0], 1, { ...e, stored: e.stored + 1 });
    });
    expect(line).toMatch(/chunk 1 .*(bytes follow the zstd frame|overlaps).*EIMG_(CHUNK|OVERLAP)/);
  });

  test('a cut-short frame (stored length one byte short)', async () => {
    const { line } = await refused((image, ix) => {
      const e = readEntry(image, ix.blocks[0], 1);
      writeEntry(image, ix.blocks[0], 1, { ...e, stored: e.stored - 1 });
    });
    expect(line).toMatch(/chunk 1 .*does not decode: the zstd frame is cut short.*EIMG_CHUNK/);
  });

  test('a stored chunk placed over the device state, or a zero chunk that claims data: refused before any write (EIMG_BOUNDS)', async () => {
    const over = await refused((image, ix) => {
      const e = readEntry(image, ix.blocks[0], 1);
      const size = fs.statSync(image).size;
      writeEntry(image, ix.blocks[0], 1, { ...e, offset: Math.floor((size - 4096) / 4096) * 4096 });
    });
    expect(over.line).toMatch(/block 'a' chunk 1: stored at .* outside the chunk area.*EIMG_BOUNDS/);
    const zero = await refused((image, ix) => {
      const e = readEntry(image, ix.blocks[0], 2);
      expect(e.kind).toBe(0);
      writeEntry(image, ix.blocks[0], 2, { ...e, kind: 2 });
    });
    expect(zero.line).toMatch(/block 'a' chunk 2: 0 stored bytes for a zstd chunk.*EIMG_BOUNDS/);
  });

  test('an image cut inside its chunk area is truncated (EIMG_TRUNCATED)', async () => {
    const { line } = await refused((image) => fs.truncateSync(image, fs.statSync(image).size - DEVICE_STATE.length - 4096));
    expect(line).toMatch(/truncated|EIMG_TRUNCATED/);
  });
});

describeAsRoot('restore of a compressed image into a RAM filesystem without room', () => {
  test('the room needed is the decompressed RAM, not the stored bytes: refused before any write', async () => {
    const image = path.join(dir, 'room.img');
    await saveCompressed(image, ['--compress']);
    const j = JSON.parse((await runHelper(['inspect', '--json', image], ['ignore', 'pipe'])).stdout.toString());
    const stored = j.blocks.reduce((n: number, b: { dataBytes: number }) => n + b.dataBytes, 0);
    // 32 MiB of RAM data (three 8 MiB chunks of a, all of b), about 17 MiB stored: 24 MiB holds the latter only.
    expect(stored).toBeLessThan(20 * M);
    const m = mountFs('tmpfs', 'size=24m');
    try {
      const r = await restoreInto(image, path.join(m.dir, 'a'), path.join(m.dir, 'b'));
      expect(r.code).toBe(1);
      expect(lastLine(r.stderr)).toMatch(/no space left for the RAM of .*: the blocks hold 33554432 bytes of data, the filesystem has \d+ free \(ENOSPC\)/);
      expect(fs.readdirSync(m.dir)).toEqual([]);
    } finally {
      m.unmount();
    }
  });
});

describe('what a compressed image cannot do, and convert', () => {
  let compressedImage: string;
  beforeAll(async () => {
    compressedImage = path.join(dir, 'clone-src.img');
    await saveCompressed(compressedImage, ['--compress']);
  });

  test('vm clone and vm restore --lazy refuse it with a way out, before starting QEMU', async () => {
    const args = machineArgs([{ id: 'a', path: path.join(shm, 'x'), size: 40 * M }]);
    for (const verb of [
      ['vm', 'clone', '--image', compressedImage, '--count', '1'],
      ['vm', 'restore', '--lazy', '--image', compressedImage],
    ]) {
      const r = await runHelper([...verb, '--', ...args], ['ignore', 'pipe']);
      expect(r.code).toBe(1);
      expect(lastLine(r.stderr)).toMatch(/is a compressed image: clones and lazy restores map RAM .* 'iohelper convert .*EIMG_COMPRESSED/);
    }
  });

  test('convert: compressed -> mappable -> compressed, each restorable byte for byte; the mappable one is version 1 and clonable layout', async () => {
    const mappable = path.join(dir, 'conv-v1.img');
    const again = path.join(dir, 'conv-v2.img');
    let r = await runHelper(['convert', compressedImage, mappable], ['ignore', 'pipe']);
    expect({ code: r.code, last: lastLine(r.stderr) }).toMatchObject({ code: 0, last: expect.stringMatching(/mappable \(version 1\)/) });
    const j = JSON.parse((await runHelper(['inspect', '--json', mappable], ['ignore', 'pipe'])).stdout.toString());
    expect(j).toMatchObject({ version: 1, compressed: false });
    expect(j.blocks[0].offset % M).toBe(0);
    r = await runHelper(['convert', mappable, again, '--compress=zstd:3'], ['ignore', 'pipe']);
    expect(r.code).toBe(0);
    for (const image of [mappable, again]) {
      const [a, b] = [path.join(shm, 'cv-a'), path.join(shm, 'cv-b')];
      const out = await restoreInto(image, a, b);
      expect({ code: out.code, stderr: out.stderr }).toEqual({ code: 0, stderr: '' });
      expect(out.stdout.equals(DEVICE_STATE)).toBe(true);
      expect(await filesEqual(SRC.a, a)).toEqual({ equal: true });
      expect(await filesEqual(SRC.b, b)).toEqual({ equal: true });
      fs.rmSync(a);
      fs.rmSync(b);
    }
    // Nothing left beside the targets: no scratch directory, no temporary image.
    expect(fs.readdirSync(dir).filter((f) => f.includes('iohelper'))).toEqual([]);
  });

  test('convert refuses an existing target and a corrupted source, and leaves nothing behind', async () => {
    const target = path.join(dir, 'exists.img');
    fs.writeFileSync(target, 'mine');
    let r = await runHelper(['convert', compressedImage, target], ['ignore', 'pipe']);
    expect(r.code).toBe(1);
    expect(lastLine(r.stderr)).toMatch(/exists; convert writes a new file.*EEXIST/);
    expect(fs.readFileSync(target, 'utf8')).toBe('mine');
    const bad = path.join(dir, 'corrupt.img');
    fs.copyFileSync(compressedImage, bad);
    const e = readEntry(bad, indexOf(bad).blocks[0], 0);
    writeAt(bad, e.offset + 100, Buffer.from('corrupt'));
    const out = path.join(dir, 'never.img');
    r = await runHelper(['convert', bad, out], ['ignore', 'pipe']);
    expect(r.code).toBe(1);
    expect(lastLine(r.stderr)).toMatch(/EIMG_CHECKSUM/);
    expect(fs.existsSync(out)).toBe(false);
    expect(fs.readdirSync(dir).filter((f) => f.includes('iohelper'))).toEqual([]);
  });
});

describe('an addon built without libzstd', () => {
  let build: string;
  let addon: typeof native;
  beforeAll(() => {
    build = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-nozstd-'));
    for (const f of ['binding.gyp', 'native']) fs.cpSync(path.join(ROOT, f), path.join(build, f), { recursive: true });
    // npm's own node-gyp, the one `npm run build:native` uses.
    const npmBin = execFileSync('sh', ['-c', 'readlink -f "$(command -v npm)"'], { encoding: 'utf8' }).trim();
    const gyp = path.join(path.dirname(npmBin), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
    const r = spawnSync(process.execPath, [gyp, 'rebuild', '--silent'], { cwd: build, env: { ...process.env, IOHELPER_ZSTD: '0', NODE_PATH: path.join(ROOT, 'node_modules') }, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`node-gyp rebuild without zstd failed: ${r.stderr}`);
    addon = require(path.join(build, 'build', 'Release', 'iohelper.node'));
    addon.setErrnoNames(errnoNames());
  }, 240000);
  afterAll(() => fs.rmSync(build, { recursive: true, force: true }));

  test('it says so (zstd null), stores chunks raw, and refuses a zstd chunk with ENOTSUP', () => {
    expect(addon.zstd).toBeNull();
    expect(native.zstd).toMatch(/^1\.\d+\.\d+$/);
    const ram = path.join(shm, 'nz-ram');
    createRamFile(ram, 8 * M);
    fs.writeFileSync(ram, text(8 * M, 9));
    const img = path.join(dir, 'nz.bin');
    const ramFd = fs.openSync(ram, 'r');
    const imgFd = fs.openSync(img, 'w+');
    try {
      const cursor = new BigInt64Array(new SharedArrayBuffer(8));
      const index = new Uint8Array(INDEX_ENTRY);
      const job = { ramFd, ramOffset: 0, length: 8 * M, imageFd: imgFd, chunkSize: 8 * M, unit: 4096, index };
      expect(addon.saveChunks({ ...job, level: 1, cursor }).dataBytes).toBe(8 * M);
      expect(Buffer.from(index).readUInt32LE(16)).toBe(1); // raw
      // The real addon's zstd frame, handed to the one without zstd.
      const zIndex = new Uint8Array(INDEX_ENTRY);
      cursor[0] = 16n * BigInt(M);
      native.saveChunks({ ...job, level: 1, cursor, index: zIndex });
      expect(Buffer.from(zIndex).readUInt32LE(16)).toBe(2);
      const out = path.join(shm, 'nz-out');
      createRamFile(out, 8 * M);
      const outFd = fs.openSync(out, 'r+');
      try {
        expect(() => addon.restoreChunks({ ...job, ramFd: outFd, index: zIndex })).toThrow(expect.objectContaining({ code: 'ENOTSUP' }));
        expect(addon.restoreChunks({ ...job, ramFd: outFd, index }).badChunk).toBe(-1);
      } finally {
        fs.closeSync(outFd);
      }
      expect(fs.readFileSync(out).equals(fs.readFileSync(ram))).toBe(true);
    } finally {
      fs.closeSync(ramFd);
      fs.closeSync(imgFd);
    }
  });

  test('convert --compress on such a build fails with ENOTSUP in its plan: no scratch files, no target', async () => {
    const real = native.zstd;
    (native as { zstd: string | null }).zstd = null;
    const target = path.join(dir, 'nz-convert.img');
    try {
      const source = path.join(dir, 'nz-source.img');
      if (!fs.existsSync(source)) await saveCompressed(source, []);
      let progressed = 0;
      await expect(convert({ source, target, compressLevel: 1, onProgress: () => progressed++ })).rejects.toMatchObject({ code: 'ENOTSUP' });
      expect(progressed).toBe(0); // refused before the restore into scratch files began
    } finally {
      (native as { zstd: string | null }).zstd = real;
    }
    expect(fs.existsSync(target)).toBe(false);
    expect(fs.readdirSync(dir).filter((f) => f.includes('.iohelper-'))).toEqual([]);
  });

  test('save --compress on such a build fails with a clear ENOTSUP before the image is touched', async () => {
    const image = path.join(dir, 'nz.img');
    fs.writeFileSync(image, 'untouched');
    const fd = fs.openSync(image, 'r+');
    const real = native.zstd;
    (native as { zstd: string | null }).zstd = null; // what the addon above reports
    try {
      await expect(save({ imageFd: fd, imageName: image, ram: [{ name: 'a', path: SRC.a }], compressLevel: 1, checkDeviceState: false })).rejects.toMatchObject({
        code: 'ENOTSUP',
        message: expect.stringMatching(/built without libzstd.*libzstd-dev/),
      });
    } finally {
      (native as { zstd: string | null }).zstd = real;
      fs.closeSync(fd);
    }
    expect(fs.readFileSync(image, 'utf8')).toBe('untouched');
  });
});
