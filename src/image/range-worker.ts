/**
 * Piscina worker: runs one copy job with the addon, synchronously on this thread. Errors come
 * back as plain data so their code/syscall survive the trip to the main thread.
 */
import { native } from '../native';
import { WorkerResult, WorkerTask } from './worker-types';

function run(task: WorkerTask): WorkerResult {
  try {
    const r = task.op === 'save' ? native.saveRange(task.job) : native.restoreRange(task.job);
    return { ...r, checksums: task.op === 'save' ? (task.job.checksums ?? undefined) : undefined };
  } catch (e) {
    const err = e as Error & { code?: string; errno?: number; syscall?: string; side?: string };
    return { dataBytes: 0, badChunk: -1, badCrc: 0, error: { message: err.message, code: err.code, errno: err.errno, syscall: err.syscall, side: err.side } };
  }
}

export = run;
