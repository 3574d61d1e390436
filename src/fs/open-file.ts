/**
 * Opening a file a user names by path without ever blocking in open(). open() of a FIFO waits
 * for a peer, and a thread blocked there never returns to the event loop, so SIGINT and
 * SIGTERM go unhandled (only SIGKILL ends it). The path's type is checked before the open (a
 * FIFO, or any kind not accepted, is never opened at all), the open is O_NONBLOCK in case the path was swapped
 * meanwhile, and the fd's type is checked again; O_NONBLOCK is cleared once the fd is known to
 * be a regular file (or an accepted block device), so whoever inherits the fd gets ordinary I/O.
 */
import * as fs from 'fs';
import { systemError, withPath } from '../errors';
import { native } from '../native';
import { FdKind, kindOf } from './fd-info';

export interface OpenFileOptions {
  /** Mode of a file O_CREAT creates. */
  mode?: number;
  /** Block devices are accepted too (inspect reads images on them). */
  block?: boolean;
  /** A symbolic link is refused (ELOOP) instead of followed; the open gets O_NOFOLLOW. */
  noFollow?: boolean;
}

const KIND_NAMES: Record<FdKind, string> = {
  file: 'a regular file',
  block: 'a block device',
  fifo: 'a FIFO',
  socket: 'a socket',
  directory: 'a directory',
  char: 'a character device',
  other: 'a special file',
};

/** What a stat says a path is, for messages: "a FIFO", "a directory", … */
export function kindName(st: fs.Stats | fs.BigIntStats): string {
  return KIND_NAMES[kindOf(st as fs.Stats)];
}

/** The one refusal of a symbolic link where a file is opened. */
export const refusedLink = (file: string) => systemError('ELOOP', `${file} is a symbolic link; refusing to follow it`, { path: file });

function checkKind(file: string, st: fs.Stats, o: OpenFileOptions): void {
  if (st.isFile() || (o.block && st.isBlockDevice())) return;
  if (o.noFollow && st.isSymbolicLink()) throw refusedLink(file);
  const wanted = o.block ? 'a regular file or block device' : 'a regular file';
  throw systemError(st.isDirectory() ? 'EISDIR' : 'EINVAL', `${file} is ${kindName(st)}, not ${wanted}`, { path: file });
}

/** open(2) of `file` with `flags` (O_RDONLY, O_WRONLY | O_CREAT, …), refusing anything but a regular file (or block device). */
export function openFile(file: string, flags: number, o: OpenFileOptions = {}): number {
  let before: fs.Stats | undefined;
  try {
    before = o.noFollow ? fs.lstatSync(file) : fs.statSync(file);
  } catch (e) {
    // Absent: O_CREAT makes a regular file, and without it the open reports ENOENT itself.
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw withPath(e, file);
  }
  if (before) checkKind(file, before, o);
  let fd: number;
  try {
    fd = fs.openSync(file, flags | fs.constants.O_NONBLOCK | (o.noFollow ? fs.constants.O_NOFOLLOW : 0), o.mode ?? 0o600);
  } catch (e) {
    // A link put there after the lstat: the kernel's O_NOFOLLOW refusal, said as ours is.
    if (o.noFollow && (e as NodeJS.ErrnoException).code === 'ELOOP') throw refusedLink(file);
    throw e;
  }
  try {
    const after = fs.fstatSync(fd);
    checkKind(file, after, o);
    if (before && (after.ino !== before.ino || after.dev !== before.dev)) throw systemError('EAGAIN', `${file} changed while it was opened`, { path: file });
    native.setFlags(fd, native.getFlags(fd) & ~native.constants.O_NONBLOCK);
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
  return fd;
}

/** Bytes in the file, or in the block device, open on `fd` (fstat says 0 for a device). */
export function sizeOfFd(fd: number): number {
  const st = fs.fstatSync(fd);
  return st.isBlockDevice() ? native.blockDeviceSize(fd) : st.size;
}
