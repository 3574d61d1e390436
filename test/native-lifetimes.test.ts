/**
 * The addon owns what its threads use, reports every error it meets, and never touches a RAM
 * file's holes. Each test failed on the addon before the fix.
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { native } from '../src/native';

let dir: string;
beforeAll(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-lifetimes-'))));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const copyOptions = { offset: 0, bufferSize: 65536, align: 4096, threads: 2, slots: 4, padTail: false, dropCache: false };

test('streamCopy works on its own duplicates: fds closed and reused by JavaScript meanwhile get no bytes', async () => {
  const [r, w] = native.pipe();
  const target = path.join(dir, 'target');
  const fileFd = fs.openSync(target, 'w');
  const copy = native.streamCopy({ ...copyOptions, toFile: true, pipeFd: r, fileFd }, new BigUint64Array(2));
  // The caller closes its fds at once (as a failing flow used to); new files take the numbers.
  fs.closeSync(fileFd);
  fs.closeSync(r);
  const reusedA = fs.openSync(path.join(dir, 'reused-a'), 'w');
  const reusedB = fs.openSync(path.join(dir, 'reused-b'), 'w');
  expect([reusedA, reusedB].sort()).toEqual([fileFd, r].sort());
  const data = crypto.randomBytes(1 << 20);
  for (let off = 0; off < data.length; ) off += native.write(w, data.subarray(off, off + 65536));
  fs.closeSync(w);
  const result = await copy;
  fs.closeSync(reusedA);
  fs.closeSync(reusedB);
  expect(result.bytes).toBe(data.length);
  expect(fs.readFileSync(target).equals(data)).toBe(true);
  expect(fs.statSync(path.join(dir, 'reused-a')).size).toBe(0);
  expect(fs.statSync(path.join(dir, 'reused-b')).size).toBe(0);
});

test('a failing sync_file_range (buffered fallback) fails the copy instead of being ignored', async () => {
  const [r, w] = native.pipe();
  const devNull = fs.openSync('/dev/null', 'w'); // pwrite works; sync_file_range says ESPIPE
  const copy = native.streamCopy({ ...copyOptions, toFile: true, pipeFd: r, fileFd: devNull, dropCache: true }, new BigUint64Array(2));
  native.write(w, Buffer.alloc(60000, 1)); // less than the pipe holds: this thread must not block
  fs.closeSync(w);
  await expect(copy).rejects.toMatchObject({ code: 'ESPIPE', syscall: 'sync_file_range' });
  fs.closeSync(r);
  fs.closeSync(devNull);
});

test('the first error wakes the other side: a failed pwrite rejects while the producer stays quiet', async () => {
  const [r, w] = native.pipe();
  native.setPipeSize(w, 1 << 20);
  const readOnly = fs.openSync(path.join(dir, 'read-only'), 'w+');
  const fileFd = fs.openSync(path.join(dir, 'read-only'), 'r'); // pwrite answers EBADF
  const copy = native.streamCopy({ ...copyOptions, toFile: true, pipeFd: r, fileFd }, new BigUint64Array(2));
  // One full buffer goes to a writer (which fails); the reader then waits for the rest of the
  // second buffer from a producer that keeps its end open and sends nothing more.
  native.write(w, Buffer.alloc(copyOptions.bufferSize + 100, 7));
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('still pending after 5 s')), 5000)));
  try {
    await expect(Promise.race([copy, late])).rejects.toMatchObject({ code: 'EBADF', syscall: 'pwrite' });
  } finally {
    clearTimeout(timer);
    fs.closeSync(w); // ends the copy if it was still waiting
    await copy.catch(() => undefined);
    for (const fd of [r, readOnly, fileFd]) fs.closeSync(fd);
  }
});

test('streamCopy refuses rings over 256 MiB, the limit the TypeScript layer applies too', () => {
  const [r, w] = native.pipe();
  const fd = fs.openSync(path.join(dir, 'ring'), 'w');
  expect(() => native.streamCopy({ ...copyOptions, toFile: true, pipeFd: r, fileFd: fd, bufferSize: 64 << 20, slots: 8 }, new BigUint64Array(2))).toThrow(/over the ring's limit \(256 MiB\)/);
  expect(() => native.streamCopy({ ...copyOptions, toFile: true, pipeFd: r, fileFd: fd, bufferSize: 512 << 20 }, new BigUint64Array(2))).toThrow(/out of range/);
  for (const f of [r, w, fd]) fs.closeSync(f);
});

test('saveRange with a 64 KiB zero unit never reads a tmpfs hole (the RAM file allocates nothing) and saves the same bytes', () => {
  const ram = path.join(fs.mkdtempSync('/dev/shm/iohelper-lifetimes-'), 'ram');
  const size = 8 << 20;
  const ramFd = fs.openSync(ram, 'w+');
  fs.ftruncateSync(ramFd, size);
  // Data islands on 4 KiB boundaries that 64 KiB units straddle, some of them zero.
  const islands = [4096, 69632, 135168 + 8192, 3 << 20, (5 << 20) + 61440];
  for (const [i, at] of islands.entries()) fs.writeSync(ramFd, i === 2 ? Buffer.alloc(4096) : crypto.randomBytes(4096), 0, 4096, at);
  const blocksBefore = fs.fstatSync(ramFd).blocks;
  const images = [65536, 4096].map((zeroUnit) => {
    const image = path.join(dir, `image-${zeroUnit}`);
    const imageFd = fs.openSync(image, 'w+');
    fs.ftruncateSync(imageFd, size);
    const checksums = new Uint32Array(size / (1 << 20));
    native.saveRange({ ramFd, ramOffset: 0, length: size, imageFd, imageOffset: 0, chunkSize: 1 << 20, zeroUnit, maxIo: 1 << 20, minHole: zeroUnit, checksums });
    fs.closeSync(imageFd);
    return { image, checksums };
  });
  expect(fs.fstatSync(ramFd).blocks).toBe(blocksBefore);
  fs.closeSync(ramFd);
  expect(fs.readFileSync(images[0].image).equals(fs.readFileSync(ram))).toBe(true);
  expect([...images[0].checksums]).toEqual([...images[1].checksums]);
  fs.rmSync(path.dirname(ram), { recursive: true });
});
