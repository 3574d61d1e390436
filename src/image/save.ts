/**
 * save(): one image from guest RAM files plus QEMU's device-state stream (docs/FORMAT.md).
 * Mappable (version 1): RAM blocks are copied by the worker pool straight from an mmap of each
 * RAM file to their fixed offsets (O_DIRECT when asked), holes and zero pages skipped; the
 * device state streams in at the same time. Compressed (version 2): the workers compress chunk
 * by chunk into a packed chunk area; the device state follows once its place is known. The
 * image is committed only after everything is durable.
 */
import { randomBytes } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { openFile } from '../fs/open-file';
import { onPath, systemError, withPath } from '../errors';
import { syncData } from '../fs/sync';
import { native } from '../native';
import { alignUp } from '../util/numbers';
import { packageVersion } from '../package-root';
import { CopyProgress } from './exec/copy-progress';
import { writeAligned } from './io/aligned-io';
import { streamDeviceState } from './io/device-state';
import { checkQemuStream } from './io/qemu-stream-check';
import { CHUNK_SIZE, checkBound, checkInteger, checkRamRead, HASH_UNIT, RamReadMode } from '../util/limits';
import { MAX_LEVEL, MIN_LEVEL } from './compression';
import { checkCopyNumbers, DEFAULT_JOBS, explainCopyError, ImageCopyOptions, prepareImageFd } from './io/image-fd';
import {
  BlockEntry,
  checkChunksDisjoint,
  decodeChunkIndex,
  DEFAULT_ALIGNMENT,
  DEFAULT_CHUNK,
  DEFAULT_HASH_UNIT,
  encodeBlockTable,
  HASH_BYTES,
  HASH_KEY_BYTES,
  hashCountOf,
  MAX_HASH_UNITS,
  encodeChecksums,
  encodeHeader,
  FLAG_DEVICE_STATE_CRC,
  hasChecksums,
  HEADER_SIZE,
  ImageFormatError,
  ImageHeader,
  INDEX_ENTRY,
  Layout,
  LayoutInput,
  MAX_COMPRESSED_CHUNK,
  padToPages,
  planLayout,
} from './format';
import { chunksOf, DEFAULT_JOB_SIZE, planJobs, rangeJob } from './exec/planner';
import { afterPendingSignals } from '../util/event-loop';
import { runPool, warmPool } from './exec/pool';
import { checkUniqueNames, OpenRam, openRamForSave } from './ram-files';
import { chooseRamRead } from './ram-read';
import { checkDistinct, idOfFd } from './identity';
import { WorkerTask } from './exec/worker-types';
import { readHashTables, zeroCrcs } from './io/read-image';
import { Chain, checkBaseUnchanged, describeBlocks, directoryOf, openBaseChain, refuseLayer, sameBlocks } from './chain';

export interface SaveOptions extends ImageCopyOptions {
  /** Checksum granularity (default 8 MiB). */
  chunkSize?: number;
  /** Per-chunk CRC-32C (default true). */
  checksums?: boolean;
  /**
   * Refuse to commit unless the device state is a complete QEMU stream (QEVM … vmdesc), so a
   * QEMU that died mid-migration leaves an incomplete image (default true).
   */
  checkDeviceState?: boolean;
  /** Zero runs shorter than this are written rather than left as holes (default 64 KiB; 4 KiB makes every zero page a hole). */
  minHole?: number;
  /**
   * Writes a compressed (version 2) image with this zstd level (1..19, or negative for faster
   * and larger; 0 stores every chunk raw). Undefined: a mappable version 1 image.
   */
  compressLevel?: number;
  /** Records at least this page size (convert keeps a hugetlbfs image's page size when its RAM passes through ordinary files). */
  minPageSize?: number;
  /**
   * The image fd is a new temporary that the caller renames over `imageName` only after save()
   * returned, and removes otherwise (src/fs/atomic-file.ts createReplacement): a failed or
   * interrupted save leaves `imageName` as it was. `replaces` is the file the rename will
   * replace, which must not be one of the RAM files either.
   */
  staged?: { replaces?: { dev: bigint; ino: bigint } };
  /**
   * Writes a delta (format version 3) of this committed image: only the hash units whose
   * keyed hash differs from the base's are stored. `reference` is the path the delta records,
   * relative to the delta's directory (an absolute one is refused: rule H25); `fd` is the base,
   * open for reading, which must still be the file `reference` names when the delta commits.
   */
  base?: { fd: number; name: string; reference: string };
  /** Content hash unit of a full image (default DEFAULT_HASH_UNIT, 64 KiB, raised to the page size and to keep MAX_HASH_UNITS units at most). */
  hashUnit?: number;
  /** How guest RAM is read (src/image/ram-read.ts): default auto, the path a short sample of each RAM file measures cheaper. */
  ramRead?: RamReadMode;
  /**
   * Called once every check passed, before the image is written and the first byte of RAM is
   * read; save() waits for it, and fails with its error. A manager stops the guest and starts
   * QEMU's migration here, so a refused save never touched the guest.
   */
  onPlanned?: () => Promise<void> | void;
}

