/**
 * Temporaries a killed iohelper left behind. A save, restore or convert writes beside its
 * target under `.NAME.iohelper-PID-HEX`, always one regular file; SIGKILL (or a crash) leaves
 * it, and on tmpfs each holds a RAM block's worth of memory. The next run in that directory
 * removes those whose process is gone, and says so. A temporary whose PID is alive is left
 * alone (it may be another run's, or the PID may have been reused: then it stays until that
 * process is gone too).
 *
 * We run as root beside world-writable directories (/dev/shm), where anyone can create an
 * entry with our name. So the cleanup works from one directory fd: it lists, checks and
 * removes entries of that directory only (fstatat without following, unlinkat, which removes
 * a link itself and refuses a directory), and removes only regular files this user owns. A
 * directory, link or other owner's file with our name is not ours: it is left alone, with a
 * warning, and nothing is ever entered or followed.
 */
import * as fs from 'fs';
import { native } from '../native';
import { printableBytes } from '../util/printable';
import { TEMPORARY_NAME } from './atomic-file';

/** Anyone can create entries with our names in a shared directory: the warnings about them are bounded. */
const MAX_LEFT_ALONE_LINES = 10;

/** Whether a process with this PID exists (EPERM: it does, owned by someone else). */
function alive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function kindOfMode(mode: number): string {
  const type = mode & fs.constants.S_IFMT;
  if (type === fs.constants.S_IFDIR) return 'a directory';
  if (type === fs.constants.S_IFLNK) return 'a symbolic link';
  return 'not a regular file';
}

/**
 * Removes the temporaries of dead iohelper processes in `dir`; returns one line per removal,
 * and per entry with our name left alone, for the caller to report. Never throws: a directory
 * that cannot be read or an entry that cannot be removed is left as it is.
 */
export function removeStaleTemporaries(dir: string): string[] {
  let dirFd: number;
  try {
    dirFd = fs.openSync(dir, fs.constants.O_RDONLY | native.constants.O_DIRECTORY);
  } catch {
    return [];
  }
  const said: string[] = [];
  let leftAlone = 0;
  try {
    let names: Buffer[];
    try {
      names = native.readDirectory(dirFd);
    } catch {
      return [];
    }
    const uid = process.geteuid?.() ?? -1;
    for (const name of names) {
      // Our names are ASCII apart from the target's own name: matched on the bytes read as latin1, which maps each byte to one character.
      const m = TEMPORARY_NAME.exec(name.toString('latin1'));
      if (!m || alive(Number(m[1]))) continue;
      const shown = `${dir.endsWith('/') ? dir : `${dir}/`}${printableBytes(name)}`;
      try {
        const st = native.statAt(dirFd, name);
        const notOurs = (why: string) => {
          if (++leftAlone <= MAX_LEFT_ALONE_LINES) said.push(`left ${shown} alone: named like a temporary of iohelper process ${m[1]}, which is gone, but ${why}; iohelper's temporaries are regular files it owns`);
        };
        if ((st.mode & fs.constants.S_IFMT) !== fs.constants.S_IFREG) notOurs(`it is ${kindOfMode(st.mode)}`);
        else if (st.uid !== uid) notOurs(`it belongs to user ${st.uid}`);
        else {
          native.unlinkAt(dirFd, name);
          said.push(`removed ${shown}, left by iohelper process ${m[1]} which is gone (${st.blocks * 512} bytes allocated)`);
        }
      } catch {
        // gone already, or not ours to remove
      }
    }
    if (leftAlone > MAX_LEFT_ALONE_LINES) said.push(`left ${leftAlone - MAX_LEFT_ALONE_LINES} more entries of ${dir} named like iohelper temporaries alone`);
  } finally {
    fs.closeSync(dirFd);
  }
  return said;
}
