/**
 * Prefetch of a recorded working set (src/image/working-set.ts) into the page cache, for lazy
 * restores and clones that map the image: the ranges are coalesced into large reads, taken in
 * first-touch order by the worker pool, and read while QEMU starts and the guest runs. The
 * guest never waits on it: a page it touches first is simply read by its own fault.
 */
import * as fs from 'fs';
import { errorText } from '../errors';
import { runPool } from './pool';
import { ImageMetadata } from './read-image';
import { WorkerTask } from './worker-types';
import { coalesce, decodeWorkingSet, MAX_WS_RANGES, workingSetPath, WorkingSetError } from './working-set';

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
 * is no prefetch.
 */
export function planPrefetch(image: string, meta: ImageMetadata, warn: (message: string) => void): PrefetchPlan | undefined {
  const file = workingSetPath(image);
  let bytes: Buffer;
  try {
    const st = fs.statSync(file);
    if (!st.isFile()) throw new WorkingSetError('not a regular file');
    if (st.size > 48 + 16 * MAX_WS_RANGES + 4) throw new WorkingSetError(`${st.size} bytes, more than a working-set file can have`);
    bytes = fs.readFileSync(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    warn(`ignoring the working set ${file}: ${errorText(e)}`);
    return undefined;
  }
  try {
    const ws = decodeWorkingSet(bytes, meta);
    const reads = coalesce(ws.ranges);
    return { file, reads, bytes: reads.reduce((n, r) => n + r.length, 0) };
  } catch (e) {
    if (!(e instanceof WorkingSetError)) throw e;
    warn(`ignoring the working set ${file}: ${e.message}`);
    return undefined;
  }
}

/** Reads the plan's ranges through the page cache with `jobs` worker threads. Owns its fd. */
export async function runPrefetch(image: string, plan: PrefetchPlan, jobs: number): Promise<PrefetchReport> {
  const t0 = Date.now();
  const fd = fs.openSync(image, fs.constants.O_RDONLY);
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
