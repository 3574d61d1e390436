/**
 * Cuts RAM blocks into jobs for the worker pool: (block, start, end) ranges of the RAM file,
 * each mapped to its fixed offset in the image. Ranges start on checksum-chunk boundaries so a
 * job's checksums are whole chunks; a block larger than one job is sliced so every worker can
 * take part of it.
 */
import { RangeJob } from '../native';
import { BlockEntry } from './format';

export interface CopyJob {
  block: number;
  /** Byte range of the block (= of its RAM file). */
  start: number;
  end: number;
  imageOffset: number;
  /** Index of the first checksum chunk of the range. */
  firstChunk: number;
}

export const DEFAULT_JOB_SIZE = 64 << 20;

/** `unitAlign` (a power of two: the hash unit) also divides every job's start, so a job's hashes are whole units. */
export function planJobs(entries: BlockEntry[], jobSize = DEFAULT_JOB_SIZE, unitAlign = 1): CopyJob[] {
  const jobs: CopyJob[] = [];
  entries.forEach((e, block) => {
    const whole = Math.max(e.chunkSize, unitAlign);
    const step = Math.max(whole, Math.floor(jobSize / whole) * whole);
    for (let start = 0; start < e.size; start += step) {
      const end = Math.min(e.size, start + step);
      jobs.push({ block, start, end, imageOffset: e.offset + start, firstChunk: start / e.chunkSize });
    }
  });
  // Largest first keeps the tail short when blocks differ in size.
  return jobs.sort((a, b) => b.end - b.start - (a.end - a.start));
}

/** The addon's job for a planned range: RAM file range -> its offset in the image. */
export function rangeJob(j: CopyJob, e: BlockEntry, ramFd: number, imageFd: number, zeroUnit: number): RangeJob {
  return { ramFd, ramOffset: j.start, length: j.end - j.start, imageFd, imageOffset: j.imageOffset, chunkSize: e.chunkSize, zeroUnit };
}

/** How many checksum chunks a planned range covers. */
export function chunksOf(j: CopyJob, e: BlockEntry): number {
  return Math.ceil((j.end - j.start) / e.chunkSize);
}
