/**
 * The working-set file (docs/FORMAT.md, "Working-set file"): the image pages a lazily restored
 * guest touched, in first-touch order, kept beside the image as IMAGE.ws and bound to that
 * image by its size and header CRC. Encoder, validating decoder, and the coalescing of its
 * ranges into the large reads a prefetch makes. Pure: bytes in, bytes out.
 */
import { native } from '../../native';
import { BlockEntry, ImageHeader } from '../../image/format';

const WS_MAGIC = 'IOHWS001';
const WS_VERSION = 1;
const WS_HEADER = 48;
const WS_RANGE = 16;
/** A reader holds the ranges in memory: 2^20 of them (16 MiB). */
export const MAX_WS_RANGES = 2 ** 20;
/** The largest legal working-set file (W1): a reader never reads more. */
export const MAX_WS_FILE_BYTES = WS_HEADER + WS_RANGE * MAX_WS_RANGES + 4;
const PAGE = 4096;

export interface WorkingSet {
  imageSize: number;
  imageHeaderCrc: number;
  recordedMs: number;
  windowMs: number;
  /** Image file ranges [offset, offset + length), page-aligned, in first-touch order. */
  ranges: Array<{ offset: number; length: number }>;
}

export class WorkingSetError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WorkingSetError';
  }
}

/** The working-set file of an image: IMAGE.ws beside it. */
export const workingSetPath = (image: string) => `${image}.ws`;

export function encodeWorkingSet(ws: WorkingSet): Buffer {
  if (ws.ranges.length > MAX_WS_RANGES) throw new RangeError(`${ws.ranges.length} working-set ranges: at most ${MAX_WS_RANGES}`);
  const b = Buffer.alloc(WS_HEADER + ws.ranges.length * WS_RANGE + 4);
  b.write(WS_MAGIC, 0, 'latin1');
  b.writeUInt32LE(WS_VERSION, 8);
  b.writeUInt32LE(ws.ranges.length, 12);
  b.writeBigUInt64LE(BigInt(ws.imageSize), 16);
  b.writeUInt32LE(ws.imageHeaderCrc >>> 0, 24);
  b.writeUInt32LE(PAGE, 28);
  b.writeBigUInt64LE(BigInt(ws.recordedMs), 32);
  b.writeUInt32LE(ws.windowMs, 40);
  ws.ranges.forEach((r, i) => {
    b.writeBigUInt64LE(BigInt(r.offset), WS_HEADER + i * WS_RANGE);
    b.writeBigUInt64LE(BigInt(r.length), WS_HEADER + i * WS_RANGE + 8);
  });
  b.writeUInt32LE(native.crc32c(b.subarray(0, b.length - 4)), b.length - 4);
  return b;
}

/**
 * Decodes a working-set file and checks it against the image it claims to describe (W1–W8 of
 * docs/FORMAT.md): any failure is a WorkingSetError whose message says why, and the caller
 * ignores the file. Linear in the ranges but for one sort (W8): no check compares ranges or
 * blocks pairwise.
 */
