/**
 * Piscina worker: runs one copy job with the addon, synchronously on this thread. Errors come
 * back as plain data so their code/syscall survive the trip to the main thread.
 */
import { native } from '../native';
import { WorkerResult, WorkerTask } from './worker-types';

function run(task: WorkerTask): WorkerResult {
  try {
    switch (task.op) {
      case 'save':
        return { ...native.saveRange(task.job), checksums: task.job.checksums ?? undefined, hashes: task.job.hashes };
      case 'restore':
        return native.restoreRange(task.job);
      case 'saveChunks':
        return { ...native.saveChunks(task.job), index: task.job.index, hashes: task.job.hashes };
      case 'restoreChunks':
        return native.restoreChunks(task.job);
      case 'prefetch':
        return { dataBytes: native.readRanges(task.job.fd, task.job.ranges), badChunk: -1, badCrc: 0 };
    }
  } catch (e) {
    const err = e as Error & { code?: string; errno?: number; syscall?: string; side?: string };
    return { dataBytes: 0, badChunk: -1, badCrc: 0, error: { message: err.message, code: err.code, errno: err.errno, syscall: err.syscall, side: err.side } };
  }
}

export = run;
