/** The addon's system-call wrappers on plain files: results, and errors shaped like Node's fs errors. */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { native } from '../src/native';

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-native-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const file = (name: string) => path.join(dir, name);

test('errors carry code, negative errno and syscall like fs errors', () => {
  let err: (Error & { code?: string; errno?: number; syscall?: string }) | undefined;
  try {
    native.pread(987, new Uint8Array(8), 0);
  } catch (e) {
    err = e as typeof err;
  }
  expect(err?.constructor.name).toBe('Error'); // the addon's realm, not jest's sandbox
  expect(err).toMatchObject({ code: 'EBADF', errno: -9, syscall: 'pread' });
  expect(err!.message).toBe('EBADF: bad file descriptor, pread');
});

test('allocAligned gives zeroed memory of the asked size and refuses bad alignments', () => {
  const b = new Uint8Array(native.allocAligned(8192, 4096));
  expect(b.length).toBe(8192);
  expect(b.every((x) => x === 0)).toBe(true);
  expect(() => native.allocAligned(10, 3000)).toThrow(/alignment a power of two/);
});

test('pwrite/pread at 64-bit offsets, ftruncate', () => {
  const fd = fs.openSync(file('rw'), 'w+');
  const big = 5 * 2 ** 30 + 3;
  expect(native.pwrite(fd, Buffer.from('hello'), big)).toBe(5);
  const b = Buffer.alloc(5);
  expect(native.pread(fd, b, big)).toBe(5);
  expect(b.toString()).toBe('hello');
  native.ftruncate(fd, 4096);
  expect(fs.fstatSync(fd).size).toBe(4096);
  fs.closeSync(fd);
});

test('lseek SEEK_DATA/SEEK_HOLE find data in a sparse file and -1 past it', () => {
  const fd = fs.openSync(file('sparse'), 'w+');
  fs.ftruncateSync(fd, 64 << 20);
  fs.writeSync(fd, Buffer.alloc(4096, 1), 0, 4096, 32 << 20);
  const { SEEK_DATA, SEEK_HOLE } = native.constants;
  expect(native.lseek(fd, 0, SEEK_DATA)).toBe(32 << 20);
  expect(native.lseek(fd, 32 << 20, SEEK_HOLE)).toBe((32 << 20) + 4096);
  expect(native.lseek(fd, (32 << 20) + 4096, SEEK_DATA)).toBe(-1);
  fs.closeSync(fd);
});

test('bindings nothing uses are gone (mmap/munmap could unmap a later mapping twice)', () => {
  for (const name of ['mmap', 'munmap', 'preadv', 'pwritev', 'fallocate', 'sendfile', 'copyFileRange', 'getPipeSize', 'fadvise']) {
    expect((native as unknown as Record<string, unknown>)[name]).toBeUndefined();
  }
});

test('pipes: pipe(), F_SETPIPE_SZ, read/write, O_DIRECT flags via getFlags/setFlags', () => {
  const [r, w] = native.pipe();
  expect(native.setPipeSize(w, 1 << 20)).toBeGreaterThanOrEqual(1 << 20);
  expect(native.write(w, Buffer.from('xyz'))).toBe(3);
  const b = Buffer.alloc(3);
  expect(native.read(r, b)).toBe(3);
  expect(b.toString()).toBe('xyz');
  fs.closeSync(r);
  fs.closeSync(w);
  const fd = fs.openSync(file('d'), 'w');
  native.setFlags(fd, native.getFlags(fd) | native.constants.O_DIRECT);
  expect(native.getFlags(fd) & native.constants.O_DIRECT).toBeTruthy();
  const dio = native.dioAlign(fd);
  if (dio) expect(dio.offsetAlign & (dio.offsetAlign - 1)).toBe(0);
  fs.closeSync(fd);
});

test('crc32c matches the standard check value and saveRange fills per-chunk checksums', () => {
  expect(native.crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
  const ram = fs.openSync(file('ram'), 'w+');
  fs.ftruncateSync(ram, 1 << 20);
  fs.writeSync(ram, Buffer.alloc(4096, 9), 0, 4096, 8192);
  const img = fs.openSync(file('img'), 'w+');
  const sums = new Uint32Array(4);
  const r = native.saveRange({ ramFd: ram, ramOffset: 0, length: 1 << 20, imageFd: img, imageOffset: 0, chunkSize: 256 << 10, checksums: sums });
  expect(r.dataBytes).toBe(4096);
  const chunk0 = Buffer.alloc(256 << 10);
  chunk0.fill(9, 8192, 8192 + 4096);
  expect(sums[0]).toBe(native.crc32c(chunk0));
  expect(sums[1]).toBe(native.crc32c(Buffer.alloc(256 << 10)));
  fs.closeSync(ram);
  fs.closeSync(img);
});

test('crc32c continues from a previous result, so a long range is checked in pieces', () => {
  const a = crypto.randomBytes(10000);
  const b = crypto.randomBytes(4097);
  expect(native.crc32c(b, native.crc32c(a))).toBe(native.crc32c(Buffer.concat([a, b])));
  expect(native.crc32c(Buffer.from('6789'), native.crc32c(Buffer.from('12345')))).toBe(0xe3069283);
});

test('streamCopy reports the CRC-32C of the bytes it moved, both ways', async () => {
  const data = crypto.randomBytes(3 * 1024 * 1024 + 77); // several buffers and a short tail
  const fd = fs.openSync(file('stream-crc'), 'w+');
  try {
    const [r, w] = native.pipe();
    const feeding = new Promise<void>((resolve, reject) => fs.write(w, data, (e) => (e ? reject(e) : resolve())));
    const options = { pipeFd: r, fileFd: fd, offset: 0, bufferSize: 1 << 20, align: 4096, threads: 2, slots: 4, padTail: false, dropCache: false };
    const saved = native.streamCopy({ ...options, toFile: true }, new BigUint64Array(2));
    await feeding;
    fs.closeSync(w);
    expect(await saved).toMatchObject({ bytes: data.length, crc: native.crc32c(data) });
    fs.closeSync(r);
    const [r2, w2] = native.pipe();
    const chunks: Buffer[] = [];
    const drained = new Promise<void>((resolve) => fs.createReadStream('', { fd: r2 }).on('data', (c) => chunks.push(c as Buffer)).on('close', resolve));
    const sent = await native.streamCopy({ ...options, pipeFd: w2, toFile: false }, new BigUint64Array(2));
    fs.closeSync(w2);
    await drained;
    expect(sent).toMatchObject({ bytes: data.length, crc: native.crc32c(data) });
    expect(Buffer.concat(chunks).equals(data)).toBe(true);
  } finally {
    fs.closeSync(fd);
  }
});

test('crc32c over three interleaved streams (inputs of 12 KiB and more) equals the bitwise definition at every length and alignment', () => {
  const bitwise = (b: Uint8Array) => {
    let c = 0xffffffff;
    for (const x of b) {
      c ^= x;
      for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    }
    return (~c) >>> 0;
  };
  const data = crypto.randomBytes(64 * 1024 + 7);
  for (const [start, len] of [[0, 12288], [1, 12288], [3, 12289], [0, 24575], [5, 40000], [0, 65536], [7, 65536]]) {
    const piece = data.subarray(start, start + len);
    expect(native.crc32c(piece)).toBe(bitwise(piece));
  }
});
