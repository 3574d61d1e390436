/**
 * iohelper save / restore / inspect on synthetic RAM files (no QEMU needed): round trips, and
 * images that must be refused (incomplete, truncated, corrupted, mismatched, hostile targets),
 * each with a clear error, exit 1, and no byte written to the RAM files.
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { native } from '../src/native';
import { createRamFile, fillPattern, filesEqual, sha256File } from '../bench/lib/ram-file';
import { lastLine, runHelper } from './support/cli';
import { describeAsRoot, Mount, mountFs } from './support/mounts';

const M = 1024 * 1024;
let dir: string;
const shm = (n: string) => `/dev/shm/iohelper-imgcli-${process.pid}-${n}`;
const SRC = { a: shm('a'), b: shm('b') };
const DEVICE_STATE = crypto.randomBytes(5 * M + 77); // larger than a pipe: must be streamed

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-imgcli-'));
  createRamFile(SRC.a, 40 * M);
  fillPattern(SRC.a, 1, 0.25);
  createRamFile(SRC.b, 12 * M);
  fillPattern(SRC.b, 2, 0.5);
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
  for (const f of fs.readdirSync('/dev/shm')) if (f.startsWith(`iohelper-imgcli-${process.pid}-`)) fs.rmSync(`/dev/shm/${f}`, { force: true });
});

/** Saves SRC with every zero page left as a hole (--min-hole 4K) unless `extra` says otherwise. */
async function saveImage(image: string, extra: string[] = []): Promise<void> {
  const minHole = extra.includes('--min-hole') ? [] : ['--min-hole', '4K'];
  const r = await runHelper(['save', '--no-stream-check', '--image', image, '--ram', `pc.ram=${SRC.a}`, '--ram', `node1=${SRC.b}`, ...minHole, ...extra], [DEVICE_STATE, 'ignore']);
  expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
}

function restoreArgs(image: string, a: string, b: string, extra: string[] = []): string[] {
  return ['restore', '--image', image, '--ram', `pc.ram=${a}`, '--ram', `node1=${b}`, ...extra];
}

describe('round trip', () => {
  test.each([
    ['buffered, default jobs', [] as string[]],
    ['O_DIRECT, 3 jobs, 1 MiB chunks, small jobs', ['--direct', '--jobs', '3', '--chunk', '1M', '--job-size', '4M']],
    ['default --min-hole (short zero runs written)', ['--min-hole', '64K']],
  ])('%s: RAM and device state come back exactly', async (_n, opts) => {
    const image = path.join(dir, 'rt.img');
    await saveImage(image, opts);
    const a = shm('rt-a');
    const b = shm('rt-b');
    const saveOnly = new Set(['--chunk', '1M', '--min-hole', '64K']);
    const r = await runHelper(restoreArgs(image, a, b, opts.filter((o) => !saveOnly.has(o))), ['ignore', 'pipe']);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
    expect(r.stdout.equals(DEVICE_STATE)).toBe(true);
    expect(await filesEqual(SRC.a, a)).toEqual({ equal: true });
    expect(await filesEqual(SRC.b, b)).toEqual({ equal: true });
    fs.rmSync(a);
    fs.rmSync(b);
  });

  test('the default --min-hole writes short zero runs: fewer, larger writes, a less sparse image', async () => {
    const sparse = path.join(dir, 'sparse.img');
    const dense = path.join(dir, 'dense.img');
    await saveImage(sparse);
    await saveImage(dense, ['--min-hole', '64K']);
    const blocks = (f: string) => fs.statSync(f).blocks * 512;
    expect(blocks(dense)).toBeGreaterThan(blocks(sparse) + 8 * M);
  });

  test('inspect shows the blocks, data share and device state; the image is sparse', async () => {
    const image = path.join(dir, 'inspect.img');
    await saveImage(image);
    const r = await runHelper(['inspect', image, '--json'], ['ignore', 'pipe']);
    expect(r.code).toBe(0);
    const info = JSON.parse(r.stdout.toString());
    expect(info).toMatchObject({ kind: 'iohelper', committed: true, checksums: true, deviceStateBytes: DEVICE_STATE.length });
    expect(info.blocks.map((b: { name: string }) => b.name)).toEqual(['pc.ram', 'node1']);
    expect(info.blocks[0].dataBytes / info.blocks[0].size).toBeCloseTo(0.75, 1);
    expect(info.blocks[1].dataBytes / info.blocks[1].size).toBeCloseTo(0.5, 1);
    const data = info.blocks[0].dataBytes + info.blocks[1].dataBytes;
    expect(info.allocatedBytes).toBeGreaterThanOrEqual(data);
    expect(info.allocatedBytes).toBeLessThan(data + DEVICE_STATE.length + 2 * M);
    const text = await runHelper(['inspect', image], ['ignore', 'pipe']);
    expect(text.stdout.toString()).toMatch(/iohelper image v1, committed/);
  });

  test('inspect recognises libvirt save images and raw QEMU streams', async () => {
    const lv = path.join(dir, 'lv.save');
    const h = Buffer.alloc(92);
    h.write('LibvirtQemudPart', 0, 'latin1');
    h.writeUInt32LE(2, 16);
    h.writeUInt32LE(1234, 20);
    fs.writeFileSync(lv, h);
    expect((await runHelper(['inspect', lv], ['ignore', 'pipe'])).stdout.toString()).toMatch(/libvirt save image, INCOMPLETE .*version 2, XML 1234 bytes/);
    const q = path.join(dir, 'raw.qevm');
    fs.writeFileSync(q, Buffer.from([0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3]));
    expect((await runHelper(['inspect', q], ['ignore', 'pipe'])).stdout.toString()).toMatch(/raw QEMU migration stream \(QEVM\), version 3/);
  });
});

