/**
 * The working-set file (docs/FORMAT.md, "Working-set file"): the image pages a lazily restored
 * guest touched, in first-touch order, kept beside the image as IMAGE.ws and bound to that
 * image by its size and header CRC. Encoder, validating decoder, and the coalescing of its
 * ranges into the large reads a prefetch makes. Pure: bytes in, bytes out.
 */
import { native } from '../native';
import { BlockEntry, ImageHeader } from './format';

export const WS_MAGIC = 'IOHWS001';
export const WS_VERSION = 1;
const WS_HEADER = 48;
const WS_RANGE = 16;
/** A reader holds the ranges in memory: 2^20 of them (16 MiB). */
export const MAX_WS_RANGES = 2 ** 20;
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
 * Decodes a working-set file and checks it against the image it claims to describe (W1–W7 of
 * docs/FORMAT.md): any failure is a WorkingSetError whose message says why, and the caller
 * ignores the file.
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
  const blocks = image.entries.map((e) => [e.offset, e.offset + e.size]);
  const ranges: WorkingSet['ranges'] = [];
  for (let i = 0; i < count; i++) {
    const at = WS_HEADER + i * WS_RANGE;
    const offset = bytes.readBigUInt64LE(at);
    const length = bytes.readBigUInt64LE(at + 8);
    if (length === 0n || offset % BigInt(PAGE) !== 0n || length % BigInt(PAGE) !== 0n || offset + length > BigInt(Number.MAX_SAFE_INTEGER)) {
      bad(`range ${i} (${offset}, ${length}) is empty, unaligned or out of range`);
    }
    const [o, n] = [Number(offset), Number(length)];
    if (!blocks.some(([s, e]) => o >= s && o + n <= e)) bad(`range ${i} (${o}..${o + n}) is not inside one RAM block of the image`);
    ranges.push({ offset: o, length: n });
  }
  return { imageSize, imageHeaderCrc, recordedMs: Number(bytes.readBigUInt64LE(32)), windowMs: bytes.readUInt32LE(40), ranges };
}

/**
 * Turns recorded ranges into reads: in first-touch order, each range merged with the ranges
 * after it while they follow it within `gap` bytes (reading a small gap costs less than
 * another request, above all on IOPS-limited storage), cut into reads of at most `maxRead`.
 */
export function coalesce(ranges: WorkingSet['ranges'], gap = 256 * 1024, maxRead = 8 << 20): Array<{ offset: number; length: number }> {
  const merged: Array<{ offset: number; length: number }> = [];
  for (const r of ranges) {
    const last = merged[merged.length - 1];
    if (last && r.offset >= last.offset && r.offset <= last.offset + last.length + gap) {
      last.length = Math.max(last.length, r.offset + r.length - last.offset);
    } else merged.push({ ...r });
  }
  const reads: Array<{ offset: number; length: number }> = [];
  for (const m of merged) {
    for (let at = m.offset; at < m.offset + m.length; at += maxRead) reads.push({ offset: at, length: Math.min(maxRead, m.offset + m.length - at) });
  }
  return reads;
}
