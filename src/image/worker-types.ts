/** Messages between the main thread and the range workers (src/image/range-worker.ts). */
import { RangeJob } from '../native';

export interface WorkerTask {
  op: 'save' | 'restore';
  job: RangeJob;
}

export interface WorkerResult {
  dataBytes: number;
  checksums?: Uint32Array;
  badChunk: number;
  badCrc: number;
  error?: { message: string; code?: string; errno?: number; syscall?: string; side?: string };
}
