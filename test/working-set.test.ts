/**
 * The working-set file (docs/FORMAT.md, "Working-set file"): the codec against every reader
 * rule (W1–W8) and fuzzing, coalescing and the bounds of what a crafted file can make a
 * prefetch read, how the file is read (a regular file only, never past the largest legal
 * size), and with real QEMU 10 and the test guest: a working set
 * recorded by `vm restore --lazy --record-ws` round-trips through the image, a lazy restore and
 * a clone prefetch it and the guest runs on, and damaged or stale files are ignored with a
 * warning.
 */
import { execFileSync, spawnSync } from 'child_process';
import fc from 'fast-check';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { crc32c } from './support/crc32c';
import { encodeBlockTable, encodeHeader, planLayout } from '../src/image/format';
import { planPrefetch } from '../src/vm/lazy/prefetch';
import { readImageMetadata } from '../src/image/io/read-image';
import { coalesce, decodeWorkingSet, encodeWorkingSet, WorkingSet, WorkingSetError } from '../src/vm/lazy/working-set';
import { saveVm } from '../src/vm/manager';
import { QemuInstance } from '../src/vm/qemu-launch';
import { lastLine, runHelper } from './support/cli';
import { shmPath, startQemu } from './support/qemu';
import { describeGuest, guestArgs, ticks, waitForTicks } from './support/guest';

const M = 1024 * 1024;

/** A committed two-block image's metadata as readImageMetadata gives it. */
function imageMeta() {
  const { header, entries } = planLayout({
    blocks: [
      { name: 'pc.ram', size: 64 * M },
      { name: 'ram1', size: 16 * M },
    ],
    pageSize: 4096,
    alignment: M,
    chunkSize: 8 * M,
    checksums: true,
    creator: 't',
  });
  header.committed = true;
  header.deviceStateLength = 1000;
  header.imageSize = header.deviceStateOffset + 1000;
  header.tableCrc = crc32c(encodeBlockTable(entries));
  const headerCrc = encodeHeader(header).readUInt32LE(4092);
  return { header, entries, headerCrc, checksums: [], fileSize: header.imageSize };
}

function ws(meta: ReturnType<typeof imageMeta>, ranges: WorkingSet['ranges']): WorkingSet {
  return { imageSize: meta.header.imageSize, imageHeaderCrc: meta.headerCrc, recordedMs: 1, windowMs: 2000, ranges };
}

const fixCrc = (b: Buffer) => b.writeUInt32LE(crc32c(b.subarray(0, b.length - 4)), b.length - 4);

function refused(b: Buffer, meta: ReturnType<typeof imageMeta>, why: RegExp): void {
  let thrown: unknown;
  try {
    decodeWorkingSet(b, meta);
  } catch (e) {
    thrown = e;
  }
  expect(thrown).toBeInstanceOf(WorkingSetError);
  expect((thrown as Error).message).toMatch(why);
}