export function decodeWorkingSet(bytes: Buffer, image: { header: ImageHeader; entries: BlockEntry[]; headerCrc: number }): WorkingSet {
  const bad = (why: string): never => {
    throw new WorkingSetError(why);
  };
  if (bytes.length < WS_HEADER + 4) bad(`${bytes.length} bytes, shorter than a working-set file's header`);
  if (bytes.subarray(0, 8).toString('latin1') !== WS_MAGIC) bad('not a working-set file (magic)');
  if (bytes.readUInt32LE(8) !== WS_VERSION) bad(`version ${bytes.readUInt32LE(8)} is not ${WS_VERSION}`);
  const count = bytes.readUInt32LE(12);
  if (count > MAX_WS_RANGES) bad(`${count} ranges, more than ${MAX_WS_RANGES}`);
  if (bytes.length !== WS_HEADER + count * WS_RANGE + 4) bad(`${bytes.length} bytes, but ${count} ranges need ${WS_HEADER + count * WS_RANGE + 4}`);
  const crc = native.crc32c(bytes.subarray(0, bytes.length - 4));
  if (crc !== bytes.readUInt32LE(bytes.length - 4)) bad('checksum mismatch (the file is damaged)');
  if (bytes.readUInt32LE(28) !== PAGE || bytes.readUInt32LE(44) !== 0) bad('page size is not 4096 or reserved bytes are set');
  const imageSize = Number(bytes.readBigUInt64LE(16));
  const imageHeaderCrc = bytes.readUInt32LE(24);
  if (imageSize !== image.header.imageSize || imageHeaderCrc !== image.headerCrc) bad('it was recorded from another image (size or header CRC differ): stale');
  const blocks = [...image.entries].sort((x, y) => x.offset - y.offset);
  const ranges: WorkingSet['ranges'] = new Array(count);
  for (let i = 0; i < count; i++) {
    const at = WS_HEADER + i * WS_RANGE;
    const [o, n] = [u64(bytes, at), u64(bytes, at + 8)];
    if (n === 0 || o % PAGE !== 0 || n % PAGE !== 0 || !(o + n <= Number.MAX_SAFE_INTEGER)) {
      bad(`range ${i} (${bytes.readBigUInt64LE(at)}, ${bytes.readBigUInt64LE(at + 8)}) is empty, unaligned or out of range`);
    }
    const block = blocks[lastAtOrBefore(blocks, o)];
    if (!block || o + n > block.offset + block.size) bad(`range ${i} (${o}..${o + n}) is not inside one RAM block of the image`);
    ranges[i] = { offset: o, length: n };
  }
  const order = byOffset(ranges);
  for (let k = 1; k < count; k++) {
    const [p, q] = [ranges[order[k - 1]], ranges[order[k]]];
    if (q.offset < p.offset + p.length) bad(`ranges ${Math.min(order[k - 1], order[k])} and ${Math.max(order[k - 1], order[k])} overlap (${q.offset}..${Math.min(p.offset + p.length, q.offset + q.length)}): a recording lists each page once`);
  }
  return { imageSize, imageHeaderCrc, recordedMs: Number(bytes.readBigUInt64LE(32)), windowMs: bytes.readUInt32LE(40), ranges };
}

/** A u64 as a number; NaN from 2^53 on (no double holds it exactly), which every check refuses. */
function u64(b: Buffer, at: number): number {
  const high = b.readUInt32LE(at + 4);
  return high >= 2 ** 21 ? NaN : high * 2 ** 32 + b.readUInt32LE(at);
}

/** Index of the last block starting at or before `offset` (blocks sorted by offset), -1 if none. */
function lastAtOrBefore(blocks: BlockEntry[], offset: number): number {
  let [lo, hi] = [0, blocks.length - 1];
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    if (blocks[mid].offset <= offset) lo = mid + 1;
    else hi = mid - 1;
  }
  return hi;
}

/** The ranges' indexes in address order (compared in a typed array: twice as fast as through the objects). */
function byOffset(ranges: WorkingSet['ranges']): Uint32Array {
  const offsets = new Float64Array(ranges.length);
  for (let i = 0; i < offsets.length; i++) offsets[i] = ranges[i].offset;
  const order = new Uint32Array(ranges.length);
  for (let i = 0; i < order.length; i++) order[i] = i;
  return order.sort((a, b) => offsets[a] - offsets[b]);
}

/**
 * Turns recorded ranges into the reads of a prefetch, each byte read once however the ranges
 * lie. In address order, ranges that start within `gap` bytes of the run before them join it
 * (reading a small gap costs less than another request, above all on IOPS-limited storage);
 * the runs are read in first-touch order (of the earliest range in each), cut into reads of at
 * most `maxRead`, and reading stops after `budget` bytes. So the reads number at most the
 * ranges plus budget / maxRead, and planning is one sort of the ranges and one of the runs.
 */
export function coalesce(ranges: WorkingSet['ranges'], budget = Infinity, gap = 256 * 1024, maxRead = 8 << 20): Array<{ offset: number; length: number }> {
  const runs: Array<{ offset: number; end: number; first: number }> = [];
  for (const i of byOffset(ranges)) {
    const r = ranges[i];
    const last = runs[runs.length - 1];
    if (last && r.offset <= last.end + gap) {
      last.end = Math.max(last.end, r.offset + r.length);
      last.first = Math.min(last.first, i);
    } else runs.push({ offset: r.offset, end: r.offset + r.length, first: i });
  }
  runs.sort((a, b) => a.first - b.first);
  const reads: Array<{ offset: number; length: number }> = [];
  let left = budget;
  for (const m of runs) {
    for (let at = m.offset; at < m.end && left > 0; at += maxRead) {
      const length = Math.min(maxRead, m.end - at, left);
      reads.push({ offset: at, length });
      left -= length;
    }
    if (left <= 0) break;
  }
  return reads;
}
