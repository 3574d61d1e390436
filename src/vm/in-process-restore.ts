/**
 * The manager's restore without a helper process: restore() (src/image/restore.ts) runs in
 * this process, its worker pool filling the RAM files while QEMU starts, and writes the device
 * state into a pipe whose other end QEMU reads. The same steps as `iohelper restore` in a child
 * (startImageRestore), minus a second Node start on the path the user waits for (measured
 * here: the helper's start and plan took ~0.2 s of a 0.74 s 2 GiB restore, beside QEMU's own
 * start).
 */
import * as fs from 'node:fs';
import { openFile } from '../fs/open-file';
import { restore } from '../image/restore';
import { native } from '../native';
import { ImageMigrationOptions, ImageRestore } from './image-migration';

export interface InProcessRestoreOptions extends ImageMigrationOptions {
  noVerify?: boolean;
  onWarning?: (message: string) => void;
  /** Aborting it stops the restore as stop() does (SIGINT/SIGTERM in the CLI). */
  signal?: AbortSignal;
}

/** Starts restore() here; the result has the shape of the helper's (startImageRestore). */
export function startRestoreInProcess(o: InProcessRestoreOptions): ImageRestore {
  const imageFd = openFile(o.image, fs.constants.O_RDONLY);
  let r: number;
  let w: number;
  try {
    [r, w] = native.pipe();
  } catch (e) {
    fs.closeSync(imageFd);
    throw e;
  }
  const abort = new AbortController();
  if (o.signal?.aborted) abort.abort();
  o.signal?.addEventListener('abort', () => abort.abort(), { once: true });
  let onPlanned!: () => void;
  let onFilled!: () => void;
  const planned = new Promise<void>((resolve) => (onPlanned = resolve));
  const ramFilled = new Promise<void>((resolve) => (onFilled = resolve));
  const run = restore({
    imageFd,
    imageName: o.image,
    ram: o.ram.map((b) => ({ name: b.name, path: b.path })),
    deviceStateFd: w,
    direct: o.direct,
    jobs: o.jobs,
    noVerify: o.noVerify,
    onPlanned,
    onRamFilled: onFilled,
    onProgress: o.onProgress,
    onWarning: o.onWarning,
    signal: abort.signal,
  }).finally(() => {
    // restore() owns neither: closed once it no longer writes (QEMU then sees the end of the stream).
    fs.closeSync(w);
    fs.closeSync(imageFd);
  });
  const done = run.then(() => undefined);
  done.catch(() => undefined);
  // A restore that fails before a step never reaches it: those waiting see its error.
  const orFail = (p: Promise<void>) => {
    const q = Promise.race([p, done.then(() => p)]);
    q.catch(() => undefined);
    return q;
  };
  let open = true;
  return {
    readFd: r,
    closeReadFd: () => {
      if (open) fs.closeSync(r);
      open = false;
    },
    planned: orFail(planned),
    ramFilled: orFail(ramFilled),
    done,
    stop: async () => {
      abort.abort();
      await done.catch(() => undefined);
    },
  };
}
