/** Small pure helpers on numbers that every layer uses (one of each). */

/** The smallest multiple of `a` that is >= n. */
export function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

export function isPowerOfTwo(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

/** A CRC-32C (or any u32) as messages show it: 0x and 8 hex digits. */
export function hex(n: number): string {
  return `0x${(n >>> 0).toString(16).padStart(8, '0')}`;
}
