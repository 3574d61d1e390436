/**
 * The worker pool: Piscina threads that each run one copy job at a time through the addon.
 * Stops handing out jobs at the first failure or abort, waits for the jobs in flight, then
 * reports the first error.
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

export async function runPool(o: PoolRun): Promise<WorkerResult[]> {
  if (o.inline !== false && bytesOf(o.tasks) <= INLINE_BYTES) return runInline(o);
  const pool = poolFor(o.threads);
  const results: WorkerResult[] = new Array(o.tasks.length);
  let next = 0;
  let failure: Error | undefined;
  const lane = async () => {
    while (!failure && next < o.tasks.length) {
      if (o.signal?.aborted) {
        failure = systemError('ECANCELED', 'interrupted');
        break;
      }
      const i = next++;
      let r: WorkerResult;
      try {
        r = (await pool.run(o.tasks[i])) as WorkerResult;
      } catch (e) {
        // A worker that died: stop handing out jobs, but let the other lanes finish theirs
        // (their native calls use fds the caller closes only after this returns).
        failure ??= e instanceof Error ? e : new Error(String(e));
        break;
      }
      results[i] = r;
      if (r.error) failure ??= toError(r.error);
      else o.onResult?.(i, r);
    }
  };
  await Promise.all(Array.from({ length: Math.min(o.threads, o.tasks.length) }, lane));
  if (failure) throw failure;
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
    await new Promise((resolve) => setImmediate(resolve)); // let signals and progress through
  }
  return results;
}
