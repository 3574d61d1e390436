/**
 * The worker pool: Piscina threads that each run one copy job at a time through the addon.
 * Stops handing out jobs at the first failure or abort, waits for the jobs in flight, then
 * reports the first error.
 */
import * as fs from 'fs';
import * as path from 'path';
import { Piscina } from 'piscina';
import { systemError } from '../errors';
import { packageRoot } from '../package-root';
import { WorkerResult, WorkerTask } from './worker-types';

function workerFile(): string {
  const file = path.join(packageRoot(), 'dist', 'src', 'image', 'range-worker.js');
  if (!fs.existsSync(file)) throw new Error(`worker ${file} is missing: run 'npm run build:ts'`);
  return file;
}

export interface PoolRun {
  tasks: WorkerTask[];
  threads: number;
  signal?: AbortSignal;
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
    pool = new Piscina({ filename: workerFile(), minThreads: warm ? threads : 0, maxThreads: threads, idleTimeout: 1000 });
    pools.set(threads, pool);
  }
  return pool;
}

/**
 * Starts the pool's threads now, so that their start-up (a V8 isolate each, then the worker
 * module and the addon: ~50 ms here) overlaps the checks of the plan phase instead of
 * following them. Starting threads changes nothing outside this process.
 */
export function warmPool(threads: number): void {
  poolFor(threads, true);
}

export async function runPool(o: PoolRun): Promise<WorkerResult[]> {
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
      const r = (await pool.run(o.tasks[i])) as WorkerResult;
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
