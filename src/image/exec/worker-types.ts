/** Messages between the main thread and the range workers (src/image/exec/range-worker.ts). */
import { ChunkJob, RangeJob } from '../../native';

/** save/restore: a range at its fixed place in a mappable image; saveChunks/restoreChunks: a range of a compressed image's chunks. */
export type WorkerTask =
  | { op: 'save' | 'restore'; job: RangeJob }
  | { op: 'saveChunks' | 'restoreChunks'; job: ChunkJob }
  /** prefetch: read [offset, length) pairs of fd through the page cache; length is their sum. */
  | { op: 'prefetch'; job: { fd: number; ranges: Float64Array; length: number } }
  /** verify: read [offset, offset + length) of fd through the page cache, chunk by chunk, and check each chunk's CRC-32C. */
  | { op: 'verify'; job: VerifyJob };

export interface VerifyJob {
  fd: number;
  offset: number;
  length: number;
  chunkSize: number;
  /** The recorded CRC-32C of each chunk of the range. */
  checksums: Uint32Array;
  /** As the native jobs' cancel word (src/image/exec/pool.ts): checked before each chunk. */
  cancel?: Int32Array;
}

export interface WorkerResult {
  dataBytes: number;
  checksums?: Uint32Array;
  /** save, saveChunks: each hash unit's keyed hash (AES-128-GMAC tag), filled. */
  hashes?: Uint8Array;
  /** saveChunks: the range's chunk index entries, filled. */
  index?: Uint8Array;
  badChunk: number;
  badCrc: number;
  /** save, saveChunks: how the RAM file was read. */
  ramRead?: 'pread' | 'mmap';
  /** restoreChunks: why chunk badChunk does not decode. */
  badFrame?: string;
  error?: { message: string; code?: string; errno?: number; syscall?: string; side?: string };
}
