/**
 * restore(): validates an image, fills the RAM files from it in parallel (each piece read into
 * a worker's buffer, its CRC checked there, then written into the RAM file; hugetlbfs through a
 * mapping; holes left as holes), then streams the device state out for QEMU's migrate-incoming.
 * Nothing is written to a RAM file until the image and every RAM target have passed their
 * checks; fresh PATH targets are filled in place (put back on failure), others replaced only
 * once every chunk verified (src/image/restore-targets.ts).
 */
import * as path from 'path';
import { onPath, systemError } from '../errors';
import { removeStaleTemporaries } from '../fs/stale-temporaries';
import { checkCopyNumbers, DEFAULT_JOBS, explainCopyError, ImageCopyOptions, prepareImageFd } from './io/image-fd';
import { CopyProgress } from './exec/copy-progress';
import { checkDeviceState, copyDeviceState } from './io/device-state';
import { BlockEntry, CHUNK_ZERO, FLAG_COMPRESSED, hasChecksums, ImageFormatError, INDEX_ENTRY, isChunked } from './format';
import { hex } from '../util/numbers';
import { openChain, resolveChain } from './chain';
import { chunksOf, DEFAULT_JOB_SIZE, planJobs, rangeJob } from './exec/planner';
import { afterPendingSignals } from '../util/event-loop';
import { runPool, warmPool } from './exec/pool';
import { readChecksums, readImageMetadata } from './io/read-image';
import { native } from '../native';
import { checkUniqueNames, RamSource } from './ram-files';
import { commit, discard, planTargets, stageTargets } from './restore-targets';
import { idOfFd } from './identity';
import { WorkerTask } from './exec/worker-types';

export interface RestoreOptions extends ImageCopyOptions {
  /** Allow hard-linked RAM targets (restoring changes the file under every name). */
  force?: boolean;
  /** A delta: its base at this path, instead of the path the delta records (a moved chain). */
  base?: string;
  /** Skip checking chunk CRCs and the device state's CRC (default: check). */
  noVerify?: boolean;
  /** Called once every check passed and the targets are open, before the first byte is filled. */
  onPlanned?: () => void;
  /** Called once every RAM file holds its block (checked), before the device state streams. */
  onRamFilled?: () => void;
}

export interface RestoreResult {
  blocks: Array<{ name: string; size: number; dataBytes: number }>;
  deviceStateBytes: number;
  verified: boolean;
  elapsedMs: number;
}

function matchNames(imageNames: string[], given: RamSource[]): void {
  const want = new Set(imageNames);
  const have = new Set(given.map((g) => g.name));
  const missing = imageNames.filter((n) => !have.has(n));
  const extra = given.map((g) => g.name).filter((n) => !want.has(n));
  if (missing.length || extra.length) {
    const parts = [];
    if (missing.length) parts.push(`the image has ${missing.map((n) => `'${n}'`).join(', ')} but no --ram names it`);
    if (extra.length) parts.push(`--ram ${extra.map((n) => `'${n}'`).join(', ')} not in the image`);
    throw systemError('EINVAL', `RAM blocks do not match the image: ${parts.join('; ')} (image blocks: ${imageNames.join(', ')})`);
  }
}

