/** Files that appear whole or not at all: written under a temporary name beside them, synced, renamed. */
import { kindName } from './open-file';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { isSystemError, systemError } from '../errors';

/** The longest file name (one path component) Linux filesystems take, in bytes. */
const NAME_MAX = 255;

/**
 * A fresh temporary name beside `file` (same directory, so a rename over `file` stays on one
 * filesystem and is atomic): `.NAME.iohelper-PID-HEX`, hidden, and naming the process that left
 * it should a kill -9 leave it behind. NAME is cut (at a character boundary) where the whole
 * would pass NAME_MAX, so any name a file can have gets a temporary; HEX keeps it unique.
 */
export function tempPathBeside(file: string): string {
  const suffix = `.iohelper-${process.pid}-${crypto.randomBytes(4).toString('hex')}`;
  return path.join(path.dirname(file), `.${cutToBytes(path.basename(file), NAME_MAX - 1 - suffix.length)}${suffix}`);
}

/** The longest start of `text` that is at most `bytes` bytes of UTF-8, never half a character. */
function cutToBytes(text: string, bytes: number): string {
  if (Buffer.byteLength(text) <= bytes) return text;
  let out = '';
  let used = 0;
  for (const ch of text) {
    used += Buffer.byteLength(ch);
    if (used > bytes) break;
    out += ch;
  }
  return out;
}

/**
 * The names tempPathBeside makes (and, with `convert-`, the scratch directories convert made
 * before its scratch became single files); group 1 is the PID. `s`: a name may hold a newline.
 */
export const TEMPORARY_NAME = /^\..+\.iohelper-(?:convert-)?(\d+)-[0-9A-Za-z]+$/s;

/** Writes `data` to `file` atomically with `mode`; on failure the temporary is removed and `file` is as it was. */
export function writeFileAtomic(file: string, data: string | Uint8Array, mode: number): void {
  const tmp = tempPathBeside(file);
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

/**
 * A large file (an image) written in place of `file` without touching `file` until it is
 * complete: the data goes to a new temporary beside it (O_EXCL), and commit() renames it over
 * `file` and syncs the directory. Until then, and after discard(), `file` is exactly as it was;
 * a process that has the old file open or mapped keeps the old inode either way.
 */
export interface FileReplacement {
  /** The temporary, open write-only. */
  fd: number;
  tempPath: string;
  /** The path commit() replaces: `file` with symlinks resolved, so a link keeps pointing at the new file. */
  target: string;
  /** (dev, ino) of the file being replaced, when it exists. */
  replaced?: { dev: bigint; ino: bigint };
  /** Closes the fd, renames the temporary over the target, syncs the directory. The caller has synced the data. */
  commit(): void;
  /** Closes the fd (if still open) and removes the temporary. Never throws. */
  discard(): void;
}

export function createReplacement(file: string, mode = 0o600): FileReplacement {
  let old: fs.BigIntStats | undefined;
  try {
    old = fs.statSync(file, { bigint: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  if (old && !old.isFile()) throw systemError('EINVAL', `${file} is ${kindName(old)}, not a regular file; a save writes a new file and renames it over the old one`, { path: file });
  const target = old ? fs.realpathSync(file) : file;
  const tempPath = tempPathBeside(target);
  let fd: number | undefined;
  try {
    fd = fs.openSync(tempPath, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, mode);
  } catch (e) {
    throw namedAs(e, tempPath, file);
  }
  try {
    // Exactly `mode`, whatever the umask made of the open's, until the commit.
    fs.fchmodSync(fd, mode);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(tempPath, { force: true });
    throw namedAs(e, tempPath, file);
  }
  let open = true;
  const close = () => {
    if (open) fs.closeSync(fd!);
    open = false;
  };
  return {
    fd,
    tempPath,
    target,
    replaced: old && { dev: old.dev, ino: old.ino },
    commit() {
      try {
        // The new file takes the old one's place, so it gets its permissions (and, where we may
        // set it, its owner) now: a reader that could open the old image can open the new one.
        // Only now: until the rename the temporary is ours alone, so a killed run leaves a file
        // of ours that the next run's cleanup removes (it removes only files of its own user).
        if (old) {
          fs.fchmodSync(fd!, Number(old.mode) & 0o7777);
          if (process.getuid?.() === 0) fs.fchownSync(fd!, Number(old.uid), Number(old.gid));
        }
        close();
        fs.renameSync(tempPath, target);
      } catch (e) {
        fs.rmSync(tempPath, { force: true });
        throw namedAs(e, tempPath, file);
      }
      syncDir(path.dirname(target));
    },
    discard() {
      try {
        close();
      } catch {
        // the temporary goes either way
      }
      fs.rmSync(tempPath, { force: true });
    },
  };
}

/** An error about the temporary names the file the user gave (the temporary is our detail). */
function namedAs(e: unknown, tempPath: string, file: string): unknown {
  if (isSystemError(e)) {
    e.message = e.message.split(tempPath).join(file);
    if (e.path === tempPath) e.path = file;
    if ((e as { dest?: string }).dest !== undefined) (e as { dest?: string }).dest = file;
  }
  return e;
}