describe('working-set codec', () => {
  const meta = imageMeta();
  const [a, b] = meta.entries;
  const good = ws(meta, [
    { offset: a.offset + 8 * M, length: 4096 },
    { offset: b.offset, length: 2 * M },
    { offset: a.offset, length: 64 * 1024 },
  ]);

  test('round trip, ranges in first-touch order', () => {
    expect(decodeWorkingSet(encodeWorkingSet(good), meta)).toEqual(good);
  });

  test.each([
    ['W1 too short', (x: Buffer) => x.subarray(0, 40), /shorter than a working-set file's header/],
    ['W2 magic', (x: Buffer) => (x.write('IOHWS999', 0, 'latin1'), x), /magic/],
    ['W2 version', (x: Buffer) => (x.writeUInt32LE(2, 8), fixCrc(x), x), /version 2/],
    ['W2 count and length disagree', (x: Buffer) => (x.writeUInt32LE(4, 12), x), /but 4 ranges need/],
    ['W2 count above the limit', (x: Buffer) => (x.writeUInt32LE(2 ** 20 + 1, 12), x), /more than 1048576/],
    ['W3 checksum', (x: Buffer) => ((x[50] ^= 1), x), /checksum mismatch/],
    ['W4 page size', (x: Buffer) => (x.writeUInt32LE(8192, 28), fixCrc(x), x), /page size/],
    ['W5 another image (size)', (x: Buffer) => (x.writeBigUInt64LE(x.readBigUInt64LE(16) + 4096n, 16), fixCrc(x), x), /another image/],
    ['W5 another image (header CRC)', (x: Buffer) => (x.writeUInt32LE((x.readUInt32LE(24) ^ 1) >>> 0, 24), fixCrc(x), x), /another image/],
    ['W6 empty range', (x: Buffer) => (x.writeBigUInt64LE(0n, 48 + 8), fixCrc(x), x), /empty, unaligned or out of range/],
    ['W6 unaligned range', (x: Buffer) => (x.writeBigUInt64LE(x.readBigUInt64LE(48) + 512n, 48), fixCrc(x), x), /unaligned/],
    ['W6 past 2^53', (x: Buffer) => (x.writeBigUInt64LE(2n ** 63n, 48), fixCrc(x), x), /out of range/],
    ['W7 in the metadata, not a block', (x: Buffer) => (x.writeBigUInt64LE(0n, 48), fixCrc(x), x), /not inside one RAM block/],
    ['W7 across two blocks', (x: Buffer) => (x.writeBigUInt64LE(BigInt(a.offset + a.size - 4096), 48), x.writeBigUInt64LE(BigInt(b.offset - (a.offset + a.size) + 8192), 56), fixCrc(x), x), /not inside one RAM block/],
  ] as Array<[string, (x: Buffer) => Buffer, RegExp]>)('%s', (_n, damage, why) => refused(damage(encodeWorkingSet(good)), meta, why));

  test('coalesce keeps first-touch order, merges ranges that follow within 256 KiB, reads at most 8 MiB', () => {
    expect(
      coalesce([
        { offset: 100 * M, length: 4096 },
        { offset: 100 * M + 128 * 1024, length: 4096 },
        { offset: 10 * M, length: 20 * M },
        { offset: 50 * M, length: 4096 },
        { offset: 40 * M, length: 4096 },
      ]),
    ).toEqual([
      { offset: 100 * M, length: 128 * 1024 + 4096 },
      { offset: 10 * M, length: 8 * M },
      { offset: 18 * M, length: 8 * M },
      { offset: 26 * M, length: 4 * M },
      { offset: 50 * M, length: 4096 },
      { offset: 40 * M, length: 4096 },
    ]);
  });

  test('W8 ranges that overlap (the same pages twice) are refused: a crafted file cannot read a block over and over', () => {
    // Two halves of block a, alternating, 1,000 times: W1–W7 pass, and coalescing in
    // first-touch order could merge none of them (16,000 reads of 8 MiB).
    const half = a.size / 2;
    const ranges = Array.from({ length: 1000 }, (_, i) => ({ offset: a.offset + (i % 2) * half, length: half }));
    refused(encodeWorkingSet(ws(meta, ranges)), meta, /ranges 0 and 2 overlap .*a recording lists each page once/);
    refused(encodeWorkingSet(ws(meta, [good.ranges[0], { offset: a.offset + 8 * M - 4096, length: 8192 }])), meta, /ranges 0 and 1 overlap/);
  });

  test('the plan reads each byte once, at most the data bytes of the image, in at most ranges + data / 8 MiB reads', () => {
    // Single pages alternating between the two halves of block a: disjoint (W8 passes) and
    // never adjacent in first-touch order.
    const half = a.size / 2;
    const ranges = Array.from({ length: half / 4096 }, (_, i) => ({ offset: a.offset + (i % 2) * half + Math.floor(i / 2) * 4096, length: 4096 }));
    const covered = ranges.reduce((n, r) => n + r.length, 0);
    expect(decodeWorkingSet(encodeWorkingSet(ws(meta, ranges)), meta).ranges).toHaveLength(ranges.length);
    const all = coalesce(ranges);
    expect(all.reduce((n, r) => n + r.length, 0)).toBe(covered);
    expect(all).toHaveLength(4); // two runs of 16 MiB, not 8,192 reads of a page
    expect(all[0].offset).toBe(a.offset); // first-touch order: the run holding range 0 first
    // The image holds 3 MiB of data: the plan stops there.
    const budget = 3 * M;
    const capped = coalesce(ranges, budget);
    expect(capped.reduce((n, r) => n + r.length, 0)).toBe(budget);
    expect(capped.length).toBeLessThanOrEqual(1 + Math.ceil(budget / (8 * M)));
  });

  test('planning 2^20 ranges over 1,024 blocks is sorts and linear passes (about a second here) and makes a bounded number of reads', () => {
    const many = planLayout({
      blocks: Array.from({ length: 1024 }, (_, i) => ({ name: `b${i}`, size: 8 * M })),
      pageSize: 4096,
      alignment: M,
      chunkSize: 8 * M,
      checksums: false,
      creator: 't',
    });
    many.header.committed = true;
    many.header.deviceStateLength = 1000;
    many.header.imageSize = many.header.deviceStateOffset + 1000;
    for (const e of many.entries) e.dataBytes = e.size;
    const m = { header: many.header, entries: many.entries, headerCrc: 7, checksums: [], fileSize: many.header.imageSize };
    // Pages alternating between the first and the second 512 blocks.
    const pages = 2 ** 20;
    const pageAt = (p: number) => many.entries[Math.floor(p / 2048)].offset + (p % 2048) * 4096;
    const ranges = Array.from({ length: pages }, (_, i) => ({ offset: pageAt((i % 2) * (pages / 2) + Math.floor(i / 2)), length: 4096 }));
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-wsplan-'));
    try {
      const image = path.join(dir, 'many.img');
      fs.writeFileSync(`${image}.ws`, encodeWorkingSet({ imageSize: m.header.imageSize, imageHeaderCrc: 7, recordedMs: 1, windowMs: 1, ranges }));
      const warnings: string[] = [];
      const t0 = Date.now();
      const plan = planPrefetch(image, m, (w) => warnings.push(w));
      const ms = Date.now() - t0;
      expect(warnings).toEqual([]);
      expect(plan!.bytes).toBe(pages * 4096);
      expect(plan!.reads.length).toBeLessThanOrEqual(2 * 1024); // one run per block at most, 8 MiB each
      expect(ms).toBeLessThan(10000); // ~1 s here (slower on a busy machine); 8 s before the bounds
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('fuzzing: damaged files give only WorkingSetError, and what decodes lies inside the blocks', () => {
    let decoded = 0;
    fc.assert(
      fc.property(
        fc.array(fc.record({ block: fc.nat(1), page: fc.nat(4095), pages: fc.integer({ min: 1, max: 64 }) }), { maxLength: 40 }),
        fc.array(fc.record({ at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }), { minLength: 1, maxLength: 4 }),
        fc.boolean(),
        (rs, edits, fix) => {
          const ranges = rs.map((r) => {
            const e = meta.entries[r.block];
            const first = r.page % (e.size / 4096);
            return { offset: e.offset + first * 4096, length: Math.min(r.pages, e.size / 4096 - first) * 4096 };
          });
          const bytes = encodeWorkingSet(ws(meta, ranges));
          for (const e of edits) bytes[e.at % bytes.length] = e.value;
          if (fix) fixCrc(bytes);
          try {
            const got = decodeWorkingSet(bytes, meta);
            for (const r of got.ranges) {
              if (!meta.entries.some((e) => r.offset >= e.offset && r.offset + r.length <= e.offset + e.size)) throw new Error('a range outside the blocks decoded');
            }
            decoded++;
          } catch (e) {
            if (!(e instanceof WorkingSetError)) throw e;
          }
        },
      ),
      { numRuns: 2000, seed: 20261208 },
    );
    expect(decoded).toBeGreaterThan(10); // edits of recordedMs/windowMs with a fixed CRC decode
  });
});

describe('reading IMAGE.ws (W1): a regular file only, never more than the largest legal size', () => {
  const meta = imageMeta();
  meta.entries[0].dataBytes = 8 * M;
  const [a] = meta.entries;
  const good = encodeWorkingSet(ws(meta, [{ offset: a.offset, length: 64 * 1024 }]));
  let dir: string;
  beforeAll(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-wsread-'))));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  function plan(image: string) {
    const warnings: string[] = [];
    return { plan: planPrefetch(image, meta, (m) => warnings.push(m)), warnings };
  }

  test('a regular file is read and planned', () => {
    const image = path.join(dir, 'good.img');
    fs.writeFileSync(`${image}.ws`, good);
    expect(plan(image)).toEqual({ plan: { file: `${image}.ws`, reads: [{ offset: a.offset, length: 64 * 1024 }], bytes: 64 * 1024 }, warnings: [] });
  });

  test('a symbolic link to /proc/self/pagemap (stat size 0, reads on for gigabytes) is ignored at once', () => {
    const image = path.join(dir, 'pagemap.img');
    fs.symlinkSync('/proc/self/pagemap', `${image}.ws`);
    // In a process of its own, killed after 10 s: unbounded, this read ran until memory ran out.
    const script = `const { planPrefetch } = require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'src', 'vm', 'lazy', 'prefetch.js'))});
      const p = planPrefetch(process.argv[2], JSON.parse(process.argv[1]), (m) => console.log(m));
      console.log(p === undefined ? 'no prefetch' : 'prefetch');`;
    const r = spawnSync(process.execPath, ['-e', script, JSON.stringify(meta), image], { timeout: 10000, killSignal: 'SIGKILL', encoding: 'utf8' });
    expect({ status: r.status, signal: r.signal, stderr: r.stderr }).toEqual({ status: 0, signal: null, stderr: '' });
    expect(r.stdout).toBe(`ignoring the working set ${image}.ws: it is a symbolic link; only a regular file is read\nno prefetch\n`);
  });

  test('a symbolic link to a good working set is not followed either', () => {
    const image = path.join(dir, 'link.img');
    fs.writeFileSync(path.join(dir, 'elsewhere.ws'), good);
    fs.symlinkSync(path.join(dir, 'elsewhere.ws'), `${image}.ws`);
    expect(plan(image)).toEqual({ plan: undefined, warnings: [`ignoring the working set ${image}.ws: it is a symbolic link; only a regular file is read`] });
  });

  test('a FIFO is never opened for reading (it would wait for a writer): ignored at once', () => {
    const image = path.join(dir, 'fifo.img');
    execFileSync('mkfifo', [`${image}.ws`]);
    expect(plan(image)).toEqual({ plan: undefined, warnings: [`ignoring the working set ${image}.ws: not a regular file`] });
  });

  test('a file over the largest legal size is ignored without reading it', () => {
    const image = path.join(dir, 'big.img');
    fs.writeFileSync(`${image}.ws`, '');
    fs.truncateSync(`${image}.ws`, 48 + 16 * 2 ** 20 + 5);
    expect(plan(image).warnings).toEqual([`ignoring the working set ${image}.ws: ${48 + 16 * 2 ** 20 + 5} bytes, more than a working-set file can have`]);
  });
});

describeGuest('recording and prefetching the working set of a real guest', () => {
  let dir: string;
  let image: string;
  const pids: number[] = [];

  /** Saves the ticking guest (after `count` ticks) into `file`. */
  async function saveGuest(file: string, name: string): Promise<void> {
    const serial = path.join(dir, `${name}.txt`);
    const src: QemuInstance = await startQemu({ args: guestArgs(shmPath(name), serial), paused: false });
    try {
      await waitForTicks(serial, 3);
      await saveVm(src.qmp, { image: file, direct: true });
    } finally {
      await src.stop();
      fs.rmSync(shmPath(name), { force: true });
    }
  }

  /** `vm restore --lazy` (or clone) of the image through the CLI; its QEMU keeps running until afterAll. */
  async function lazy(verb: string[], serial: string) {
    const r = await runHelper(['vm', ...verb, '--image', image, '--log-dir', path.join(dir, 'logs'), '--', ...guestArgs(shmPath('ws-unused'), serial)], ['ignore', 'pipe']);
    for (const m of r.stdout.toString().matchAll(/pid (\d+)/g)) pids.push(Number(m[1]));
    return { code: r.code, stdout: r.stdout.toString(), stderr: r.stderr };
  }

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-ws-'));
    image = path.join(dir, 'guest.img');
    await saveGuest(image, 'ws-guest');
  }, 180000);
  afterEach(() => {
    for (const pid of pids.splice(0)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('--record-ws runs the guest and writes IMAGE.ws: it decodes against the image, every range inside a block', async () => {
    const serial = path.join(dir, 'rec.txt');
    const r = await lazy(['restore', '--lazy', '--record-ws', '2'], serial);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
    expect(r.stdout).toMatch(/, running\n/);
    expect(r.stdout).toMatch(/working set: \d+ ranges, [\d.]+ [KM]iB touched in 2 s, written to .*guest\.img\.ws/);
    const fd = fs.openSync(image, 'r');
    const meta = readImageMetadata(fd, image, { skipChecksums: true });
    fs.closeSync(fd);
    const got = decodeWorkingSet(fs.readFileSync(`${image}.ws`), meta);
    expect(got.ranges.length).toBeGreaterThan(0);
    const bytes = got.ranges.reduce((n, x) => n + x.length, 0);
    expect(bytes).toBeGreaterThan(1 * M); // a running kernel touches megabytes
    expect(bytes).toBeLessThan(256 * M);
    expect(got.windowMs).toBeGreaterThanOrEqual(2000);
    expect(ticks(serial).length).toBeGreaterThan(0); // the guest ran while it was recorded
  }, 120000);

  test('a lazy restore prefetches it and the guest runs on; a clone too; --no-prefetch does not', async () => {
    const serial = path.join(dir, 'pf.txt');
    const r = await lazy(['restore', '--lazy', '--cont'], serial);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
    expect(r.stdout).toMatch(/prefetched the working set \([\d.]+ [KM]iB of [\d.]+ [KM]iB in \d+ reads\)/);
    const after = await waitForTicks(serial, 3, 60000);
    expect(after[1]).toBe(after[0] + 1);
    const c = await lazy(['clone', '--count', '2'], path.join(dir, 'cl.txt'));
    expect(c.code).toBe(0);
    expect(c.stdout).toMatch(/prefetched the working set/);
    const n = await lazy(['restore', '--lazy', '--no-prefetch'], path.join(dir, 'np.txt'));
    expect(n.code).toBe(0);
    expect(n.stdout).not.toMatch(/prefetched/);
  }, 120000);

  test('--record-ws never prefetches (its cached pages would be recorded around each fault), even when IMAGE.ws exists', async () => {
    const before = fs.readFileSync(`${image}.ws`);
    const r = await lazy(['restore', '--lazy', '--record-ws', '1'], path.join(dir, 'rec2.txt'));
    expect(r.code).toBe(0);
    expect(r.stdout).not.toMatch(/prefetched/);
    expect(r.stdout).toMatch(/working set: \d+ ranges/);
    fs.writeFileSync(`${image}.ws`, before); // the other tests use the first recording
  }, 120000);

  test('a damaged working set is ignored with a warning; the restore works and the guest runs', async () => {
    const good = fs.readFileSync(`${image}.ws`);
    const bad = Buffer.from(good);
    bad[bad.length - 10] ^= 0xff;
    fs.writeFileSync(`${image}.ws`, bad);
    try {
      const serial = path.join(dir, 'bad.txt');
      const r = await lazy(['restore', '--lazy', '--cont'], serial);
      expect(r.code).toBe(0);
      expect(lastLine(r.stderr)).toMatch(/warning: ignoring the working set .*guest\.img\.ws: checksum mismatch/);
      expect(r.stdout).not.toMatch(/prefetched/);
      await waitForTicks(serial, 2, 60000);
    } finally {
      fs.writeFileSync(`${image}.ws`, good);
    }
  }, 120000);

  test('a working set recorded from another image (the guest saved again) is stale: ignored with a warning', async () => {
    const other = path.join(dir, 'other.img');
    await saveGuest(other, 'ws-guest-2');
    fs.copyFileSync(`${image}.ws`, `${other}.ws`);
    const r = await runHelper(['vm', 'clone', '--count', '1', '--image', other, '--log-dir', path.join(dir, 'logs'), '--', ...guestArgs(shmPath('ws-unused'), path.join(dir, 'st.txt'))], ['ignore', 'pipe']);
    for (const m of r.stdout.toString().matchAll(/pid (\d+)/g)) pids.push(Number(m[1]));
    expect(r.code).toBe(0);
    expect(lastLine(r.stderr)).toMatch(/ignoring the working set .*other\.img\.ws: it was recorded from another image/);
  }, 180000);
});