export async function restore(o: RestoreOptions): Promise<RestoreResult> {
  const t0 = Date.now();
  const name = o.imageName ?? `fd ${o.imageFd}`;
  const jobs = o.jobs ?? DEFAULT_JOBS;

  // Plan: every check of the image and of every target, nothing written.
  checkCopyNumbers(o, jobs);
  checkUniqueNames(o.ram);
  const first = prepareImageFd(o.imageFd, name, 'read', !!o.direct);
  const direct = first.direct;
  const meta = onPath(name, () => readImageMetadata(o.imageFd, name, { skipChecksums: true }));
  const { header, entries } = meta;
  warmPool(jobs, entries.reduce((sum, e) => sum + e.size, 0));
  matchNames(entries.map((e) => e.name), o.ram);
  // A delta: every base, opened by the path it records and checked to be the image it was
  // saved against, before anything is written (closed when the restore ends).
  const chain = onPath(name, () => openChain({ fd: o.imageFd, name, meta }, { base: o.base }));
  try {
    return await restoreChain();
  } finally {
    chain.close();
  }

  async function restoreChain(): Promise<RestoreResult> {
    const compressed = isChunked(header);
    const zstdLayer = chain.layers.find((l) => isChunked(l.meta.header) && l.meta.header.flags & FLAG_COMPRESSED);
    if (zstdLayer && native.zstd === null) {
      throw systemError('ENOTSUP', `${zstdLayer.name} is a compressed image and this iohelper was built without libzstd: install libzstd-dev (Debian, Ubuntu) or libzstd-devel (RHEL, Fedora) and reinstall iohelper`, { path: zstdLayer.name });
    }
    // The bases are read the way the top is: O_DIRECT with --direct, at the largest unit of any.
    let unit = first.unit;
    for (const l of chain.layers.slice(1)) unit = Math.max(unit, prepareImageFd(l.fd, l.name, 'read', direct).unit);
    const layerFds = chain.layers.slice(1).map((l) => l.fd);
    // Chunked: the chunk indexes (a chain's resolved into one) say where chunks are (read even
    // without verifying) and how much RAM their data fills once decompressed, which the targets'
    // filesystems must hold.
    const indexes = compressed ? onPath(name, () => resolveChain(chain).indexes) : [];
    const ramNeeds = compressed ? entries.map((e, i) => ({ ...e, dataBytes: ramBytesOf(indexes[i], e) })) : entries;
    // Temporaries a killed restore left beside these targets hold RAM on tmpfs: removed before the
    // room check counts them (only dead runs' files: nothing the user named is touched).
    for (const dir of new Set(o.ram.filter((r) => r.path !== undefined).map((r) => path.dirname(path.resolve(r.path!))))) {
      for (const m of removeStaleTemporaries(dir)) o.onWarning?.(m);
    }
    const plans = planTargets(ramNeeds, o.ram, idOfFd(o.imageFd, name), !!o.force);
    // Read only now that names and targets match (their size is bounded by the format: 64 MiB).
    const verify = !o.noVerify && hasChecksums(header);
    const checksums = verify && !compressed ? onPath(name, () => readChecksums(o.imageFd, name, entries)) : [];
    // The device state goes to QEMU as it is, so it is checked whole now, before any RAM target
    // is touched (it is read again to be streamed; the format bounds it).
    if (!o.noVerify) checkDeviceState(o.imageFd, header, name);

    // Execute: fill (fresh targets and fd targets in place, others through temporaries), verify, commit.
    const staged = stageTargets(plans);
    let committed = false;
    try {
      o.onPlanned?.();
      const plan = planJobs(entries, o.jobSize ?? DEFAULT_JOB_SIZE);
      const tasks: WorkerTask[] = plan.map((j) => {
        const e = entries[j.block];
        if (compressed) {
          const index = new Uint8Array(indexes[j.block].subarray(j.firstChunk * INDEX_ENTRY, (j.firstChunk + chunksOf(j, e)) * INDEX_ENTRY));
          return { op: 'restoreChunks', job: { ramFd: staged[j.block].fd, ramOffset: j.start, length: j.end - j.start, imageFd: o.imageFd, layerFds, chunkSize: e.chunkSize, unit, index, verify, ramWrite: staged[j.block].plan.byWrite ? 1 : 0 } };
        }
        const expected = verify ? checksums[j.block].slice(j.firstChunk, j.firstChunk + chunksOf(j, e)) : null;
        return { op: 'restore', job: { ...rangeJob(j, e, staged[j.block].fd, o.imageFd, unit), checksums: expected, ramWrite: staged[j.block].plan.byWrite ? 1 : 0 } };
      });
      const progress = new CopyProgress(entries.reduce((s, e) => s + e.size, 0) + header.deviceStateLength, o.onProgress, o.signal);
      let deviceStateBytes: number;
      try {
        let bad: { code: 'EIMG_CHUNK' | 'EIMG_CHECKSUM'; text: string } | undefined;
        await runPool({
          tasks,
          threads: jobs,
          signal: o.signal,
          onResult: (i, r) => {
            const j = plan[i];
            const e = entries[j.block];
            progress.ramDone += j.end - j.start;
            if (r.badChunk >= 0 && !bad) {
              const chunk = j.firstChunk + r.badChunk;
              const layer = compressed ? indexes[j.block].readUInt32LE(chunk * INDEX_ENTRY + 20) : 0;
              const where = `block '${e.name}' chunk ${chunk} (bytes ${chunk * e.chunkSize}..${Math.min(e.size, (chunk + 1) * e.chunkSize)})${layer ? ` stored in its base ${chain.layers[layer].name}` : ''}`;
              const recorded = compressed ? indexes[j.block].readUInt32LE(chunk * INDEX_ENTRY + 12) : checksums[j.block][chunk];
              bad = r.badFrame
                ? { code: 'EIMG_CHUNK', text: `${where} does not decode: ${r.badFrame}` }
                : { code: 'EIMG_CHECKSUM', text: `${where} has CRC-32C ${hex(r.badCrc)}, the image recorded ${hex(recorded)}` };
            }
          },
        });
        if (bad) throw new ImageFormatError(bad.code, `${name}: corrupted: ${bad.text}; ${unchangedNote(staged)}`);
        // An interrupt is honoured up to the commit: a signal that came while the last jobs
        // ended is handled now, and nothing from this check to the last rename yields.
        await afterPendingSignals();
        if (o.signal?.aborted) throw systemError('ECANCELED', 'interrupted');
        commit(staged);
        committed = true;
        o.onRamFilled?.();
        deviceStateBytes = await copyDeviceState({
          toImage: false,
          pipeFd: o.deviceStateFd ?? 1,
          imageFd: o.imageFd,
          offset: header.deviceStateOffset,
          direct,
          align: unit,
          progress: progress.counters,
        });
      } catch (e) {
        throw explainCopyError(e, name, staged, committed ? 'restore-device-state' : 'restore');
      } finally {
        progress.finish();
      }
      // A signal that stopped the copy without an error of its own: the same words as one that did.
      if (o.signal?.aborted) throw explainCopyError(systemError('ECANCELED', 'interrupted'), name, staged, 'restore-device-state');
      if (deviceStateBytes !== header.deviceStateLength) {
        throw new ImageFormatError('EIMG_TRUNCATED', `${name}: device state has ${deviceStateBytes} bytes, the header says ${header.deviceStateLength}`);
      }
      return {
        blocks: entries.map((e) => ({ name: e.name, size: e.size, dataBytes: e.dataBytes })),
        deviceStateBytes,
        verified: verify,
        elapsedMs: Date.now() - t0,
      };
    } finally {
      if (!committed) discard(staged);
    }
  }
}

/** What a failed restore leaves (src/image/restore-targets.ts discards before the error reaches the user). */
export const UNCHANGED = 'no RAM file was changed';

/** UNCHANGED, unless fd targets (written in place, never put back) were given. */
function unchangedNote(targets: Array<{ label: string; plan: { fd?: number } }>): string {
  const fds = targets.filter((t) => t.plan.fd !== undefined).map((t) => t.label);
  return fds.length ? `no RAM file given by path was changed; ${fds.join(', ')} may be partly written` : UNCHANGED;
}

/** The RAM a compressed block's stored (non-zero) chunks fill when decompressed. */
function ramBytesOf(index: Buffer, e: BlockEntry): number {
  let bytes = 0;
  for (let i = 0; i < e.checksumCount; i++) {
    if (index.readUInt32LE(i * INDEX_ENTRY + 16) !== CHUNK_ZERO) bytes += Math.min(e.chunkSize, e.size - i * e.chunkSize);
  }
  return bytes;
}
