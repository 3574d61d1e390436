/** Checks shared by save and restore: the image fd, O_DIRECT, job counts, and naming errors. */
import { isSystemError, systemError, withPath } from '../errors';
import { directAlignment } from '../fs/alignment';
import { describeFd, setDirect } from '../fs/fd-info';
import { ProgressListener } from '../progress';
import { OpenRam, RamSource } from './ram-files';

/** What save and restore both take. */
export interface ImageCopyOptions {
  /** The image file: writable for save (it is truncated first), readable for restore. */
  imageFd: number;
  /** Name of the image in messages. */
  imageName?: string;
  /** The guest RAM files, by block name. */
  ram: RamSource[];
  /** QEMU's device-state stream: read from (save, default stdin) or written to (restore, default stdout). */
  deviceStateFd?: number;
  /** O_DIRECT on the image. */
  direct?: boolean;
  /** Worker threads (default 2). */
  jobs?: number;
  /** Bytes of RAM per job (default 64 MiB). */
  jobSize?: number;
  onProgress?: ProgressListener;
  signal?: AbortSignal;
}

/**
 * The image must be a regular file open for `need`; with `direct`, O_DIRECT is set on it.
 * Returns the zero-detection unit (and hole granularity): the O_DIRECT alignment, ≥ 4 KiB.
 */
export function prepareImageFd(fd: number, name: string, need: 'read' | 'write', direct: boolean): number {
  const info = describeFd(fd);
  if (info.kind !== 'file') throw systemError('EINVAL', `${name} is not a regular file`, { path: name });
  if (info.access === (need === 'write' ? 'read' : 'write')) {
    throw systemError('EBADF', `${name} (fd ${fd}) is open ${info.access}-only; ${need === 'write' ? 'saving needs it writable' : 'restoring needs it readable'}`, { path: name });
  }
  if (!direct) return 4096;
  try {
    setDirect(fd, true);
  } catch (e) {
    if (isSystemError(e) && e.code === 'EINVAL') throw systemError('EINVAL', `O_DIRECT refused by the filesystem of ${name}`, { path: name });
    throw e;
  }
  return Math.max(4096, directAlignment(fd));
}

export function checkJobs(jobs: number): void {
  if (!Number.isInteger(jobs) || jobs < 1 || jobs > 256) throw systemError('EINVAL', `jobs ${jobs} is out of range (1..256)`);
}

/** Names the file a worker or stream error belongs to (the image, a RAM file, or QEMU's stream). */
export function explainCopyError(e: unknown, imageName: string, rams: OpenRam[], verb: 'save' | 'restore'): unknown {
  if (!isSystemError(e)) return e;
  const side = (e as { side?: string }).side;
  if (e.code === 'ECANCELED') return systemError('ECANCELED', `${verb} interrupted${verb === 'save' ? `; ${imageName} is left incomplete` : ''}`, { path: imageName });
  if (side === 'pipe') return e; // reported as "the stream"
  if (side === 'ram') return withPath(e, rams.map((r) => r.label).join(', '));
  return withPath(e, imageName);
}
