/**
 * One file, one role. A command's files each have one role (the image, the device state on
 * stdin or stdout, a RAM block, a base, a progress or signal fd); given twice, one role's bytes
 * land in the other's file (`restore --ram a=fd:1` writes the device state into the RAM target)
 * or are read as the other's (`save --ram a=fd:0 <ram` stores the RAM file as the device state),
 * and the command "succeeds". Files are told apart by (dev, ino), so two fds or a path and an
 * fd naming one file are caught too. Character devices are exempt: /dev/null or a terminal in
 * two roles holds nothing either could corrupt.
 */
import * as fs from 'fs';
import { systemError } from '../errors';

export interface FileRole {
  /** For the message: "the device state (stdout)", "--ram a=fd:5", … */
  role: string;
  fd?: number;
  /** A path (followed, as its opener would reach it); one that does not exist yet has no file to share. */
  path?: string;
  /** The file itself, where the caller already has its identity. */
  id?: { dev: bigint; ino: bigint };
}

function identity(r: FileRole): { dev: bigint; ino: bigint } | undefined {
  if (r.id) return r.id;
  let st: fs.BigIntStats;
  try {
    st = r.fd !== undefined ? fs.fstatSync(r.fd, { bigint: true }) : fs.statSync(r.path!, { bigint: true });
  } catch {
    return undefined; // absent: each role's own checks say what is wrong with it
  }
  return st.isCharacterDevice() ? undefined : { dev: st.dev, ino: st.ino };
}

/** Throws EINVAL naming the first two roles given the same file. */
export function checkOneRoleEach(roles: FileRole[]): void {
  const seen: Array<{ role: string; dev: bigint; ino: bigint }> = [];
  for (const r of roles) {
    const id = identity(r);
    if (!id) continue;
    const other = seen.find((s) => s.dev === id.dev && s.ino === id.ino);
    if (other) throw systemError('EINVAL', `${other.role} and ${r.role} are the same file: one file cannot have two roles (one would overwrite, or be read as, the other)`);
    seen.push({ role: r.role, ...id });
  }
}
