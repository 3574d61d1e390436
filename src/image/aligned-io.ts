/**
 * Metadata I/O on an image fd that may be O_DIRECT: every transfer goes through a page-aligned
 * buffer with page-aligned offset and length, so it works with or without O_DIRECT.
 */
import { withPath } from '../errors';
import { native } from '../native';
import { alignUp } from '../util/numbers';

const PAGE = 4096;

/** Writes `data` at a page-aligned `offset`, zero-padded to a page multiple. */
export function writeAligned(fd: number, data: Uint8Array, offset: number, path = ''): void {
  if (offset % PAGE) throw new RangeError(`writeAligned: offset ${offset} is not page-aligned`);
  const len = alignUp(Math.max(data.length, 1), PAGE);
  const buf = new Uint8Array(native.allocAligned(len, PAGE));
  buf.set(data);
  try {
    native.pwrite(fd, buf, offset);
  } catch (e) {
    throw withPath(e, path);
  }
}

/**
 * Reads `length` bytes at `offset` (any values) by reading the enclosing aligned span; returns
 * fewer bytes only at end of file.
 */
export function readAligned(fd: number, offset: number, length: number, path = ''): Uint8Array {
  const start = offset - (offset % PAGE);
  const end = alignUp(offset + length, PAGE);
  const buf = new Uint8Array(native.allocAligned(end - start, PAGE));
  let got = 0;
  try {
    while (got < buf.length) {
      const n = native.pread(fd, buf.subarray(got), start + got);
      if (n === 0) break;
      got += n;
      if (got % PAGE) break;
    }
  } catch (e) {
    throw withPath(e, path);
  }
  const from = offset - start;
  return buf.subarray(from, Math.max(from, Math.min(got, from + length)));
}
