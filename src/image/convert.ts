/**
 * convert(): an image in the other form, compressed (version 2) <-> mappable (version 1), or
 * recompressed at another level. The RAM passes through sparse scratch files beside the target
 * (restore, then save: every chunk's CRC is checked on the way when the source has checksums), the device state is copied as
 * it is. The target appears only when complete (written under a temporary name, then linked to
 * the target's name); a refused or failed convert leaves no file behind, and its messages speak
 * of the source and the target, never of the scratch files the user did not name.
 */
import * as fs from 'fs';
import * as path from 'path';
import { isSystemError, systemError, withPath } from '../errors';
import { scratchDirBeside, syncDir, tempPathBeside } from '../fs/atomic-file';
import { openFile } from '../fs/open-file';
import { removeStaleTemporaries } from '../fs/stale-temporaries';
import { native } from '../native';
import { ProgressListener } from '../progress';
import { DEFAULT_CHUNK, hasDeviceStateCrc, ImageFormatError, MAX_COMPRESSED_CHUNK, VERSION_COMPRESSED, VERSION_DELTA } from './format';
import { hex } from '../util/numbers';
import { afterPendingSignals } from '../util/event-loop';
import { checkJobs, DEFAULT_JOBS } from './io/image-fd';
import { readImageMetadata } from './io/read-image';
import { restore, UNCHANGED } from './restore';
import { checkCompression, save } from './save';

export interface ConvertOptions {
  source: string;
  target: string;
  /** zstd level for a compressed target; undefined: a mappable target. */
  compressLevel?: number;
  jobs?: number;
  direct?: boolean;
  /** Progress of the restore into scratch files, then of the save (it runs twice from 0). */
  onProgress?: ProgressListener;
  signal?: AbortSignal;
  /** Told what convert did on the side (temporaries of dead runs it removed). */
  onWarning?: (message: string) => void;
  /** The source may be a delta: the target is one standalone image of it and its bases. */
  flatten?: boolean;
  /** A delta source: its base at this path, instead of the one it records (a moved chain). */
  base?: string;
}

export interface ConvertResult {
  version: number;
  sourceBytes: number;
  targetBytes: number;
  elapsedMs: number;
}

