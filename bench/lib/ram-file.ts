/**
 * Synthetic guest RAM files: a deterministic page pattern with a share of zero pages, and
 * bounded-memory compare and hash. Used by the demo, the benchmarks and the tests.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';

const MiB = 1024 * 1024;
const PAGE = 4096;
const CHUNK = 4 * MiB;

/** Creates (or truncates) a sparse file of `size` bytes. */
export function createRamFile(filePath: string, size: number): void {
  const fd = fs.openSync(filePath, 'w');
  try {
    fs.ftruncateSync(fd, size);
  } finally {
    fs.closeSync(fd);
  }
}

/** mulberry32: a tiny, fast, seedable 32-bit PRNG returning uint32 values. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/** How zero pages are laid out in a synthetic RAM file. */
export interface PatternOptions {
  /** Share of 4 KiB pages that are zero (0 to 1). */
  zeroFraction?: number;
  /**
   * Mean length, in pages, of a run of zero pages. 1 (the default) draws each page on its own
   * (zero pages scattered i.i.d., the worst case for page-granular skippers); 256 and more give
   * MiB-scale runs, closer to what real guests leave.
   */
  zeroRunPages?: number;
}

/**
 * Overwrites the whole file (its current size) with a deterministic pattern, 4 MiB at a time:
 * about `zeroFraction` of the 4 KiB pages are zero, the others are pseudo-random bytes from
 * `seed` with the page index stamped into their first 8 bytes, so no two pages are equal.
 * A number as the third argument is the zero fraction (pages drawn one by one).
 */
export function fillPattern(filePath: string, seed: number, options: number | PatternOptions = 0.25): { pages: number; zeroPages: number } {
  const { zeroFraction = 0.25, zeroRunPages = 1 } = typeof options === 'number' ? { zeroFraction: options } : options;
  if (!(zeroFraction >= 0 && zeroFraction < 1) || !(zeroRunPages >= 1)) throw new RangeError(`fillPattern: zeroFraction ${zeroFraction} must be in [0, 1), zeroRunPages ${zeroRunPages} >= 1`);
  const random = Buffer.allocUnsafe(CHUNK);
  const words = new Uint32Array(random.buffer, random.byteOffset, CHUNK / 4);
  const nextWord = mulberry32(seed);
  for (let i = 0; i < words.length; i++) words[i] = nextWord();

  const isZero = zeroRunPages === 1 ? scatteredZeros(seed, zeroFraction) : clusteredZeros(seed, zeroFraction, zeroRunPages);
  const chunk = Buffer.allocUnsafe(CHUNK);
  const fd = fs.openSync(filePath, 'r+');
  let pages = 0;
  let zeroPages = 0;
  try {
    const size = fs.fstatSync(fd).size;
    for (let pos = 0; pos < size; pos += CHUNK) {
      const len = Math.min(CHUNK, size - pos);
      random.copy(chunk, 0, 0, len);
      for (let off = 0; off < len; off += PAGE, pages++) {
        if (isZero()) {
          chunk.fill(0, off, Math.min(off + PAGE, len));
          zeroPages++;
        } else if (off + 8 <= len) {
          chunk.writeUInt32LE((pages ^ seed) >>> 0, off);
          chunk.writeUInt32LE(Math.floor(pages / 2 ** 32), off + 4);
        }
      }
      fs.writeSync(fd, chunk, 0, len, pos);
    }
  } finally {
    fs.closeSync(fd);
  }
  return { pages, zeroPages };
}

/** Each page zero with probability `fraction`, independently. */
function scatteredZeros(seed: number, fraction: number): () => boolean {
  const next = mulberry32(seed ^ 0x9e3779b9);
  const threshold = fraction * 2 ** 32;
  return () => next() < threshold;
}

/**
 * Alternating runs of data and zero pages; zero runs have lengths uniform in [1, 2 * mean - 1]
 * pages, data runs a mean chosen so that zero pages are `fraction` of all pages.
 */
function clusteredZeros(seed: number, fraction: number, meanZeroRun: number): () => boolean {
  const next = mulberry32(seed ^ 0x85ebca6b);
  const meanDataRun = fraction > 0 ? (meanZeroRun * (1 - fraction)) / fraction : Infinity;
  const draw = (mean: number) => 1 + Math.floor((next() / 2 ** 32) * (2 * mean - 1));
  let zero = false;
  let left = Number.isFinite(meanDataRun) ? draw(meanDataRun) : Infinity;
  return () => {
    while (left === 0) {
      zero = !zero;
      left = draw(zero ? meanZeroRun : meanDataRun);
    }
    left--;
    return zero;
  };
}

/** Compares two files in 4 MiB chunks; `firstDiff` is the first differing offset (or the shorter length). */
export async function filesEqual(a: string, b: string): Promise<{ equal: boolean; firstDiff?: number }> {
  const [fa, fb] = await Promise.all([fs.promises.open(a, 'r'), fs.promises.open(b, 'r')]);
  try {
    const [sa, sb] = await Promise.all([fa.stat(), fb.stat()]);
    const size = Math.min(sa.size, sb.size);
    const ba = Buffer.allocUnsafe(CHUNK);
    const bb = Buffer.allocUnsafe(CHUNK);
    for (let pos = 0; pos < size; pos += CHUNK) {
      const len = Math.min(CHUNK, size - pos);
      await Promise.all([readFully(fa, ba, len, pos), readFully(fb, bb, len, pos)]);
      const ca = ba.subarray(0, len);
      const cb = bb.subarray(0, len);
      if (!ca.equals(cb)) {
        let i = 0;
        while (ca[i] === cb[i]) i++;
        return { equal: false, firstDiff: pos + i };
      }
    }
    return sa.size === sb.size ? { equal: true } : { equal: false, firstDiff: size };
  } finally {
    await Promise.all([fa.close(), fb.close()]);
  }
}

async function readFully(fh: fs.promises.FileHandle, buf: Buffer, len: number, pos: number): Promise<void> {
  for (let done = 0; done < len; ) {
    const { bytesRead } = await fh.read(buf, done, len - done, pos + done);
    if (bytesRead === 0) throw new Error(`unexpected end of file at ${pos + done}`);
    done += bytesRead;
  }
}

/** Hex SHA-256 of a file, streamed in 4 MiB reads. */
export async function sha256File(filePath: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of fs.createReadStream(filePath, { highWaterMark: CHUNK })) hash.update(chunk);
  return hash.digest('hex');
}
