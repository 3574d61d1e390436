/**
 * Numeric options are checked once, here, before anything is opened or changed: the addon
 * receives only exact integers in range (it refuses anything else too, but with a TypeError
 * naming its own field rather than the caller's option).
 */
import { systemError } from '../errors';

/** Returns `value` when it is a safe integer in [min, max]; otherwise throws EINVAL naming `what`. */
export function checkInteger(value: unknown, what: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    throw systemError('EINVAL', `${what} ${typeof value === 'number' ? value : JSON.stringify(value)} is not an integer in ${min}..${max}`);
  }
  return value;
}

/** checkInteger for an optional option: undefined gives `fallback`. */
export function optionalInteger(value: unknown, what: string, min: number, max: number, fallback: number): number {
  return value === undefined ? fallback : checkInteger(value, what, min, max);
}

/** The largest fd number the addon takes (a C int). */
export const MAX_FD = 2 ** 31 - 1;
