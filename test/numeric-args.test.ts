/**
 * Numbers are checked once in TypeScript (EINVAL naming the option) and refused again by the
 * addon (TypeError/RangeError) instead of being cast: NaN, fractions, infinities and numbers
 * out of range never reach a system call. Each test failed before the checks: NaN inflight gave
 * a copy that never settled, 2.5 was truncated, allocAligned(NaN) said ENOMEM, readRanges(1.9)
 * read fd 1, and every refused native streamCopy leaked two fds.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { native } from '../src/native';
import { streamCopy, StreamCopyRequest } from '../src/stream/copy';

let dir: string;
beforeAll(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-numeric-'))));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Settles within 5 s or fails the test: the old code never settled (and its thread blocked exit). */
function settled<T>(p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('still pending after 5 s')), 5000)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

describe('streamCopy (library) refuses numbers it cannot use exactly, with EINVAL naming the option', () => {
  const bad: Array<[keyof StreamCopyRequest, unknown]> = [
    ['inflight', NaN],
    ['inflight', 2.5],
    ['inflight', 0],
    ['inflight', 65],
    ['inflight', Infinity],
    ['inflight', '2'],
    ['bufferSize', NaN],
    ['bufferSize', 98304.5],
    ['bufferSize', 4095],
    ['bufferSize', 2 ** 53],
    ['progressIntervalMs', NaN],
    ['progressIntervalMs', -1],
    ['fileFd', 1.9],
    ['fileFd', -1],
    ['pipeFd', 1.9],
    ['pipeFd', NaN],
  ];
  test.each(bad)('%s: %p', async (option, value) => {
    const [r, w] = native.pipe();
    const fileFd = fs.openSync(path.join(dir, 'target'), 'w');
    const req = { fileFd, pipeFd: r, fileName: 'target', [option]: value } as StreamCopyRequest;
    try {
      await expect(settled(streamCopy(req))).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringContaining(String(option)) });
    } finally {
      for (const fd of [r, w, fileFd]) fs.closeSync(fd);
    }
  });
});

describe('the addon refuses what it cannot represent instead of casting', () => {
  const base = { toFile: true, offset: 0, bufferSize: 65536, align: 4096, threads: 2, slots: 4, padTail: false, dropCache: false };

  test.each([
    ['threads', NaN],
    ['threads', 2.5],
    ['slots', NaN],
    ['bufferSize', 98304.5],
    ['offset', 1.5],
    ['offset', Infinity],
    ['align', NaN],
    ['pipeFd', 1.9],
    ['fileFd', NaN],
  ])('streamCopy option %s: %p', (option, value) => {
    const [r, w] = native.pipe();
    const fileFd = fs.openSync(path.join(dir, 'native-target'), 'w');
    try {
      expect(() => native.streamCopy({ ...base, pipeFd: r, fileFd, [option]: value }, new BigUint64Array(2))).toThrow(new RegExp(`${option}`));
    } finally {
      for (const fd of [r, w, fileFd]) fs.closeSync(fd);
    }
  });

  test('allocAligned(NaN) is a TypeError, not ENOMEM; fractions and negative sizes are refused', () => {
    expect(thrown(() => native.allocAligned(NaN, 4096)).name).toBe('TypeError');
    expect(thrown(() => native.allocAligned(4096.5, 4096)).name).toBe('TypeError');
    expect(thrown(() => native.allocAligned(4096, 4096.5)).name).toBe('TypeError');
    expect(thrown(() => native.allocAligned(-1, 4096)).name).toBe('RangeError');
  });

  test('readRanges(1.9, …) is refused instead of reading fd 1', () => {
    expect(thrown(() => native.readRanges(1.9, new Float64Array([0, 4096]))).name).toBe('TypeError');
    expect(thrown(() => native.readRanges(NaN, new Float64Array([0, 4096]))).name).toBe('TypeError');
  });

  test('fds, flags, sizes and levels: fractions and NaN are refused everywhere', () => {
    const fd = fs.openSync(path.join(dir, 'plain'), 'w+');
    fs.ftruncateSync(fd, 8192); // were a job accepted, it would map real pages
    try {
      expect(thrown(() => native.setFlags(fd, 2048.5)).name).toBe('TypeError');
      expect(thrown(() => native.setFlags(fd, 2 ** 40)).name).toBe('RangeError');
      expect(thrown(() => native.setPipeSize(fd, 2 ** 40)).name).toBe('RangeError');
      expect(thrown(() => native.lseek(fd, 0, 3.5)).name).toBe('TypeError');
      expect(thrown(() => native.sendWithFds(fd, Buffer.from('x'), [1.5], 1000)).name).toBe('TypeError');
      expect(thrown(() => native.sendWithFds(fd, Buffer.from('x'), [fd], 0.5)).name).toBe('TypeError');
      expect(thrown(() => native.sendWithFds(fd, Buffer.from('x'), [fd], NaN)).name).toBe('TypeError');
      const index = new Uint8Array(24);
      const cursor = new BigInt64Array(1);
      expect(() => native.saveChunks({ ramFd: fd, ramOffset: 0, length: 4096, imageFd: fd, chunkSize: 4096, unit: 4096, index, cursor, level: 2.5 })).toThrow(/level/);
    } finally {
      fs.closeSync(fd);
    }
  });
});

/** The error fn throws: the addon's errors come from its own realm, so they are told apart by name, not instanceof. */
function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (e) {
    return e as Error;
  }
  throw new Error('did not throw');
}

function openFds(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

test('100 refused native streamCopy calls leave no fd behind', () => {
  const [r, w] = native.pipe();
  const fileFd = fs.openSync(path.join(dir, 'leak'), 'w');
  const before = openFds();
  for (let i = 0; i < 100; i++) {
    // align 3000 is not a power of two: refused after the options were read
    expect(() =>
      native.streamCopy({ toFile: true, pipeFd: r, fileFd, offset: 0, bufferSize: 65536, align: 3000, threads: 2, slots: 4, padTail: false, dropCache: false }, new BigUint64Array(2)),
    ).toThrow(/align/);
  }
  expect(openFds()).toBe(before);
  for (const fd of [r, w, fileFd]) fs.closeSync(fd);
});
