/** What a file descriptor is: its access mode, O_DIRECT, file type, size and position. */
import * as fs from 'fs';
import { native } from '../native';

type AccessMode = 'read' | 'write' | 'readwrite';
export type FdKind = 'file' | 'block' | 'fifo' | 'socket' | 'directory' | 'char' | 'other';

export interface FdInfo {
  fd: number;
  flags: number;
  access: AccessMode;
  direct: boolean;
  kind: FdKind;
  /** Bytes in the file or block device; 0 for pipes and sockets. */
  size: number;
  /** Current file position (lseek SEEK_CUR); 0 where it has none. */
  position: number;
}

export function kindOf(st: fs.Stats): FdKind {
  if (st.isFile()) return 'file';
  if (st.isBlockDevice()) return 'block';
  if (st.isFIFO()) return 'fifo';
  if (st.isSocket()) return 'socket';
  if (st.isDirectory()) return 'directory';
  if (st.isCharacterDevice()) return 'char';
  return 'other';
}

function accessOf(flags: number): AccessMode {
  const { O_ACCMODE, O_RDONLY, O_WRONLY } = native.constants;
  const mode = flags & O_ACCMODE;
  if (mode === O_RDONLY) return 'read';
  if (mode === O_WRONLY) return 'write';
  return 'readwrite';
}

export function describeFd(fd: number): FdInfo {
  const flags = native.getFlags(fd);
  const st = fs.fstatSync(fd);
  const kind = kindOf(st);
  const seekable = kind === 'file' || kind === 'block';
  return {
    fd,
    flags,
    access: accessOf(flags),
    direct: (flags & native.constants.O_DIRECT) !== 0,
    kind,
    size: kind === 'block' ? native.blockDeviceSize(fd) : seekable ? st.size : 0,
    position: seekable ? native.lseek(fd, 0, native.constants.SEEK_CUR) : 0,
  };
}

/** Turns O_DIRECT on or off for an open fd (fcntl F_SETFL). Throws EINVAL where refused. */
export function setDirect(fd: number, on: boolean): void {
  const flags = native.getFlags(fd);
  const next = on ? flags | native.constants.O_DIRECT : flags & ~native.constants.O_DIRECT;
  if (next !== flags) native.setFlags(fd, next);
}
