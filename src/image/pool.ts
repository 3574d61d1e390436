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

export async function runPool(o: PoolRun): Promise<WorkerResult[]> {
  const pool = new Piscina({ filename: workerFile(), minThreads: o.threads, maxThreads: o.threads, idleTimeout: 1000 });
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
  try {
    await Promise.all(Array.from({ length: Math.min(o.threads, o.tasks.length) }, lane));
  } finally {
    await pool.destroy();
  }
  if (failure) throw failure;
  return results;
}

function toError(e: NonNullable<WorkerResult['error']>): Error {
  const err = new Error(e.message) as Error & Record<string, unknown>;
  for (const k of ['code', 'errno', 'syscall', 'side'] as const) if (e[k] !== undefined) err[k] = e[k];
  return err;
}
