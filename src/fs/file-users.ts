/**
 * Whether another process has a file open or mapped. Renaming a new file over a RAM file that
 * a QEMU maps leaves that QEMU on the old, unlinked inode: it would run on the old memory while
 * the restore reports success. So a restore that would replace a file asks this first.
 */
import * as fs from 'fs';
import { isSystemError } from '../errors';
import { native } from '../native';

/**
 * pids of other processes known to have the file open or mapped ('some' when they cannot be
 * named); [] when none is known. `fd`
 * is our own descriptor of it (not counted). A write lease can be taken only when no other open
 * file description refers to the file, mappings included; where leases are not available (a
 * file we do not own without CAP_LEASE, a filesystem without them) /proc is read instead,
 * which sees only the processes we may inspect.
 */
export function otherUsers(fd: number, st: fs.BigIntStats): number[] | 'some' {
  try {
    if (native.writeLeaseFree(fd)) return [];
    // Somebody has it: /proc names them when we may look (for the message).
    const pids = usersFromProc(st);
    return pids.length ? pids : 'some';
  } catch (e) {
    if (!isSystemError(e)) throw e;
  }
  return usersFromProc(st);
}

function usersFromProc(st: fs.BigIntStats): number[] {
  const dev = st.dev;
  const major = Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn));
  const minor = Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn));
  const devText = `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}`;
  const ino = String(st.ino);
  const users: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    if (mapsFile(name, devText, ino) || hasOpen(name, st)) users.push(Number(name));
  }
  return users;
}

function mapsFile(pid: string, devText: string, ino: string): boolean {
  let maps: string;
  try {
    maps = fs.readFileSync(`/proc/${pid}/maps`, 'utf8');
  } catch {
    return false; // gone, or not ours to read
  }
  // "start-end perms offset dev inode path"
  return maps.split('\n').some((l) => {
    const f = l.split(/\s+/, 5);
    return f[3] === devText && f[4] === ino;
  });
}

function hasOpen(pid: string, st: fs.BigIntStats): boolean {
  let fds: string[];
  try {
    fds = fs.readdirSync(`/proc/${pid}/fd`);
  } catch {
    return false;
  }
  return fds.some((n) => {
    try {
      const s = fs.statSync(`/proc/${pid}/fd/${n}`, { bigint: true });
      return s.dev === st.dev && s.ino === st.ino;
    } catch {
      return false;
    }
  });
}
