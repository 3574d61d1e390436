/**
 * convert(): an image in the other form, compressed (version 2) <-> mappable (version 1), or
 * recompressed at another level. The RAM passes through sparse scratch files beside the target
 * (restore, then save: every chunk's CRC is checked on the way when the source has checksums), the device state is copied as
 * it is. The target appears only when complete (written under a temporary name, then renamed);
 * a refused or failed convert leaves no file behind.
 */
import * as fs from 'fs';
import * as path from 'path';
import { systemError } from '../errors';
import { syncDir, tempPathBeside } from '../fs/atomic-file';
import { native } from '../native';
import { ProgressListener } from '../progress';
import { hasDeviceStateCrc, hex, ImageFormatError, MAX_COMPRESSED_CHUNK, VERSION_COMPRESSED } from './format';
import { checkJobs, DEFAULT_JOBS } from './image-fd';
import { readImageMetadata } from './read-image';
import { restore } from './restore';
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
  // Plan: the source is a valid image, the target does not exist and is not the source.
  const sourceFd = fs.openSync(o.source, fs.constants.O_RDONLY);
  let scratch: string | undefined;
  let temp: string | undefined;
  try {
    const { header, entries } = readImageMetadata(sourceFd, o.source, { skipChecksums: true });
    if (fs.existsSync(o.target)) throw systemError('EEXIST', `${o.target} exists; convert writes a new file (remove it first)`, { path: o.target });
    const dir = path.dirname(path.resolve(o.target));
    const chunkSize = entries[0].chunkSize;
    if (o.compressLevel !== undefined && entries.some((e) => e.chunkSize > MAX_COMPRESSED_CHUNK)) {
      throw systemError('EINVAL', `${o.source} has chunks above 64 MiB, more than a compressed image allows`, { path: o.source });
    }
    if (o.compressLevel !== undefined) checkCompression(o.compressLevel, chunkSize, true);
    if (entries.some((e) => e.chunkSize !== chunkSize)) throw systemError('EINVAL', `${o.source}: blocks with different chunk sizes cannot be converted`, { path: o.source });

    // Execute: RAM into sparse scratch files beside the target, then the new image from them.
    scratch = fs.mkdtempSync(path.join(dir, `.${path.basename(o.target)}.iohelper-convert-`));
    const ram = entries.map((e, i) => ({ name: e.name, path: path.join(scratch!, `block-${i}`) }));
    const nullFd = fs.openSync('/dev/null', 'w');
    try {
      await restore({ imageFd: sourceFd, imageName: o.source, ram, deviceStateFd: nullFd, jobs, direct: o.direct, signal: o.signal, onProgress: o.onProgress });
    } finally {
      fs.closeSync(nullFd);
    }
    temp = tempPathBeside(path.join(dir, path.basename(o.target)));
    const out = fs.openSync(temp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
    let stateFd: number | undefined;
    let result;
    try {
      // The device state is the last bytes of the source: read from its offset to the end.
      stateFd = fs.openSync(o.source, fs.constants.O_RDONLY);
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
    // The restore above checked the source's device state against its CRC; the copy the save
    // read again must be those same bytes, so the target records the same CRC (a source saved
    // without one gets the CRC of its device state as it is).
    if (hasDeviceStateCrc(header) && result.deviceStateCrc !== header.deviceStateCrc) {
      throw new ImageFormatError('EIMG_CHECKSUM', `${o.source}: corrupted: the device state read for the copy has CRC-32C ${hex(result.deviceStateCrc)}, the image recorded ${hex(header.deviceStateCrc)}`);
    }
    // link() fails if the target appeared meanwhile: it is never replaced.
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
