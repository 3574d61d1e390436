/**
 * The RAM reader (native/ram_reader.cc) has two paths, pread into a buffer each worker keeps and
 * a mapping of the RAM file; every save (raw, compressed, delta) must write the same bytes
 * through either: holes, zero pages, units part data and part hole, a short tail, data across
 * block boundaries. Each path is also checked against independent references (the RAM's
 * bytes, a table CRC-32C, Node's AES-128-GCM for the unit hashes), and the option that forces a
 * path is refused when it names none.
 */
import { spawnSync } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { chooseRamRead } from '../src/image/ram-read';
import { save } from '../src/image/save';
import { ChunkJob, native, RangeJob } from '../src/native';
import { IOHELPER } from './support/cli';
import { crc32c } from './support/crc32c';

const K = 1024;
const M = 1024 * K;
const HASH_UNIT = 64 * K;
const INDEX_ENTRY = 24;
// Not a multiple of the 1 MiB chunks nor of the 8 MiB read block: the last chunk is short.
const RAM_SIZE = 9 * M + 192 * K;
const key = crypto.randomBytes(16);
let dir: string;
let ram: string;
let ramBytes: Buffer;

/** Writes `bytes` at `at` of the RAM file (making that range data, even when the bytes are zeros). */
function put(fd: number, at: number, bytes: Buffer): void {
  fs.writeSync(fd, bytes, 0, bytes.length, at);
}

/**
 * A RAM file on tmpfs: random data, pages of written zeros, holes, single pages inside 64 KiB
 * units (the rest of the unit a hole), short and long zero gaps between data, data across the
 * 8 MiB block boundary and a page at the very end.
 */
function makeRam(file: string): void {
  const fd = fs.openSync(file, 'w', 0o600);
  fs.ftruncateSync(fd, RAM_SIZE);
  put(fd, 0, crypto.randomBytes(M));
  put(fd, M, Buffer.alloc(M)); // data extent of zeros
  put(fd, 2 * M + 4 * K, crypto.randomBytes(4 * K)); // one page inside a unit of hole
  put(fd, 2 * M + 68 * K, Buffer.alloc(4 * K)); // a zero page, then data in the same unit
  put(fd, 2 * M + 72 * K, crypto.randomBytes(8 * K));
  put(fd, 2 * M + 128 * K, crypto.randomBytes(64 * K)); // data, a 16 KiB zero gap, data
  put(fd, 2 * M + 192 * K, Buffer.alloc(16 * K));
  put(fd, 2 * M + 208 * K, crypto.randomBytes(48 * K));
  put(fd, 2 * M + 512 * K, Buffer.alloc(256 * K)); // a long zero gap between data
  put(fd, 2 * M + 768 * K, crypto.randomBytes(64 * K));
  // 3 MiB .. 5 MiB: hole
  put(fd, 5 * M, crypto.randomBytes(3 * M + 12 * K)); // across the 8 MiB block boundary
  for (let at = 8 * M + 100 * K; at < RAM_SIZE - 8 * K; at += 36 * K) put(fd, at, crypto.randomBytes(4 * K));
  put(fd, RAM_SIZE - 4 * K, crypto.randomBytes(4 * K));
  fs.closeSync(fd);
}

function gmac(unit: Buffer): Buffer {
  const c = crypto.createCipheriv('aes-128-gcm', key, Buffer.alloc(12));
  c.setAAD(unit);
  c.final();
  return c.getAuthTag();
}

/** Each unit's tag and each chunk's CRC of `bytes`, computed here. */
function references(bytes: Buffer, chunk: number) {
  const hashes = Buffer.alloc(Math.ceil(bytes.length / HASH_UNIT) * 16);
  for (let at = 0; at < bytes.length; at += HASH_UNIT) gmac(bytes.subarray(at, at + HASH_UNIT)).copy(hashes, (at / HASH_UNIT) * 16);
  const crcs: number[] = [];
  for (let at = 0; at < bytes.length; at += chunk) crcs.push(crc32c(bytes.subarray(at, at + chunk)));
  return { hashes, crcs };
}

