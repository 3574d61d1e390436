/**
 * Which file each role of a save or restore is (st_dev, st_ino). One file, one role: the image,
 * every RAM file, a base, the device state on stdin or stdout, a progress or signal fd must be
 * different files. The same file under two names (or two fds, or an fd and a path) would be
 * read and overwritten at once, or one role's bytes read as another's (`save --ram a=fd:0
 * <ram` would store the RAM file as the device state), destroying the guest RAM or the image
 * while exiting 0.
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
    if (other) throw systemError('EINVAL', `${other.label} and ${id.label} are the same file: one file cannot have two roles (one would overwrite, or be read as, the other)`, { path: id.label });
    seen.set(key, id);
  }
}

/** A role the command line gives a file: by fd, by path, or by the identity the caller has. */
export interface FileRole {
  /** For the message: "the device state (stdout)", "--ram a=fd:5", … */
  role: string;
  fd?: number;
  /** Followed, as its opener would reach it; a path that does not exist yet has no file to share. */
  path?: string;
  id?: { dev: bigint; ino: bigint };
}

/**
 * checkDistinct over the command line's roles, before anything is read or written. Character
 * devices are exempt: /dev/null or a terminal in two roles holds nothing either could corrupt.
 * A role whose fd or path cannot be stat'ed is left to that role's own checks.
 */
export function checkRoles(roles: FileRole[]): void {
  const ids: FileId[] = [];
  for (const r of roles) {
    if (r.id) {
      ids.push({ ...r.id, label: r.role });
      continue;
    }
    if (r.fd === undefined && r.path === undefined) continue; // a file that does not exist yet
    let st: fs.BigIntStats;
    try {
      st = r.fd !== undefined ? fs.fstatSync(r.fd, { bigint: true }) : fs.statSync(r.path!, { bigint: true });
    } catch {
      continue;
    }
    if (!st.isCharacterDevice()) ids.push(idOfStats(st, r.role));
  }
  checkDistinct(ids);
}
