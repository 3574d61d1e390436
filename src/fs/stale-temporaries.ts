/**
 * Temporaries a killed iohelper left behind. A save, restore or convert writes beside its
 * target under `.NAME.iohelper-PID-HEX` (a file) or `.NAME.iohelper-convert-PID-XXXXXX` (a
 * scratch directory); SIGKILL (or a crash) leaves them, and on tmpfs each holds a RAM block's
 * worth of memory. The next run in that directory removes those whose process is gone, and
 * says so. A temporary whose PID is alive is left alone (it may be another run's, or the PID
 * may have been reused: then it stays until that process is gone too).
 */
import * as fs from 'fs';
import * as path from 'path';

import { TEMPORARY_NAME as STALE } from './atomic-file';

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

/**
 * Removes the temporaries of dead iohelper processes in `dir`; returns one line per removal
 * for the caller to report. Never throws: a directory that cannot be read or an entry that
 * cannot be removed is left as it is.
 */
export function removeStaleTemporaries(dir: string): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    const m = STALE.exec(name);
    if (!m || alive(Number(m[1]))) continue;
    const p = path.join(dir, name);
    try {
      const st = fs.lstatSync(p);
      if (!st.isFile() && !st.isDirectory()) continue;
      fs.rmSync(p, { recursive: true, force: true });
      removed.push(`removed ${p}, left by iohelper process ${m[1]} which is gone (${st.isDirectory() ? 'a convert scratch directory' : `${st.blocks * 512} bytes allocated`})`);
    } catch {
      // not ours to remove, or gone already
    }
  }
  return removed;
}
