/** The compression option of compressed images (docs/FORMAT.md, version 2): zstd levels and their parsing. */
import { UsageError } from '../errors';

/** zstd levels every libzstd we build against (1.4+) accepts: -7 (fastest) .. 19 (smallest). 0 stores chunks raw. */
export const MIN_LEVEL = -7;
export const MAX_LEVEL = 19;
/**
 * --compress without a level: zstd 1, the fastest of the regular levels; on slow storage
 * (the case compression is for) the disk, not the CPU, is what a save waits for.
 */
const DEFAULT_LEVEL = 1;

/** --compress[=zstd[:LEVEL]]: the zstd level, or undefined when the option is absent (a mappable image). */
export function parseCompress(value: string | true | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (value === true || value === 'zstd') return DEFAULT_LEVEL;
  const m = /^zstd:(-?\d{1,3})$/.exec(value);
  if (!m) throw new UsageError(`--compress=${value}: expected zstd or zstd:LEVEL (LEVEL ${MIN_LEVEL}..${MAX_LEVEL})`);
  const level = Number(m[1]);
  if (level < MIN_LEVEL || level > MAX_LEVEL) throw new UsageError(`--compress=${value}: level ${level} is out of range (${MIN_LEVEL}..${MAX_LEVEL}; 0 stores chunks raw)`);
  return level;
}
