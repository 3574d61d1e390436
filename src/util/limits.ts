/**
 * Every bound an input controls, and the checks that apply them, in one place. The CLI parses
 * text into numbers and checks them against these bounds (src/util/flags.ts: usage errors
 * naming the option); the library checks the same values here before anything is opened or
 * changed (EINVAL naming the field); the addon receives only values that passed, refuses
 * anything else itself, and exports its own copies of the shared bounds, which src/native.ts
 * compares with these when it loads.
 */
import { systemError } from '../errors';
import { isPowerOfTwo } from './numbers';

export interface Bound {
  min: number;
  max: number;
  powerOfTwo?: boolean;
  /** How messages show the range (default `min..max`). */
  text?: string;
}

const MiB = 2 ** 20;
/** Bytes per I/O of the stream copy: a buffer is allocated per slot of its ring. */
export const BUFFER_SIZE: Bound = { min: 4096, max: 256 * MiB, text: '4K..256M' };
/** Stream copy I/Os in flight at once. */
export const INFLIGHT: Bound = { min: 1, max: 64 };
/** Bytes the stream copy's ring may hold in all (buffer size × (inflight + 2)). */
export const MAX_RING_BYTES = 256 * MiB;
/** Worker threads: each is a V8 isolate (~10 MiB) copying one 64 MiB range at a time; more than this only adds memory. */
export const JOBS: Bound = { min: 1, max: 64 };
/** Checksum chunk of an image (format: a power of two, 4 KiB .. 1 GiB). */
export const CHUNK_SIZE: Bound = { min: 4096, max: 2 ** 30, powerOfTwo: true, text: '4K..1G' };
/** Content hash unit (format: a power of two, 4 KiB .. 64 MiB). */
export const HASH_UNIT: Bound = { min: 4096, max: 64 * MiB, powerOfTwo: true, text: '4K..64M' };
/** The largest fd number the addon takes (a C int). */
export const MAX_FD = 2 ** 31 - 1;
export const FD: Bound = { min: 0, max: MAX_FD };

export function boundText(b: Bound): string {
  return b.text ?? `${b.min}..${b.max}`;
}

export function inBound(n: number, b: Bound): boolean {
  return Number.isSafeInteger(n) && n >= b.min && n <= b.max && (!b.powerOfTwo || isPowerOfTwo(n));
}

/** Returns `value` when it is within `b`; otherwise throws EINVAL naming `what`. */
export function checkBound(value: unknown, what: string, b: Bound): number {
  if (typeof value !== 'number' || !inBound(value, b)) {
    throw systemError('EINVAL', `${what} ${typeof value === 'number' ? value : JSON.stringify(value)} is not ${b.powerOfTwo ? 'a power of two' : 'an integer'} in ${boundText(b)}`);
  }
  return value;
}

/** Returns `value` when it is a safe integer in [min, max]; otherwise throws EINVAL naming `what`. */
export function checkInteger(value: unknown, what: string, min: number, max: number): number {
  return checkBound(value, what, { min, max });
}
