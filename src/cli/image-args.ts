/** The image commands' own argument forms: --ram NAME=PATH|fd:K and --compress[=zstd[:LEVEL]]. */
import { UsageError } from '../errors';
import { MAX_LEVEL, MIN_LEVEL } from '../image/compression';
import { RamSource } from '../image/ram-files';

export function parseRamSpec(spec: string): RamSource {
  const eq = spec.indexOf('=');
  if (eq <= 0 || eq === spec.length - 1) throw new UsageError(`--ram '${spec}': expected NAME=PATH or NAME=fd:K`);
  const name = spec.slice(0, eq);
  const where = spec.slice(eq + 1);
  if (Buffer.byteLength(name) > 255) throw new UsageError(`--ram '${name}': name longer than 255 bytes`);
  const m = /^fd:(\d+)$/.exec(where);
  return m ? { name, fd: Number(m[1]) } : { name, path: where };
}

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
