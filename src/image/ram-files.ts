/**
 * Guest RAM files named on the command line (`NAME=PATH` or `NAME=fd:K`): parsing, opening
 * without following symlinks, and their page size (hugetlbfs: the huge page size).
 */
import * as fs from 'fs';
import { systemError, withPath } from '../errors';
import { filesystemOf } from '../fs/filesystem';
import { openFile } from '../fs/open-file';

export interface RamSource {
  name: string;
  path?: string;
  fd?: number;
}

export interface OpenRam {
  name: string;
  /** Path or "fd:K", for messages. */
  label: string;
  fd: number;
  size: number;
  pageSize: number;
  /** Closes the fd if we opened it. */
  close(): void;
}



export function checkUniqueNames(sources: RamSource[]): void {
  const seen = new Set<string>();
  for (const s of sources) {
    if (seen.has(s.name)) throw systemError('EINVAL', `RAM block ${s.name} given twice (--ram ${s.name})`);
    seen.add(s.name);
  }
}

function label(s: RamSource): string {
  return s.path ?? `fd:${s.fd}`;
}


function describe(s: RamSource, fd: number, owned: boolean): OpenRam {
  const st = fs.fstatSync(fd);
  if (!st.isFile()) {
    if (owned) fs.closeSync(fd);
    throw systemError('EINVAL', `RAM '${s.name}' (${label(s)}) is not a regular file`, { path: label(s) });
  }
  return {
    name: s.name,
    label: label(s),
    fd,
    size: st.size,
    pageSize: filesystemOf(s.path ?? `/proc/self/fd/${fd}`).pageSize,
    close: () => {
      if (owned) fs.closeSync(fd);
    },
  };
}

/**
 * Opens a RAM file to save it: read-only, O_NOFOLLOW, and O_NONBLOCK so that a FIFO or device
 * named by mistake never blocks us (a blocked open would also keep signals from being handled);
 * only a regular file is accepted, checked before and after the open. Size must be a positive
 * page multiple.
 */
export function openRamForSave(s: RamSource): OpenRam {
  let fd: number;
  try {
    if (s.fd !== undefined) fd = s.fd;
    else fd = openFile(s.path!, fs.constants.O_RDONLY, { noFollow: true });
  } catch (e) {
    throw explainOpen(e, s);
  }
  const r = describe(s, fd, s.fd === undefined);
  if (r.size === 0 || r.size % r.pageSize !== 0) {
    r.close();
    throw systemError('EINVAL', `RAM '${s.name}' (${r.label}) has ${r.size} bytes, not a positive multiple of its page size ${r.pageSize}`, { path: r.label });
  }
  return r;
}

function explainOpen(e: unknown, s: RamSource): unknown {
  return withPath(e, label(s));
}
