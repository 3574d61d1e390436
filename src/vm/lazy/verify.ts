/**
 * The check of a lazy restore or clone. QEMU maps the image's RAM and the guest reads it page
 * by page, never through restore's checked copy; so before any QEMU loads its device state (the
 * guest cannot run, and QEMU reads none of its RAM, before that), the worker pool reads every
 * chunk of the image through the page cache and checks its CRC-32C. It runs while QEMU starts,
 * and the pages it reads are the ones the guest's first faults then find in the page cache.
 * A corrupted image is refused: no QEMU is left running on it.
 */
import * as fs from 'fs';
import { openFile } from '../../fs/open-file';
import { runPool } from '../../image/exec/pool';
import { chunksOf, DEFAULT_JOB_SIZE, planJobs } from '../../image/exec/planner';
import { WorkerTask } from '../../image/exec/worker-types';
import { ImageFormatError } from '../../image/format';
import { ImageMetadata } from '../../image/io/read-image';
import { hex } from '../../util/numbers';
import { ProgressListener, ProgressSampler } from '../../progress';

export interface VerifyOptions {
  image: string;
  /** The image's metadata with its checksum tables read (not skipChecksums). */
  meta: ImageMetadata;
  jobs: number;
  onProgress?: ProgressListener;
  signal?: AbortSignal;
}

/** Resolves once every chunk of every block matched its recorded CRC-32C; rejects (EIMG_CHECKSUM) naming the first that did not. */
export async function verifyMappedRam(o: VerifyOptions): Promise<void> {
  const { entries, checksums } = o.meta;
  const fd = openFile(o.image, fs.constants.O_RDONLY);
  let bytes = 0;
  const sampler = o.onProgress && new ProgressSampler(() => bytes, o.onProgress, entries.reduce((n, e) => n + e.size, 0));
  try {
    const plan = planJobs(entries, DEFAULT_JOB_SIZE);
    const tasks: WorkerTask[] = plan.map((j) => {
      const e = entries[j.block];
      return { op: 'verify', job: { fd, offset: j.imageOffset, length: j.end - j.start, chunkSize: e.chunkSize, checksums: checksums[j.block].slice(j.firstChunk, j.firstChunk + chunksOf(j, e)) } };
    });
    let bad: string | undefined;
    const stop = new AbortController();
    const onAbort = () => stop.abort();
    o.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      // On pool threads: this thread starts QEMU meanwhile and talks to it.
      await runPool({
        tasks,
        threads: o.jobs,
        inline: false,
        signal: stop.signal,
        onResult: (i, r) => {
          const j = plan[i];
          const e = entries[j.block];
          bytes += r.dataBytes;
          if (r.badChunk < 0 || bad) return;
          const chunk = j.firstChunk + r.badChunk;
          bad = `block '${e.name}' chunk ${chunk} (bytes ${chunk * e.chunkSize}..${Math.min(e.size, (chunk + 1) * e.chunkSize)}) has CRC-32C ${hex(r.badCrc)}, the image recorded ${hex(checksums[j.block][chunk])}`;
          stop.abort(); // no need to read the rest
        },
      }).catch((e) => {
        if (!bad) throw e;
      });
    } finally {
      o.signal?.removeEventListener('abort', onAbort);
    }
    if (bad) throw new ImageFormatError('EIMG_CHECKSUM', `${o.image}: corrupted: ${bad}; no guest was started on it (a lazy restore or clone checks every chunk before its QEMU loads)`);
  } finally {
    sampler?.stop();
    fs.closeSync(fd);
  }
}