describe('refused restores write nothing to RAM files', () => {
  let good: string;
  beforeAll(async () => {
    good = path.join(dir, 'good.img');
    await saveImage(good);
  });

  /** Existing targets with known content (right sizes), plus a path that must not get created. */
  async function refused(image: string, args: string[], expected: RegExp): Promise<void> {
    const a = shm('target-a');
    const b = shm('target-b');
    createRamFile(a, 40 * M);
    fillPattern(a, 77, 0);
    createRamFile(b, 12 * M);
    const before = [await sha256File(a), await sha256File(b)];
    const r = await runHelper(args.length ? args : restoreArgs(image, a, b), ['ignore', 'pipe']);
    expect(r.code).toBe(1);
    expect(r.stdout.length).toBe(0);
    expect(lastLine(r.stderr)).toMatch(expected);
    expect([await sha256File(a), await sha256File(b)]).toEqual(before);
  }

  function copyWith(edit: (fd: number) => void, from = good): string {
    const f = path.join(dir, `bad-${crypto.randomUUID()}.img`);
    fs.copyFileSync(from, f);
    const fd = fs.openSync(f, 'r+');
    edit(fd);
    fs.closeSync(fd);
    return f;
  }

  function rewriteHeader(fd: number, edit: (b: Buffer) => void): void {
    const b = Buffer.alloc(4096);
    fs.readSync(fd, b, 0, 4096, 0);
    edit(b);
    b.writeUInt32LE(native.crc32c(b.subarray(0, 4092)), 4092);
    fs.writeSync(fd, b, 0, 4096, 0);
  }

  test('an incomplete image (save never committed)', async () => {
    const img = copyWith((fd) => rewriteHeader(fd, (b) => b.writeUInt32LE(0, 20)));
    await refused(img, [], /incomplete.*\(EIMG_UNCOMMITTED\)$/);
    const r = await runHelper(['inspect', img], ['ignore', 'pipe']);
    expect(r.code).toBe(2);
    expect(r.stdout.toString()).toMatch(/INCOMPLETE \(the save never finished\)/);
  });

  test.each([0.5, 0.99])('an image truncated to %p of its size', async (frac) => {
    const img = copyWith((fd) => fs.ftruncateSync(fd, Math.floor(fs.fstatSync(fd).size * frac)));
    await refused(img, [], /truncated.*\(EIMG_TRUNCATED\)$/);
  });

  test('an image cut at every section boundary', async () => {
    const info = JSON.parse((await runHelper(['inspect', good, '--json'], ['ignore', 'pipe'])).stdout.toString());
    const [a, b] = info.blocks;
    const cuts = [0, 100, 4096, 4096 + 640, 8192, a.offset, a.offset + 1, a.offset + a.size, b.offset, b.offset + b.size, info.fileSize - DEVICE_STATE.length, info.fileSize - 1];
    for (const cut of cuts) {
      const img = copyWith((fd) => fs.ftruncateSync(fd, cut));
      await refused(img, [], /\((EIMG_TRUNCATED|EIMG_MAGIC)\)$/);
    }
  }, 120000);

  test('a flipped bit in the header', async () => {
    const img = copyWith((fd) => fs.writeSync(fd, Buffer.from([0x80]), 0, 1, 60));
    await refused(img, [], /header checksum mismatch.*\(EIMG_CHECKSUM\)$/);
  });

  test('a flipped bit in the block table', async () => {
    const img = copyWith((fd) => fs.writeSync(fd, Buffer.from([0x42]), 0, 1, 4096 + 3));
    await refused(img, [], /block table checksum mismatch.*\(EIMG_CHECKSUM\)$/);
  });

  test('block names that do not match --ram', async () => {
    await refused(good, ['restore', '--image', good, '--ram', `pc.ram=${shm('target-a')}`, '--ram', `other=${shm('target-b')}`], /do not match the image: the image has 'node1' but no --ram names it; --ram 'other' not in the image/);
  });

  test('a RAM target of the wrong size', async () => {
    const wrong = shm('wrong');
    createRamFile(wrong, 4 * M);
    await refused(good, restoreArgs(good, shm('target-a'), wrong), /has 4194304 bytes; the image's block has 12582912 \(EINVAL\)$/);
    expect(fs.statSync(wrong).size).toBe(4 * M);
  });

  test('a symlink where a RAM path is expected', async () => {
    const link = shm('link');
    fs.rmSync(link, { force: true });
    fs.symlinkSync(shm('target-b'), link);
    await refused(good, restoreArgs(good, shm('target-a'), link), /is a symbolic link; refusing to follow it \(ELOOP\)$/);
    fs.rmSync(link);
  });

  describe.each([
    ['mappable (v1)', [] as string[]],
    ['compressed (v2)', ['--compress=zstd:0']],
  ])('the device-state CRC-32C of a %s image', (_kind, saveOpts) => {
    let image: string;
    beforeAll(async () => {
      image = path.join(dir, `dscrc-${saveOpts.length}.img`);
      await saveImage(image, saveOpts);
    });
    const inspectJson = async (img: string) => JSON.parse((await runHelper(['inspect', img, '--json'], ['ignore', 'pipe'])).stdout.toString());
    const copyOf = (edit: (fd: number) => void) => copyWith(edit, image);

    test('is recorded and verified by inspect', async () => {
      const info = await inspectJson(image);
      expect(info.deviceStateCrc).toEqual({ recorded: expect.stringMatching(/^0x[0-9a-f]{8}$/), computed: expect.stringMatching(/^0x[0-9a-f]{8}$/), ok: true });
      expect(info.deviceStateCrc.recorded).toBe(`0x${native.crc32c(DEVICE_STATE).toString(16).padStart(8, '0')}`);
      const text = await runHelper(['inspect', image], ['ignore', 'pipe']);
      expect(text.code).toBe(0);
      expect(text.stdout.toString()).toMatch(/device state: 5242957 bytes, CRC-32C 0x[0-9a-f]{8} verified/);
    });

    test('one flipped bit in the device state: restore refused before any RAM target or QEMU is touched; inspect says CORRUPTED (exit 2)', async () => {
      const img = copyOf((fd) => {
        const at = fs.fstatSync(fd).size - DEVICE_STATE.length + 123457;
        const b = Buffer.alloc(1);
        fs.readSync(fd, b, 0, 1, at);
        b[0] ^= 0x08;
        fs.writeSync(fd, b, 0, 1, at);
      });
      await refused(img, [], /corrupted: the device state \(5242957 bytes at \d+\) has CRC-32C 0x[0-9a-f]{8}, the image recorded 0x[0-9a-f]{8} \(EIMG_CHECKSUM\)$/);
      const text = await runHelper(['inspect', img], ['ignore', 'pipe']);
      expect(text.code).toBe(2);
      expect(text.stdout.toString()).toMatch(/device state: 5242957 bytes, CORRUPTED: CRC-32C 0x[0-9a-f]{8}, the image recorded 0x[0-9a-f]{8} \(restore refuses it\)/);
      expect((await inspectJson(img)).deviceStateCrc.ok).toBe(false);
    });

    test('an image written before the CRC existed (flag bit 2 and the field clear) still restores; inspect says it has none', async () => {
      const img = copyOf((fd) =>
        rewriteHeader(fd, (b) => {
          b.writeUInt32LE(b.readUInt32LE(12) & ~4, 12);
          b.writeUInt32LE(0, 128);
        }),
      );
      const text = await runHelper(['inspect', img], ['ignore', 'pipe']);
      expect(text.code).toBe(0);
      expect(text.stdout.toString()).toMatch(/device state: 5242957 bytes, no device-state checksum \(saved by an older iohelper\): not verified/);
      expect((await inspectJson(img)).deviceStateCrc).toBeNull();
      const a = shm('old-a');
      const b = shm('old-b');
      const r = await runHelper(restoreArgs(img, a, b), ['ignore', 'pipe']);
      expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
      expect(r.stdout.equals(DEVICE_STATE)).toBe(true);
      expect(await filesEqual(SRC.a, a)).toEqual({ equal: true });
      fs.rmSync(a);
      fs.rmSync(b);
    });

    test('convert carries it to the other version; from a corrupted device state it makes no target', async () => {
      const out = path.join(dir, `dscrc-conv-${saveOpts.length}.img`);
      const r = await runHelper(['convert', image, out, ...(saveOpts.length ? [] : ['--compress=zstd:0'])], ['ignore', 'pipe']);
      expect(r.code).toBe(0);
      expect((await inspectJson(out)).deviceStateCrc).toEqual((await inspectJson(image)).deviceStateCrc);
      const bad = copyOf((fd) => fs.writeSync(fd, Buffer.from([0xff]), 0, 1, fs.fstatSync(fd).size - 1));
      const out2 = path.join(dir, `dscrc-conv-bad-${saveOpts.length}.img`);
      const r2 = await runHelper(['convert', bad, out2], ['ignore', 'pipe']);
      expect(r2.code).toBe(1);
      expect(lastLine(r2.stderr)).toMatch(/the device state .*\(EIMG_CHECKSUM\)$/);
      expect(fs.existsSync(out2)).toBe(false);
    });
  });

  test('an image that is not one', async () => {
    const img = path.join(dir, 'garbage.img');
    fs.writeFileSync(img, crypto.randomBytes(8192));
    await refused(img, [], /not an iohelper image \(EIMG_MAGIC\)$/);
  });
});

test('corrupted RAM data is caught by the chunk checksums (and only by them), the message naming the image once', async () => {
  const image = path.join(dir, 'flip.img');
  await saveImage(image);
  const info = JSON.parse((await runHelper(['inspect', image, '--json'], ['ignore', 'pipe'])).stdout.toString());
  // Flip a byte in a data page of block 0 (the first page holds data: the pattern stamps it).
  const fd = fs.openSync(image, 'r+');
  const at = info.blocks[0].offset + 3 * M + 100;
  const b = Buffer.alloc(4096);
  let off = at - (at % 4096);
  for (; ; off += 4096) {
    fs.readSync(fd, b, 0, 4096, off);
    if (b.some((x) => x !== 0)) break;
  }
  b[17] ^= 0x01;
  fs.writeSync(fd, b, 0, 4096, off);
  fs.closeSync(fd);
  const a = shm('flip-a');
  const c = shm('flip-b');
  const r = await runHelper(restoreArgs(image, a, c), ['ignore', 'pipe']);
  expect(r.code).toBe(1);
  expect(r.stdout.length).toBe(0); // QEMU never gets device state from a corrupted image
  expect(lastLine(r.stderr)).toMatch(/corrupted: block 'pc.ram' chunk \d+ .* has CRC-32C 0x[0-9a-f]{8}, the image recorded 0x[0-9a-f]{8}; .* \(EIMG_CHECKSUM\)$/);
  // The image is named once, at the start of the message.
  expect(lastLine(r.stderr)).toMatch(new RegExp(`^\\S+: ${image}: corrupted: .*; no RAM file was changed \\(EIMG_CHECKSUM\\)$`));
  const unchecked = await runHelper(restoreArgs(image, shm('flip-c'), shm('flip-d'), ['--no-verify']), ['ignore', 'pipe']);
  expect(unchecked.code).toBe(0);
});

test('the reader of the device state goes away (QEMU died during restore): exit 1 with EPIPE, no hang', async () => {
  const image = path.join(dir, 'epipe.img');
  await saveImage(image);
  const [rd, wr] = native.pipe();
  fs.closeSync(rd);
  const t0 = Date.now();
  const r = await runHelper(restoreArgs(image, shm('epipe-a'), shm('epipe-b')), ['ignore', wr]);
  fs.closeSync(wr);
  expect(r.signal).toBeNull();
  expect(r.code).toBe(1);
  expect(lastLine(r.stderr)).toMatch(/Unable to write the stream: Broken pipe \(EPIPE\)$/);
  expect(Date.now() - t0).toBeLessThan(30000);
});

describe('wrong usage', () => {
  test.each([
    [['save', '--image', 'x', '--ram', 'a=/dev/null', '--jobs', '0'], /--jobs: 0 is out of range \(1\.\.64\)/],
    [['save', '--image', 'x', '--ram', 'a=/dev/null', '--jobs', '10000'], /--jobs: 10000 is out of range/],
    [['save', '--image', 'x'], /at least one --ram NAME=PATH is required/],
    [['save', '--image', 'x', '--ram', 'noequals'], /expected NAME=PATH or NAME=fd:K/],
    [['save', '--image', 'x', '--ram', 'a=/p', '--ram', 'a=/q'], /RAM block a given twice/],
    [['restore', '--ram', 'a=/p'], /--fd N \(or --image PATH\) is required/],
    [['save', '--image', 'x', '--ram', 'a=/p', '--chunk', '3000'], /--chunk: 3000 is not a power of two in 4K\.\.1G/],
  ])('%j', async (args, expected) => {
    const r = await runHelper((args as string[]).map((a) => (a === 'x' ? path.join(dir, 'x') : a)), ['ignore', 'ignore']);
    expect(r.code).toBe(1);
    expect(lastLine(r.stderr)).toMatch(expected);
    expect(fs.existsSync(path.join(dir, 'x'))).toBe(false);
  });

  test('a RAM file whose size is not a page multiple', async () => {
    const odd = shm('odd');
    fs.writeFileSync(odd, Buffer.alloc(5000, 1));
    const r = await runHelper(['save', '--image', path.join(dir, 'odd.img'), '--ram', `a=${odd}`], [Buffer.alloc(0), 'ignore']);
    expect(r.code).toBe(1);
    expect(lastLine(r.stderr)).toMatch(/has 5000 bytes, not a positive multiple of its page size 4096 \(EINVAL\)$/);
  });
});

describeAsRoot('disk full during save', () => {
  let mnt: Mount;
  beforeAll(() => {
    mnt = mountFs('tmpfs', 'size=16m');
  });
  afterAll(() => mnt.unmount());

  test('ENOSPC: exit 1 naming the image; by path no image appears, into an fd it stays incomplete and is refused', async () => {
    const image = `${mnt.dir}/full.img`;
    const args = ['--no-stream-check', '--ram', `pc.ram=${SRC.a}`, '--ram', `node1=${SRC.b}`];
    const byPath = await runHelper(['save', '--image', image, ...args], [DEVICE_STATE, 'ignore']);
    expect(byPath.code).toBe(1);
    expect(lastLine(byPath.stderr)).toMatch(/No space left on device \(ENOSPC\)$/);
    expect(lastLine(byPath.stderr)).toContain(image);
    expect(fs.readdirSync(mnt.dir)).toEqual([]); // the temporary went too
    const fd = fs.openSync(image, fs.constants.O_WRONLY | fs.constants.O_CREAT, 0o600);
    const r = await runHelper(['save', '--fd', '3', '--name', image, ...args], [DEVICE_STATE, 'ignore', 'pipe', fd]);
    fs.closeSync(fd);
    expect(r.code).toBe(1);
    expect(lastLine(r.stderr)).toMatch(/No space left on device \(ENOSPC\)$/);
    expect(lastLine(r.stderr)).toContain(image);
    const info = await runHelper(['inspect', image], ['ignore', 'pipe']);
    expect(info.code).toBe(2);
    expect(info.stdout.toString()).toMatch(/INCOMPLETE/);
    const back = await runHelper(restoreArgs(image, shm('enospc-a'), shm('enospc-b')), ['ignore', 'pipe']);
    expect(back.code).toBe(1);
    expect(fs.existsSync(shm('enospc-a'))).toBe(false);
  });
});