export interface SaveResult {
  blocks: Array<{ name: string; size: number; dataBytes: number; offset: number }>;
  deviceStateBytes: number;
  /** CRC-32C of the device state, recorded in the header. */
  deviceStateCrc: number;
  imageSize: number;
  elapsedMs: number;
  /** How guest RAM was read: "pread", "mmap", or "mmap+pread" when the RAM files' filesystems differed; undefined when no job ran. */
  ramRead?: string;
}

export { DEFAULT_JOBS } from './io/image-fd';
/**
 * Zero runs shorter than this are written, longer ones left as holes. Measured on the dev box
 * (1 GiB guest, 25 % scattered zero pages, O_DIRECT, 2 jobs): 4 KiB holes 4.2 s, 64 KiB 0.73 s
 * (the disk's own speed): every hole splits a write in two. Never-touched RAM (SEEK_HOLE) is
 * always a hole.
 */
export const DEFAULT_MIN_HOLE = 64 * 1024;

export async function save(o: SaveOptions): Promise<SaveResult> {
  const t0 = Date.now();
  const name = o.imageName ?? `fd ${o.imageFd}`;
  const jobs = o.jobs ?? DEFAULT_JOBS;
  const chunkSize = o.chunkSize ?? DEFAULT_CHUNK;
  checkCopyNumbers(o, jobs);
  if (o.minHole !== undefined) checkInteger(o.minHole, 'minHole', 0, Number.MAX_SAFE_INTEGER);
  if (o.minPageSize !== undefined) checkInteger(o.minPageSize, 'minPageSize', 4096, 2 ** 30);
  checkBound(chunkSize, 'chunk size', CHUNK_SIZE);
  checkUniqueNames(o.ram);
  if (o.hashUnit !== undefined) checkBound(o.hashUnit, 'hash unit', HASH_UNIT);
  const ramRead = o.ramRead === undefined ? 'auto' : checkRamRead(o.ramRead, 'ramRead');
  const compressed = o.compressLevel !== undefined;
  if (compressed) checkCompression(o.compressLevel!, chunkSize, o.checksums);
  if (o.base && o.checksums === false) throw systemError('EINVAL', 'a delta always has chunk checksums');

  const rams: OpenRam[] = [];
  let chain: Chain | undefined;
  try {
    for (const s of o.ram) rams.push(openRamForSave(s));
    warmPool(jobs, rams.reduce((sum, r) => sum + r.size, 0));
    const pageSize = Math.max(o.minPageSize ?? 4096, ...rams.map((r) => r.pageSize));
    if (rams.some((r) => r.size % pageSize !== 0)) throw systemError('EINVAL', `RAM sizes must be multiples of the largest page size ${pageSize}`);
    if (chunkSize < pageSize) throw systemError('EINVAL', `chunk size ${chunkSize} is smaller than the page size ${pageSize}`);
    const { direct, unit: zeroUnit } = prepareImageFd(o.imageFd, name, 'write', !!o.direct);
    const replaced = o.staged?.replaces ? [{ ...o.staged.replaces, label: name }] : [];
    // A delta: its base and every layer below it must be valid and unchanged now, and none may
    // be the file written (or replaced): a base is never overwritten by its own delta.
    const delta = o.base ? planDelta(o.base, rams, pageSize) : undefined;
    chain = delta?.chain;
    const layerIds = chain ? chain.layers.map((l) => idOfFd(l.fd, `${l.name} (${l === chain!.layers[0] ? 'the base' : 'a layer of the base'})`)) : [];
    const written = [idOfFd(o.imageFd, name), ...replaced];
    if (chain) refuseLayer(chain, written, name);
    checkDistinct([...written, ...layerIds, ...rams.map((r) => idOfFd(r.fd, r.label))]);
    const totalRam = rams.reduce((sum, r) => sum + r.size, 0);
    const hashUnit = delta?.unit ?? o.hashUnit ?? defaultHashUnit(pageSize, totalRam);
    const chunked = compressed || !!delta;
    const layout = planImage(name, {
      blocks: rams.map((r) => ({ name: r.name, size: r.size })),
      pageSize,
      // Chunks are never mapped: they only need the O_DIRECT unit.
      alignment: chunked ? Math.max(4096, zeroUnit) : Math.max(DEFAULT_ALIGNMENT, pageSize, zeroUnit),
      // A delta stores whole hash units, one per chunk.
      chunkSize: delta ? hashUnit : chunkSize,
      checksums: o.checksums ?? true,
      compressed,
      creator: `iohelper ${packageVersion()}`,
      // The chain's secret hash key: a new one for a full image, the base's for a delta.
      hashes: { imageId: randomBytes(16), unit: hashUnit, key: delta?.key ?? randomBytes(HASH_KEY_BYTES) },
      delta: delta && { base: delta.reference, depth: delta.depth },
    });
    const { header, entries } = layout;
    await o.onPlanned?.();
    onPath(name, () => native.ftruncate(o.imageFd, 0));
    // Incomplete (state 0) header and table first: a save that dies leaves an image every
    // reader refuses, and inspect can still list its blocks.
    const firstTable = encodeBlockTable(entries);
    header.tableCrc = native.crc32c(firstTable);
    writeAligned(o.imageFd, firstTable, HEADER_SIZE, name);
    writeAligned(o.imageFd, encodeHeader(header), 0, name);

    const readPaths = rams.map((r) => chooseRamRead(r, ramRead));
    const jobsPlan = planJobs(entries, o.jobSize ?? DEFAULT_JOB_SIZE, hashUnit);
    const checksums = entries.map((e) => new Uint32Array(chunked ? 0 : e.checksumCount));
    const indexes = entries.map((e) => Buffer.alloc(chunked ? e.checksumCount * INDEX_ENTRY : 0));
    const hashTables = entries.map((e) => Buffer.alloc(hashCountOf(header, e) * HASH_BYTES));
    const unitsOf = (j: { start: number; end: number }) => Math.ceil((j.end - j.start) / hashUnit);
    const minHole = Math.max(o.minHole ?? DEFAULT_MIN_HOLE, zeroUnit);
    // Compressed: the next free byte of the chunk area, advanced atomically by every worker.
    const cursor = new BigInt64Array(new SharedArrayBuffer(8));
    cursor[0] = BigInt(header.dataOffset);
    const tasks: WorkerTask[] = jobsPlan.map((j) => {
      const e = entries[j.block];
      const hashing = { hashes: new Uint8Array(unitsOf(j) * HASH_BYTES), hashUnit, hashKey: header.hashes!.key, ramRead: readPaths[j.block] };
      if (chunked) {
        const job = { ramFd: rams[j.block].fd, ramOffset: j.start, length: j.end - j.start, imageFd: o.imageFd, chunkSize: e.chunkSize, unit: zeroUnit, ...hashing };
        const baseHashes = delta ? new Uint8Array(delta.hashes[j.block].subarray((j.start / hashUnit) * HASH_BYTES, (j.start / hashUnit + unitsOf(j)) * HASH_BYTES)) : undefined;
        return { op: 'saveChunks', job: { ...job, level: o.compressLevel ?? 0, cursor, index: new Uint8Array(chunksOf(j, e) * INDEX_ENTRY), baseHashes } };
      }
      const sums = hasChecksums(header) ? new Uint32Array(chunksOf(j, e)) : null;
      return { op: 'save', job: { ...rangeJob(j, e, rams[j.block].fd, o.imageFd, zeroUnit), minHole, checksums: sums, ...hashing } };
    });

    const progress = new CopyProgress(rams.reduce((s, r) => s + r.size, 0), o.onProgress, o.signal);
    // Both copies run at once; the first error wins and stops the other, and both are awaited
    // before anything is closed: a native thread never outlives the fds it uses.
    const stop = new AbortController();
    const onAbort = () => stop.abort();
    o.signal?.addEventListener('abort', onAbort);
    let first: unknown;
    const fail = (e: unknown) => {
      first ??= e;
      progress.cancel();
      stop.abort();
    };
    let deviceStateBytes = 0;
    let deviceStateCrc = 0;
    const copyState = () =>
      streamDeviceState({
        toImage: true,
        pipeFd: o.deviceStateFd ?? 0,
        imageFd: o.imageFd,
        offset: header.deviceStateOffset,
        direct,
        align: zeroUnit,
        progress: progress.counters,
      }).then((r) => ({ bytes: deviceStateBytes, crc: deviceStateCrc } = r), fail);
    try {
      // Mappable: the device state's place is fixed, so it streams in while RAM is copied.
      const deviceState = chunked ? undefined : copyState();
      await runPool({
        tasks,
        threads: jobs,
        signal: stop.signal,
        onResult: (i, r) => {
          const j = jobsPlan[i];
          entries[j.block].dataBytes += r.dataBytes;
          if (r.checksums) checksums[j.block].set(r.checksums, j.firstChunk);
          if (r.index) indexes[j.block].set(r.index, j.firstChunk * INDEX_ENTRY);
          if (r.hashes) hashTables[j.block].set(r.hashes, (j.start / hashUnit) * HASH_BYTES);
          if (r.ramRead) progress.ramRead.add(r.ramRead);
          progress.ramDone += j.end - j.start;
        },
      }).catch(fail);
      await deviceState;
      // Compressed: the device state goes after the last stored chunk, known only now.
      if (chunked && first === undefined) {
        header.deviceStateOffset = alignUp(Number(cursor[0]), header.alignment);
        await copyState();
      }
    } finally {
      o.signal?.removeEventListener('abort', onAbort);
      progress.finish();
    }
    // An interrupt that came while the last jobs ran stops the save as one that came earlier.
    const interrupted = () => {
      if (o.staged) return stagedSaveInterrupted(name);
      return explainCopyError(systemError('ECANCELED', 'interrupted'), name, rams, 'save');
    };
    if (o.signal?.aborted) throw interrupted();
    if (first !== undefined) throw explainCopyError(first, name, rams, 'save');

    if (o.checkDeviceState ?? true) checkQemuStream(o.imageFd, header.deviceStateOffset, deviceStateBytes, name);
    header.deviceStateLength = deviceStateBytes;
    header.imageSize = header.deviceStateOffset + deviceStateBytes;
    onPath(name, () => native.ftruncate(o.imageFd, header.imageSize));
    entries.forEach((e, i) => {
      if (e.checksumCount) writeAligned(o.imageFd, chunked ? padToPages(indexes[i]) : encodeChecksums(checksums[i]), e.checksumOffset, name);
      writeAligned(o.imageFd, padToPages(hashTables[i]), e.hashOffset, name);
    });
    // Chunked: the indexes the workers filled must pass the reader's rules before the
    // image is committed (a save never commits what restore would refuse).
    if (chunked) checkIndexes(name, { ...header, committed: true }, entries, indexes);
    const table = encodeBlockTable(entries);
    header.tableCrc = native.crc32c(table);
    writeAligned(o.imageFd, table, HEADER_SIZE, name);
    await syncData(o.imageFd).catch((e) => Promise.reject(withPath(e, name)));
    // A save of the base may have replaced it meanwhile: the delta would then never restore.
    if (delta) checkBaseUnchanged({ fd: o.imageFd, name }, o.base!, delta.reference);
    // The committed header is the commit of an image written in place (--fd): a signal that came
    // during the writes above is handled now, and nothing from the check to it yields.
    await afterPendingSignals();
    if (o.signal?.aborted) throw interrupted();
    header.committed = true;
    // The CRC of the stream as it arrived: a reader checks the stored bytes against it before
    // QEMU gets them.
    header.flags |= FLAG_DEVICE_STATE_CRC;
    header.deviceStateCrc = deviceStateCrc;
    writeAligned(o.imageFd, encodeHeader(header), 0, name);
    await syncData(o.imageFd).catch((e) => Promise.reject(withPath(e, name)));
    return {
      blocks: entries.map((e) => ({ name: e.name, size: e.size, dataBytes: e.dataBytes, offset: e.offset })),
      deviceStateBytes,
      deviceStateCrc,
      imageSize: header.imageSize,
      elapsedMs: Date.now() - t0,
      ramRead: progress.ramReadText(),
    };
  } finally {
    chain?.close();
    for (const r of rams) r.close();
  }
}