export async function convert(o: ConvertOptions): Promise<ConvertResult> {
  const t0 = Date.now();
  const jobs = o.jobs ?? DEFAULT_JOBS;
  checkJobs(jobs);
  // Plan: the target's name is free and its directory writable, the source is a valid image.
  const dir = checkTarget(o.target);
  const sourceFd = openFile(o.source, fs.constants.O_RDONLY);
  let scratch: string | undefined;
  let temp: string | undefined;
  try {
    const { header, entries } = readImageMetadata(sourceFd, o.source, { skipChecksums: true });
    const delta = header.version === VERSION_DELTA;
    if (delta && !o.flatten) throw systemError('EINVAL', `${o.source} is a delta (it holds only what changed since its base): 'iohelper convert --flatten ${o.source} ${o.target}' writes one standalone image of it and its bases`, { path: o.source });
    // A delta's chunks are its hash units: its standalone copy gets the usual chunk size.
    const chunkSize = delta ? DEFAULT_CHUNK : entries[0].chunkSize;
    if (o.compressLevel !== undefined && entries.some((e) => e.chunkSize > MAX_COMPRESSED_CHUNK)) {
      throw systemError('EINVAL', `${o.source} has chunks above 64 MiB, more than a compressed image allows`, { path: o.source });
    }
    if (o.compressLevel !== undefined) checkCompression(o.compressLevel, chunkSize, true);
    if (entries.some((e) => e.chunkSize !== entries[0].chunkSize)) throw systemError('EINVAL', `${o.source}: blocks with different chunk sizes cannot be converted`, { path: o.source });

    // Execute: RAM into sparse scratch files beside the target, then the new image from them.
    let result;
    try {
      for (const m of removeStaleTemporaries(dir)) o.onWarning?.(m);
      // The PID in the name lets a later run remove it if this one is killed.
      scratch = scratchDirBeside(path.join(dir, path.basename(o.target)));
      const ram = entries.map((e, i) => ({ name: e.name, path: path.join(scratch!, `block-${i}`) }));
      const nullFd = fs.openSync('/dev/null', 'w');
      try {
        await restore({ imageFd: sourceFd, imageName: o.source, base: o.base, ram, deviceStateFd: nullFd, jobs, direct: o.direct, signal: o.signal, onProgress: o.onProgress });
      } finally {
        fs.closeSync(nullFd);
      }
      temp = tempPathBeside(path.join(dir, path.basename(o.target)));
      const out = fs.openSync(temp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
      let stateFd: number | undefined;
      try {
        // The device state is the last bytes of the source: read from its offset to the end.
        stateFd = openFile(o.source, fs.constants.O_RDONLY);
        native.lseek(stateFd, header.deviceStateOffset, native.constants.SEEK_SET);
        result = await save({
          imageFd: out,
          imageName: o.target,
          ram,
          deviceStateFd: stateFd,
          jobs,
          direct: o.direct,
          chunkSize,
          compressLevel: o.compressLevel,
          minPageSize: header.pageSize,
          // Copied as it is: the source's reader rules already bound it, and an image saved
          // without the stream check stays convertible.
          checkDeviceState: false,
          signal: o.signal,
          onProgress: o.onProgress,
        });
      } finally {
        if (stateFd !== undefined) fs.closeSync(stateFd);
        fs.closeSync(out);
      }
      if (result.deviceStateBytes !== header.deviceStateLength) {
        throw systemError('EIO', `${o.source}: device state gave ${result.deviceStateBytes} bytes, the header says ${header.deviceStateLength}`, { path: o.source });
      }
      // The link below is the commit: a signal that came during the save's last writes is
      // handled now, and nothing from this check to the link yields.
      await afterPendingSignals();
      if (o.signal?.aborted) throw systemError('ECANCELED', 'interrupted');
    } catch (e) {
      throw convertFailure(e, o.target, dir, scratch);
    }
    // The restore above checked the source's device state against its CRC; the copy the save
    // read again must be those same bytes, so the target records the same CRC (a source saved
    // without one gets the CRC of its device state as it is).
    if (hasDeviceStateCrc(header) && result.deviceStateCrc !== header.deviceStateCrc) {
      throw new ImageFormatError('EIMG_CHECKSUM', `${o.source}: corrupted: the device state read for the copy has CRC-32C ${hex(result.deviceStateCrc)}, the image recorded ${hex(header.deviceStateCrc)}`);
    }
    // link() fails if the target appeared meanwhile (the plan found the name free): it is never replaced.
    try {
      fs.linkSync(temp, o.target);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw systemError('EEXIST', `${o.target} appeared while converting; left as it is`, { path: o.target });
      throw e;
    }
    fs.rmSync(temp);
    temp = undefined;
    syncDir(dir);
    return { version: o.compressLevel === undefined ? 1 : VERSION_COMPRESSED, sourceBytes: fs.statSync(o.source).size, targetBytes: result.imageSize, elapsedMs: Date.now() - t0 };
  } finally {
    fs.closeSync(sourceFd);
    if (temp) fs.rmSync(temp, { force: true });
    if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
  }
}

/**
 * The plan's checks of the target: its name is free, not even taken by a dangling symbolic link
 * (link() at the end would refuse it, after all the work), and its directory is a writable
 * directory (the scratch files and the new image are made there). Returns that directory.
 */
function checkTarget(target: string): string {
  let st: fs.Stats | undefined;
  try {
    st = fs.lstatSync(target);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw withPath(e, target);
  }
  if (st?.isSymbolicLink()) {
    const dangling = !fs.existsSync(target);
    throw systemError('EEXIST', `${target} exists (a symbolic link${dangling ? ' to nothing' : ''}); convert writes a new file and never writes through a link (remove it first)`, { path: target });
  }
  if (st) throw systemError('EEXIST', `${target} exists; convert writes a new file (remove it first)`, { path: target });
  const dir = path.dirname(path.resolve(target));
  try {
    if (!fs.statSync(dir).isDirectory()) throw systemError('ENOTDIR', `${dir} is not a directory`, { path: dir });
    fs.accessSync(dir, fs.constants.W_OK);
  } catch (e) {
    throw withPath(e, dir);
  }
  return dir;
}

/**
 * A failure after the plan, told as convert's: the target was not created (its temporary and
 * the scratch files are removed), an interruption is convert's, not the inner restore's or
 * save's, and no message names the scratch files.
 */
function convertFailure(e: unknown, target: string, dir: string, scratch: string | undefined): unknown {
  if (!isSystemError(e)) return e;
  const notCreated = `${target} was not created`;
  if (e.code === 'ECANCELED') return systemError('ECANCELED', `convert interrupted; ${notCreated}`, { path: target });
  if (e.code === 'ENOSPC' || e.code === 'EDQUOT') {
    return systemError(e.code, `no space left in ${dir} to convert into ${target}: the RAM's data is held in scratch files there while the new image is written beside them; ${notCreated}`, { path: target });
  }
  // The inner restore's own wording: no RAM file of the user's is involved here.
  let message = e.message.endsWith(`; ${UNCHANGED}`) ? e.message.slice(0, -UNCHANGED.length - 2) : e.message;
  if (scratch) message = message.split(scratch).join(`(convert's scratch files in ${dir})`);
  message += `; ${notCreated}`;
  if (e instanceof ImageFormatError) return new ImageFormatError(e.code, message);
  // No syscall: the message is already whole (the CLI would otherwise rebuild it from the path).
  return systemError(e.code, message, { path: scratch && e.path?.startsWith(scratch) ? target : e.path });
}