function withFds<T>(image: string, run: (ramFd: number, imageFd: number) => T): T {
  const ramFd = fs.openSync(ram, 'r');
  const imageFd = fs.openSync(image, 'w+', 0o600);
  try {
    return run(ramFd, imageFd);
  } finally {
    fs.closeSync(ramFd);
    fs.closeSync(imageFd);
  }
}

beforeAll(() => {
  dir = fs.mkdtempSync('/dev/shm/iohelper-ramread-');
  ram = path.join(dir, 'ram');
  makeRam(ram);
  ramBytes = fs.readFileSync(ram);
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('saveRange: pread and mmap write the same image', () => {
  const chunk = M;
  let want: ReturnType<typeof references>;
  beforeAll(() => (want = references(ramBytes, chunk)));

  function saveWith(mode: 'pread' | 'mmap' | undefined, zeroUnit: number, maxIo: number) {
    const image = path.join(dir, `range-${mode}-${zeroUnit}-${maxIo}`);
    return withFds(image, (ramFd, imageFd) => {
      const checksums = new Uint32Array(Math.ceil(RAM_SIZE / chunk));
      const hashes = new Uint8Array((RAM_SIZE / HASH_UNIT) * 16);
      const job: RangeJob = { ramFd, ramOffset: 0, length: RAM_SIZE, imageFd, imageOffset: 0, chunkSize: chunk, zeroUnit, maxIo, minHole: 64 * K, checksums, hashes, hashKey: key, hashUnit: HASH_UNIT, ramRead: mode };
      const r = native.saveRange(job);
      const bytes = Buffer.alloc(RAM_SIZE);
      fs.readSync(imageFd, bytes, 0, RAM_SIZE, 0);
      return { r, bytes, checksums: [...checksums], hashes: Buffer.from(hashes) };
    });
  }

  it.each([
    [4 * K, 8 * M],
    [64 * K, 8 * M],
    [64 * K, M],
  ])('zeroUnit %i, maxIo %i: identical bytes, CRCs and hashes, all equal to the RAM\'s', (zeroUnit, maxIo) => {
    const byPread = saveWith('pread', zeroUnit, maxIo);
    const byMmap = saveWith('mmap', zeroUnit, maxIo);
    expect(byPread.r.ramRead).toBe('pread');
    expect(byMmap.r.ramRead).toBe('mmap');
    expect(byPread.bytes.equals(ramBytes)).toBe(true);
    expect(byMmap.bytes.equals(byPread.bytes)).toBe(true);
    expect(byPread.r.dataBytes).toBe(byMmap.r.dataBytes);
    expect(byPread.checksums).toEqual(want.crcs);
    expect(byMmap.checksums).toEqual(want.crcs);
    expect(byPread.hashes.equals(want.hashes)).toBe(true);
    expect(byMmap.hashes.equals(want.hashes)).toBe(true);
  });

  it('a job that names no path reads through the mapping, as before the reader had two', () => {
    expect(saveWith(undefined, 4 * K, 8 * M).r.ramRead).toBe('mmap');
  });

  it('a job naming no read path is refused', () => {
    withFds(path.join(dir, 'refused'), (ramFd, imageFd) => {
      expect(() => native.saveRange({ ramFd, ramOffset: 0, length: RAM_SIZE, imageFd, imageOffset: 0, ramRead: 'auto' as 'mmap' })).toThrow(/job\.ramRead must be "pread" or "mmap"/);
      expect(fs.fstatSync(imageFd).size).toBe(0);
    });
  });
});

describe('saveChunks: pread and mmap write the same chunks (compressed, raw, delta)', () => {
  function saveWith(mode: 'pread' | 'mmap', chunkSize: number, level: number, baseHashes?: Uint8Array) {
    const image = path.join(dir, `chunks-${mode}-${chunkSize}-${level}`);
    return withFds(image, (ramFd, imageFd) => {
      const chunks = Math.ceil(RAM_SIZE / chunkSize);
      const cursor = new BigInt64Array(new SharedArrayBuffer(8));
      const index = new Uint8Array(chunks * INDEX_ENTRY);
      const hashes = new Uint8Array((RAM_SIZE / HASH_UNIT) * 16);
      const job: ChunkJob = { ramFd, ramOffset: 0, length: RAM_SIZE, imageFd, chunkSize, unit: 4096, index, level, cursor, hashes, hashKey: key, hashUnit: HASH_UNIT, baseHashes, ramRead: mode };
      const r = native.saveChunks(job);
      const area = Buffer.alloc(Number(cursor[0]));
      fs.readSync(imageFd, area, 0, area.length, 0);
      return { r, area, index: Buffer.from(index), hashes: Buffer.from(hashes) };
    });
  }

  /** Each chunk's entry: CRC of the RAM's chunk; zero chunks kind 0, stored raw chunks equal to the RAM. */
  function expectMatchesRam(s: ReturnType<typeof saveWith>, chunkSize: number, level: number): void {
    for (let c = 0; c * chunkSize < RAM_SIZE; c++) {
      const want = ramBytes.subarray(c * chunkSize, (c + 1) * chunkSize);
      const e = s.index.subarray(c * INDEX_ENTRY);
      const [offset, stored, crc, kind] = [Number(e.readBigUInt64LE(0)), e.readUInt32LE(8), e.readUInt32LE(12), e.readUInt32LE(16)];
      expect(crc).toBe(crc32c(want));
      if (want.every((b) => b === 0)) expect(kind).toBe(0);
      else if (kind === 1) expect(s.area.subarray(offset, offset + stored).equals(want)).toBe(true);
      else expect([level !== 0 ? 2 : 1, 3]).toContain(kind);
    }
  }

  it.each([
    [M, 0],
    [256 * K, 1],
    [4 * K, 0],
  ])('chunkSize %i, level %i', (chunkSize, level) => {
    if (level !== 0 && native.zstd === null) return; // built without libzstd: the raw cases still run
    const byPread = saveWith('pread', chunkSize, level);
    const byMmap = saveWith('mmap', chunkSize, level);
    expect([byPread.r.ramRead, byMmap.r.ramRead]).toEqual(['pread', 'mmap']);
    expect(byMmap.area.equals(byPread.area)).toBe(true);
    expect(byMmap.index.equals(byPread.index)).toBe(true);
    expect(byPread.hashes.equals(references(ramBytes, chunkSize).hashes)).toBe(true);
    expect(byMmap.hashes.equals(byPread.hashes)).toBe(true);
    expectMatchesRam(byPread, chunkSize, level);
  });

  it('a delta (chunkSize = hash unit, base hashes) stores the same units either way', () => {
    // The base: the RAM with every other unit's first byte flipped, so half the units differ.
    const base = Buffer.from(ramBytes);
    for (let at = 0; at < RAM_SIZE; at += 2 * HASH_UNIT) base[at] ^= 0xff;
    const baseHashes = new Uint8Array(references(base, HASH_UNIT).hashes);
    const byPread = saveWith('pread', HASH_UNIT, 0, baseHashes);
    const byMmap = saveWith('mmap', HASH_UNIT, 0, baseHashes);
    expect(byMmap.area.equals(byPread.area)).toBe(true);
    expect(byMmap.index.equals(byPread.index)).toBe(true);
    const kinds = (s: ReturnType<typeof saveWith>) => Array.from({ length: RAM_SIZE / HASH_UNIT }, (_, c) => s.index.readUInt32LE(c * INDEX_ENTRY + 16));
    // Unchanged units are BASE (3) unless zero (0) in both; changed ones are stored (1).
    const want = kinds(byPread).map((_, c) => {
      const unit = ramBytes.subarray(c * HASH_UNIT, (c + 1) * HASH_UNIT);
      if (unit.every((b) => b === 0)) return 0;
      return c % 2 === 0 ? 1 : 3;
    });
    expect(kinds(byPread)).toEqual(want);
    expectMatchesRam(byPread, HASH_UNIT, 0);
  });
});

describe('auto: the path a sample measures cheaper', () => {
  it('ramReadCost times both paths in CPU time and refuses what it cannot sample', () => {
    const fd = fs.openSync(ram, 'r');
    try {
      const cost = native.ramReadCost(fd, 0, M);
      expect(cost.mmapNs).toBeGreaterThan(0);
      expect(cost.preadNs).toBeGreaterThan(0);
      expect(() => native.ramReadCost(fd, 100, M)).toThrow(/multiples of 4096/);
      expect(() => native.ramReadCost(fd, 0, 128 * M)).toThrow(/length/);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('chooseRamRead keeps a forced path, maps hugetlbfs, maps an all-hole file, and otherwise measures', () => {
    const open = (file: string, pageSize = 4096) => ({ name: 'pc.ram', label: file, fd: fs.openSync(file, 'r'), size: fs.statSync(file).size, pageSize, close() {} });
    const r = open(ram);
    const empty = path.join(dir, 'empty');
    fs.writeFileSync(empty, '');
    fs.truncateSync(empty, 4 * M);
    const hole = open(empty);
    try {
      expect(chooseRamRead(r, 'pread')).toBe('pread');
      expect(chooseRamRead(r, 'mmap')).toBe('mmap');
      expect(chooseRamRead({ ...r, pageSize: 2 * M }, 'auto')).toBe('mmap');
      expect(chooseRamRead(hole, 'auto')).toBe('mmap');
      expect(['pread', 'mmap']).toContain(chooseRamRead(r, 'auto'));
    } finally {
      fs.closeSync(r.fd);
      fs.closeSync(hole.fd);
    }
  });
});

describe('the forced read path, from the library and the command', () => {
  const deviceState = crypto.randomBytes(5000);

  function iohelper(args: string[]) {
    const r = spawnSync(process.execPath, [IOHELPER, ...args], { input: deviceState, cwd: dir, maxBuffer: 64 * M });
    return { status: r.status, stderr: r.stderr.toString() };
  }

  it.each(['pread', 'mmap'])('save --ram-read=%s reports the path in --progress and restores the same RAM', (mode) => {
    const image = `cli-${mode}.img`;
    const r = iohelper(['save', '--no-stream-check', '--image', image, '--ram', `pc.ram=${ram}`, `--ram-read=${mode}`, '--progress', '--compress=zstd:0']);
    expect(r.status).toBe(0);
    const last = JSON.parse(r.stderr.trim().split('\n').pop()!);
    expect(last).toMatchObject({ done: true, ramRead: mode });
    const out = path.join(dir, `restored-${mode}`);
    expect(iohelper(['restore', '--image', image, '--ram', `pc.ram=${out}`]).status).toBe(0);
    expect(fs.readFileSync(out).equals(ramBytes)).toBe(true);
  });

  it('--ram-read naming no path is a usage error: one line, exit 1, nothing written', () => {
    const r = iohelper(['save', '--no-stream-check', '--image', 'bad.img', '--ram', `pc.ram=${ram}`, '--ram-read=fast']);
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/--ram-read: 'fast' is not one of auto, pread, mmap/);
    expect(fs.existsSync(path.join(dir, 'bad.img'))).toBe(false);
  });

  it('save() refuses a ramRead naming no path before anything is written', async () => {
    const image = path.join(dir, 'lib.img');
    fs.writeFileSync(image, 'old');
    const fd = fs.openSync(image, 'r+');
    try {
      await expect(save({ imageFd: fd, ram: [{ name: 'pc.ram', path: ram }], ramRead: 'fast' as 'mmap' })).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/ramRead "fast" is not one of auto, pread, mmap/) });
    } finally {
      fs.closeSync(fd);
    }
    expect(fs.readFileSync(image, 'utf8')).toBe('old');
  });
});