/** An interrupted save into a temporary (SaveOptions.staged): the image it was to replace is untouched. */
export function stagedSaveInterrupted(name: string): Error {
  return systemError('ECANCELED', `save interrupted; ${name} is left as it was`, { path: name });
}

/**
 * Opens `basePath` as the base of a delta written to `imageFd` (named `imageName`): the path
 * the delta records is relative to the delta's directory, so a directory of images can be
 * moved whole. The caller closes `fd`.
 */
export function openBase(basePath: string, imageName: string, imageFd: number): NonNullable<SaveOptions['base']> {
  const fd = openFile(basePath, fs.constants.O_RDONLY);
  try {
    return { fd, name: basePath, reference: path.relative(directoryOf(imageName, imageFd), fs.realpathSync(`/proc/self/fd/${fd}`)) };
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

/**
 * The plan of a delta: the base and its whole chain can be read as the delta's chain
 * (openBaseChain), its blocks are the RAM's, and its hash tables are read (the format bounds
 * them: 64 MiB).
 */
function planDelta(base: NonNullable<SaveOptions['base']>, rams: OpenRam[], pageSize: number) {
  const chain = openBaseChain(base.fd, base.name);
  try {
    const { meta } = chain.layers[0];
    const h = meta.header;
    const ram = rams.map((r) => ({ name: r.name, size: r.size, pageSize: Math.max(r.pageSize, pageSize) }));
    if (!sameBlocks(ram, meta.entries)) {
      throw systemError('EINVAL', `the RAM blocks are not those of the base ${base.name}: it has ${describeBlocks(meta.entries)}; given ${describeBlocks(ram)} (a delta is saved from the same VM, with --ram in the base's order)`, { path: base.name });
    }
    return {
      chain,
      depth: h.hashes!.depth + 1,
      unit: h.hashes!.unit,
      key: h.hashes!.key,
      hashes: readHashTables(base.fd, base.name, h, meta.entries),
      reference: { imageId: h.hashes!.imageId, imageSize: meta.fileSize, headerCrc: meta.headerCrc, path: base.reference },
    };
  } catch (e) {
    chain.close();
    throw e;
  }
}

/**
 * The hash unit of a full image: DEFAULT_HASH_UNIT, at least the page size (a unit never splits
 * a page), raised so the image has at most MAX_HASH_UNITS units (the readers' bound).
 */
function defaultHashUnit(pageSize: number, totalRam: number): number {
  let unit = Math.max(DEFAULT_HASH_UNIT, pageSize);
  while (totalRam / unit > MAX_HASH_UNITS) unit *= 2;
  return unit;
}

/** A compressed save's options, checked before anything is written (convert checks them in its plan too). */
export function checkCompression(level: number, chunkSize: number, checksums: boolean | undefined): void {
  if (!Number.isInteger(level) || level < MIN_LEVEL || level > MAX_LEVEL) throw systemError('EINVAL', `zstd level ${level} is out of range (${MIN_LEVEL}..${MAX_LEVEL}; 0 stores chunks raw)`);
  if (level !== 0 && native.zstd === null) {
    throw systemError('ENOTSUP', 'this iohelper was built without libzstd, so it cannot compress: install libzstd-dev (Debian, Ubuntu) or libzstd-devel (RHEL, Fedora) and reinstall iohelper');
  }
  if (chunkSize > MAX_COMPRESSED_CHUNK) throw systemError('EINVAL', `chunk size ${chunkSize} is above ${MAX_COMPRESSED_CHUNK} (64 MiB), the largest a compressed image allows`);
  if (checksums === false) throw systemError('EINVAL', 'a compressed image always has chunk checksums');
}

function checkIndexes(name: string, header: ImageHeader, entries: BlockEntry[], indexes: Buffer[]): void {
  try {
    const zeroCrc = zeroCrcs();
    entries.forEach((e, i) => decodeChunkIndex(indexes[i], e, header, zeroCrc));
    checkChunksDisjoint(indexes, entries);
  } catch (e) {
    if (e instanceof ImageFormatError) throw systemError('EIO', `cannot commit ${name}: its chunk index breaks a reader rule: ${e.message}`, { path: name });
    throw e;
  }
}

/** The layout, or why the reader would refuse it, before the image is touched. */
function planImage(name: string, input: LayoutInput): Layout {
  try {
    return planLayout(input);
  } catch (e) {
    if (e instanceof ImageFormatError) throw systemError('EINVAL', `cannot save to ${name}: the image would break a reader rule: ${e.message}`, { path: name });
    throw e;
  }
}
