/** Files that appear whole or not at all: written under a temporary name beside them, synced, renamed. */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';

/** Writes `data` to `file` atomically with `mode`; on failure the temporary is removed and `file` is as it was. */
export function writeFileAtomic(file: string, data: string | Uint8Array, mode: number): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.iohelper-${process.pid}-${crypto.randomBytes(4).toString('hex')}`);
  try {
    const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, mode);
    try {
      fs.writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data);
      fs.fchmodSync(fd, mode); // the umask narrowed the open's mode
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

/** A rename (or link) into `dir` is durable only once the directory is synced. */
export function syncDir(dir: string): void {
  const fd = fs.openSync(dir, fs.constants.O_RDONLY);
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
