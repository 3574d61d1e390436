/** lstat that answers undefined for a path that does not exist (any other error is thrown). */
import * as fs from 'fs';

export function lstatIfExists(p: string): fs.BigIntStats | undefined {
  try {
    return fs.lstatSync(p, { bigint: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}
