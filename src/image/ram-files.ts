/**
 * Guest RAM files named on the command line (`NAME=PATH` or `NAME=fd:K`): parsing, opening
 * without following symlinks, and their page size (hugetlbfs: the huge page size).
 */
import * as fs from 'fs';
import { systemError, UsageError, withPath } from '../errors';

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

const HUGETLBFS_MAGIC = 0x958458f6;
const PAGE = 4096;

export function parseRamSpec(spec: string): RamSource {
  const eq = spec.indexOf('=');
  if (eq <= 0 || eq === spec.length - 1) throw new UsageError(`--ram '${spec}': expected NAME=PATH or NAME=fd:K`);
  const name = spec.slice(0, eq);
  const where = spec.slice(eq + 1);
  if (Buffer.byteLength(name) > 255) throw new UsageError(`--ram '${name}': name longer than 255 bytes`);
  const m = /^fd:(\d+)$/.exec(where);
  return m ? { name, fd: Number(m[1]) } : { name, path: where };
}

export function checkUniqueNames(sources: RamSource[]): void {
  const seen = new Set<string>();
  for (const s of sources) {
    if (seen.has(s.name)) throw new UsageError(`--ram ${s.name} given twice`);
    seen.add(s.name);
  }
}

function label(s: RamSource): string {
  return s.path ?? `fd:${s.fd}`;
}

function pageSizeOf(fd: number, s: RamSource): number {
  const st = fs.statfsSync(s.path ?? `/proc/self/fd/${fd}`);
  return st.type === HUGETLBFS_MAGIC ? st.bsize : PAGE;
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
    pageSize: pageSizeOf(fd, s),
    close: () => {
      if (owned) fs.closeSync(fd);
    },
  };
}

/** Opens a RAM file to save it (read-only, O_NOFOLLOW). Size must be a positive page multiple. */
export function openRamForSave(s: RamSource): OpenRam {
  let fd: number;
  try {
    fd = s.fd ?? fs.openSync(s.path!, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
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

/**
 * Checks, without changing anything, that a RAM target can take a block of `size` bytes: a
 * path must be absent or a regular file (not a symlink) of 0 or exactly `size` bytes.
 */
export function checkRamTarget(s: RamSource, size: number): void {
  if (s.fd !== undefined) {
    const st = fs.fstatSync(s.fd);
    if (!st.isFile()) throw systemError('EINVAL', `RAM '${s.name}' (fd:${s.fd}) is not a regular file`);
    if (st.size !== 0 && st.size !== size) throw systemError('EINVAL', `RAM '${s.name}' (fd:${s.fd}) has ${st.size} bytes; the image's block has ${size}`);
    return;
  }
  let st: fs.Stats;
  try {
    st = fs.lstatSync(s.path!);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  if (st.isSymbolicLink()) throw systemError('ELOOP', `RAM '${s.name}' path ${s.path} is a symlink; refusing to follow it`, { path: s.path });
  if (!st.isFile()) throw systemError('EINVAL', `RAM '${s.name}' path ${s.path} is not a regular file`, { path: s.path });
  if (st.size !== 0 && st.size !== size) {
    throw systemError('EINVAL', `RAM '${s.name}' (${s.path}) has ${st.size} bytes; the image's block has ${size}`, { path: s.path });
  }
}

/** Opens (creating if needed) a checked RAM target read-write, O_NOFOLLOW. */
export function openRamForRestore(s: RamSource): OpenRam {
  let fd: number;
  try {
    fd = s.fd ?? fs.openSync(s.path!, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW, 0o600);
  } catch (e) {
    throw explainOpen(e, s);
  }
  return describe(s, fd, s.fd === undefined);
}

function explainOpen(e: unknown, s: RamSource): unknown {
  const err = e as NodeJS.ErrnoException;
  if (err.code === 'ELOOP') return systemError('ELOOP', `RAM '${s.name}' path ${s.path} is a symlink; refusing to follow it`, { path: s.path });
  return withPath(e, label(s));
}
