/**
 * The worker pool: Piscina threads that each run one copy job at a time through the addon.
 * The first failure, the first chunk that fails its check, or an abort stops the copy: no job
 * is handed out after it, and the jobs in flight are cancelled through a word they all share
 * (the addon checks it once per chunk or I/O, native/copy_job.h), so they end within a block
 * instead of running out their ranges. The pool still waits for them (their native calls use
 * fds the caller closes only after this returns), then reports the first error.
 *
 * A copy of at most INLINE_BYTES runs on the calling thread instead: starting threads (a V8
 * isolate each, then the worker module and the addon) costs more than such a copy, and Piscina
 * itself is then never loaded.
 */
import * as fs from 'fs';
import * as path from 'path';
import type { Piscina } from 'piscina';
import { systemError } from '../../errors';
import { packageRoot } from '../../package-root';
import runTask = require('./range-worker');
import { WorkerResult, WorkerTask } from './worker-types';

/** Copies up to this many bytes of RAM on the calling thread (it blocks for a few ms). */
const INLINE_BYTES = 32 * 1024 * 1024;

function workerFile(): string {
  const file = path.join(packageRoot(), 'dist', 'src', 'image', 'exec', 'range-worker.js');
  if (!fs.existsSync(file)) throw new Error(`worker ${file} is missing: run 'npm run build:ts'`);
  return file;
}

export interface PoolRun {
  tasks: WorkerTask[];
  threads: number;
  signal?: AbortSignal;
  /** false: always on pool threads, even when the jobs are small (default: small ones inline). */
  inline?: boolean;
  /** Called on the main thread as each job finishes. */
  onResult?: (index: number, result: WorkerResult) => void;
}

/**
 * One pool per thread count for the life of the process: creating worker threads (each a new
 * V8 isolate) per call is slow and leaves memory behind. Idle threads exit after a second.
 */
const pools = new Map<number, Piscina>();

function poolFor(threads: number, warm = false): Piscina {
  let pool = pools.get(threads);
  if (!pool) {
    // Loaded on first use only: the inline path never needs it.
    const { Piscina: PiscinaClass } = require('piscina') as typeof import('piscina');
    pool = new PiscinaClass({ filename: workerFile(), minThreads: warm ? threads : 0, maxThreads: threads, idleTimeout: 1000 });
    pools.set(threads, pool);
  }
  return pool;
}

/**
 * Starts the pool's threads now, so that their start-up (a V8 isolate each, then the worker
 * module and the addon: ~50 ms here) overlaps the checks of the plan phase instead of
 * following them. Starting threads changes nothing outside this process. `ramBytes` small
 * enough to be copied inline starts nothing.
 */
export function warmPool(threads: number, ramBytes: number): void {
  if (ramBytes > INLINE_BYTES) poolFor(threads, true);
}

const bytesOf = (tasks: WorkerTask[]) => tasks.reduce((sum, t) => sum + t.job.length, 0);

/** Gives every copy job of one run the run's cancel word (prefetch reads have none). */
function withCancel(task: WorkerTask, cancel: Int32Array): WorkerTask {
  return task.op === 'prefetch' ? task : ({ ...task, job: { ...task.job, cancel } } as WorkerTask);
}

/**
 * Runs the tasks, at most `threads` at a time. Rejects with the first job's error (ECANCELED
 * "interrupted" after an abort). A result with a bad chunk (badChunk >= 0) is passed to
 * onResult and stops the run like an error; the run then resolves, and the results of the
 * jobs it stopped are missing: the caller reports the bad chunk.
 */
export async function runPool(o: PoolRun): Promise<WorkerResult[]> {
  const cancel = new Int32Array(new SharedArrayBuffer(4));
  const tasks = o.tasks.map((t) => withCancel(t, cancel));
  if (o.inline !== false && bytesOf(tasks) <= INLINE_BYTES) return runInline({ ...o, tasks });
  const pool = poolFor(o.threads);
  const results: WorkerResult[] = new Array(tasks.length);
  let next = 0;
  let failure: Error | undefined;
  let stopped = false;
  const stop = () => {
    stopped = true;
    Atomics.store(cancel, 0, 1);
  };
  const onAbort = () => stop();
  o.signal?.addEventListener('abort', onAbort);
  const lane = async () => {
    while (!stopped && next < tasks.length) {
      if (o.signal?.aborted) {
        stop();
        break;
      }
      const i = next++;
      let r: WorkerResult;
      try {
        r = (await pool.run(tasks[i])) as WorkerResult;
      } catch (e) {
        // A worker that died: the others are cancelled, and waited for.
        if (!stopped) failure = e instanceof Error ? e : new Error(String(e));
        stop();
        break;
      }
      results[i] = r;
      if (r.error) {
        // The first failure wins: what a job reports once the run was stopped (ECANCELED, or
        // an error of its own while it was being cancelled) comes after it.
        if (!stopped) failure = toError(r.error);
        stop();
      } else {
        o.onResult?.(i, r);
        if (r.badChunk >= 0) stop();
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(o.threads, tasks.length) }, lane));
  } finally {
    o.signal?.removeEventListener('abort', onAbort);
  }
  if (failure) throw failure;
  if (o.signal?.aborted) throw systemError('ECANCELED', 'interrupted');
  return results;
}

function toError(e: NonNullable<WorkerResult['error']>): Error {
  const err = new Error(e.message) as Error & Record<string, unknown>;
  for (const k of ['code', 'errno', 'syscall', 'side'] as const) if (e[k] !== undefined) err[k] = e[k];
  return err;
}

/** The same contract as the pool's, one job after another on this thread. */
async function runInline(o: PoolRun): Promise<WorkerResult[]> {
  const results: WorkerResult[] = [];
  for (const [i, task] of o.tasks.entries()) {
    if (o.signal?.aborted) throw systemError('ECANCELED', 'interrupted');
    const r = runTask(task);
    results.push(r);
    if (r.error) throw toError(r.error);
    o.onResult?.(i, r);
    if (r.badChunk >= 0) break;
    await new Promise((resolve) => setImmediate(resolve)); // let signals and progress through
  }
  if (o.signal?.aborted) throw systemError('ECANCELED', 'interrupted');
  return results;
}
