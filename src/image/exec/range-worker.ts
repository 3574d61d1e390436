/**
 * Piscina worker: runs one copy job with the addon, synchronously on this thread. Errors come
 * back as plain data so their code/syscall survive the trip to the main thread.
 */
import { native } from '../../native';
import { VerifyJob, WorkerResult, WorkerTask } from './worker-types';

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
      case 'verify':
        return verifyRange(task.job);
    }
  } catch (e) {
    const err = e as Error & { code?: string; errno?: number; syscall?: string; side?: string };
    return { dataBytes: 0, badChunk: -1, badCrc: 0, error: { message: err.message, code: err.code, errno: err.errno, syscall: err.syscall, side: err.side } };
  }
}

/** Reads each chunk of the range into one buffer and checks its CRC: the first bad chunk ends the job. */
function verifyRange(job: VerifyJob): WorkerResult {
  const buf = Buffer.alloc(Math.min(job.chunkSize, job.length));
  for (let i = 0, at = 0; at < job.length; i++, at += job.chunkSize) {
    if (job.cancel && Atomics.load(job.cancel, 0)) return { dataBytes: at, badChunk: -1, badCrc: 0, error: { message: 'ECANCELED: operation canceled, verify', code: 'ECANCELED', syscall: 'verify' } };
    const n = Math.min(job.chunkSize, job.length - at);
    let got = 0;
    while (got < n) {
      const r = native.pread(job.fd, buf.subarray(got, n), job.offset + at + got);
      if (r === 0) break; // past the end of the file: the missing bytes fail the CRC
      got += r;
    }
    buf.fill(0, got, n);
    const crc = native.crc32c(buf.subarray(0, n));
    if (crc !== job.checksums[i]) return { dataBytes: at, badChunk: i, badCrc: crc };
  }
  return { dataBytes: job.length, badChunk: -1, badCrc: 0 };
}

export = run;
