/**
 * CRC-32C (Castagnoli), table-driven, one byte at a time: the tests' reference. The image code
 * gets its checksums from the native addon, which must give the same values.
 */

/** Reflected Castagnoli polynomial. */
const POLY = 0x82f63b78;

const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/**
 * CRC-32C of `buf`. Pass a previous result as `seed` to continue it:
 * `crc32c(b, crc32c(a)) === crc32c(a ++ b)`.
 */
export function crc32c(buf: Uint8Array, seed = 0): number {
  let c = ~seed >>> 0;
  for (let i = 0; i < buf.length; i++) c = TABLE[(c ^ buf[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}
