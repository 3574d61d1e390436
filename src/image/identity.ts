/**
 * Which file each role of a save or restore is (st_dev, st_ino). The image and every RAM file
 * must be different files: the same file under two names (or an fd and a path) would be read
 * and overwritten at once, destroying the guest RAM or the image while exiting 0.
 */
import * as fs from 'fs';
import { systemError } from '../errors';

export interface FileId {
  dev: bigint;
  ino: bigint;
  /** How the user named it, for messages. */
  label: string;
}

export function idOfStats(st: fs.BigIntStats, label: string): FileId {
  return { dev: st.dev, ino: st.ino, label };
}

export function idOfFd(fd: number, label: string): FileId {
  return idOfStats(fs.fstatSync(fd, { bigint: true }), label);
}

/** Throws EINVAL naming the first two roles that are one file. */
export function checkDistinct(ids: FileId[]): void {
  const seen = new Map<string, FileId>();
  for (const id of ids) {
    const key = `${id.dev}:${id.ino}`;
    const other = seen.get(key);
    if (other) throw systemError('EINVAL', `${other.label} and ${id.label} are the same file; each RAM block and the image need a file of their own`, { path: id.label });
    seen.set(key, id);
  }
}
