/** Source data for benchmarks: a file of non-zero, incompressible-looking bytes, written in bounded memory. */
import * as crypto from 'crypto';
import * as fs from 'fs';

export function writePatternFile(file: string, size: number): void {
  const block = crypto.randomBytes(16 * 1024 * 1024);
  const fd = fs.openSync(file, 'w');
  try {
    for (let off = 0; off < size; off += block.length) {
      block.writeBigUInt64LE(BigInt(off), 0);
      fs.writeSync(fd, block, 0, Math.min(block.length, size - off), off);
    }
  } finally {
    fs.closeSync(fd);
  }
}
