/**
 * Prefetch of a recorded working set (src/vm/lazy/working-set.ts) into the page cache, for lazy
 * restores and clones that map the image: the ranges are coalesced into large reads, taken in
 * first-touch order by the worker pool, and read while QEMU starts and the guest runs. The
 * guest never waits on it: a page it touches first is simply read by its own fault.
 */
import * as fs from 'fs';
import { errorText, isSystemError } from '../../errors';
import { openFile } from '../../fs/open-file';
import { runPool } from '../../image/exec/pool';
import { ImageMetadata } from '../../image/io/read-image';
import { WorkerTask } from '../../image/exec/worker-types';
import { coalesce, decodeWorkingSet, MAX_WS_FILE_BYTES, workingSetPath, WorkingSetError } from './working-set';

export interface PrefetchPlan {
  file: string;
  reads: Array<{ offset: number; length: number }>;
  bytes: number;
}

export interface PrefetchReport {
  bytes: number;
  elapsedMs: number;
}

/** Reads of this many bytes at most go to one worker task, in first-touch order. */
const TASK_BYTES = 32 << 20;

/**
 * The prefetch for `image`, from its working-set file when there is one. A file that is
 * damaged, hostile or recorded from another image is never trusted: `warn` says why and there
 * is no prefetch. Whatever the file says, the plan reads at most the image's data bytes (the
 * blocks' `dataBytes`: a whole eager restore's worth), each byte once.
 */
export function planPrefetch(image: string, meta: ImageMetadata, warn: (message: string) => void): PrefetchPlan | undefined {
  const file = workingSetPath(image);
  try {
    const bytes = readWorkingSetFile(file);
    if (!bytes) return undefined;
    const ws = decodeWorkingSet(bytes, meta);
    const reads = coalesce(ws.ranges, meta.entries.reduce((n, e) => n + e.dataBytes, 0));
    return { file, reads, bytes: reads.reduce((n, r) => n + r.length, 0) };
  } catch (e) {
    if (!(e instanceof WorkingSetError) && !isSystemError(e)) throw e; // a bug, not the file
    warn(`ignoring the working set ${file}: ${e instanceof WorkingSetError ? e.message : errorText(e)}`);
    return undefined;
  }
}

/**
 * The file's bytes (undefined when there is none), read only from a regular file (W1), never
 * through a symbolic link (one to /proc/self/pagemap reads as size 0 and never ends), and at
 * most the largest legal size: a file that grows meanwhile cannot make us read more.
 */
function readWorkingSetFile(file: string): Buffer | undefined {
  let fd: number;
  try {
    fd = openFile(file, fs.constants.O_RDONLY, { noFollow: true });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    if (code === 'ELOOP') throw new WorkingSetError('it is a symbolic link; only a regular file is read');
    if (code === 'EINVAL' || code === 'EISDIR') throw new WorkingSetError('not a regular file');
    throw e;
  }
  try {
    const size = fs.fstatSync(fd).size;
    if (size > MAX_WS_FILE_BYTES) throw new WorkingSetError(`${size} bytes, more than a working-set file can have`);
    const bytes = Buffer.alloc(size + 1);
    let got = 0;
    for (let n; got < bytes.length && (n = fs.readSync(fd, bytes, got, bytes.length - got, got)) > 0; ) got += n;
    if (got > size) throw new WorkingSetError('it grew while it was read');
    return bytes.subarray(0, got);
  } finally {
    fs.closeSync(fd);
  }
}

/** Reads the plan's ranges through the page cache with `jobs` worker threads. Owns its fd. */
export async function runPrefetch(image: string, plan: PrefetchPlan, jobs: number): Promise<PrefetchReport> {
  const t0 = Date.now();
  const fd = openFile(image, fs.constants.O_RDONLY);
  try {
    const tasks: WorkerTask[] = [];
    let pairs: number[] = [];
    let taskBytes = 0;
    const flush = () => {
      if (pairs.length) tasks.push({ op: 'prefetch', job: { fd, ranges: new Float64Array(pairs), length: taskBytes } });
      pairs = [];
      taskBytes = 0;
    };
    for (const r of plan.reads) {
      pairs.push(r.offset, r.length);
      taskBytes += r.length;
      if (taskBytes >= TASK_BYTES) flush();
    }
    flush();
    let bytes = 0;
    // Always on pool threads: on this thread a read would hold up QEMU's start and its QMP.
    await runPool({ tasks, threads: jobs, inline: false, onResult: (_i, r) => (bytes += r.dataBytes) });
    return { bytes, elapsedMs: Date.now() - t0 };
  } finally {
    fs.closeSync(fd);
  }
}
