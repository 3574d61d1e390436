/**
 * The manager's save without a helper process: save() (src/image/save.ts) runs in this process
 * and its worker pool copies the RAM files into the image, while QEMU (stopped, x-ignore-shared)
 * migrates only the device state into a pipe whose read end save() reads. The same steps as
 * `iohelper save --fd` in a child, with errors as objects and one owner of the signals: an abort
 * stops the copy, cancels QEMU's migration and removes the new file.
 */
import * as fs from 'node:fs';
import { createReplacement } from '../fs/atomic-file';
import { openBase, save, SaveOptions, SaveResult, stagedSaveInterrupted } from '../image/save';
import { afterPendingSignals } from '../util/event-loop';
import { native } from '../native';
import { RamReadMode } from '../util/limits';
import { QmpClient, waitForMigration } from '../qmp/client';
import { enableIgnoreShared, ImageMigrationOptions } from './image-migration';

export interface ImageSaveOptions extends ImageMigrationOptions {
  /** zstd level of a compressed image. */
  compressLevel?: number;
  /** A delta against this image (its path is recorded relative to the delta's directory). */
  base?: string;
  /** How guest RAM is read (src/image/ram-read.ts; default auto). */
  ramRead?: RamReadMode;
  /** Aborting it stops the save: the migration is cancelled and `image` left as it was. */
  signal?: AbortSignal;
  /**
   * Called once every check passed, before QEMU migrates and any RAM is read (the manager
   * stops the guest here). Without it the guest must already be stopped.
   */
  onPlanned?: () => Promise<void>;
}

const FD_NAME = 'iohelper-save';

/**
 * Resolves when the image is committed: written into a new file beside `image` and renamed over
 * it only after save() committed it (synced) and QEMU reported the migration completed. On any
 * failure or abort, QEMU's migration is cancelled and awaited (a guest that was running can run
 * again), the new file removed, and `image` is as it was.
 */
export async function saveVmToImage(qmp: QmpClient, o: ImageSaveOptions): Promise<SaveResult> {
  const out = createReplacement(o.image);
  const stop = new AbortController();
  const onAbort = () => stop.abort();
  if (o.signal?.aborted) stop.abort();
  o.signal?.addEventListener('abort', onAbort, { once: true });
  let base: SaveOptions['base'];
  let pipe: { r: number; w?: number } | undefined;
  let migration: Promise<unknown> | undefined;
  let fdWithQemu = false;
  // The first failure is the cause: a QEMU that failed stops the copy, whose own error follows.
  let cause: { e: unknown } | undefined;
  const fail = (e: unknown) => {
    cause ??= { e };
    stop.abort();
  };
  const closeWriteEnd = () => {
    if (pipe?.w !== undefined) fs.closeSync(pipe.w);
    if (pipe) pipe.w = undefined;
  };
  try {
    base = o.base === undefined ? undefined : openBase(o.base, o.image, out.fd);
    const [r, w] = native.pipe();
    pipe = { r, w };
    // A compressed or delta save reads QEMU's device state only after every chunk is stored, so
    // QEMU's migration stays active for the whole save: no deadline of its own then (the end of
    // the save, which closes the pipe, ends it either way).
    const timeoutMs = o.timeoutMs ?? (o.compressLevel !== undefined || o.base !== undefined ? Infinity : undefined);
    const startMigration = async () => {
      await o.onPlanned?.();
      await enableIgnoreShared(qmp);
      await qmp.execute('migrate-set-parameters', { 'max-bandwidth': 2 ** 50 });
      await qmp.executeWithFds('getfd', { fdname: FD_NAME }, [w]);
      fdWithQemu = true;
      closeWriteEnd(); // QEMU holds its copy: the end of the stream is QEMU closing it
      if (stop.signal.aborted) return; // save() sees the abort before it reads anything
      await qmp.execute('migrate', { uri: `fd:${FD_NAME}` });
      migration = waitForMigration(qmp, { timeoutMs });
      migration.catch(fail);
    };
    const result = await save({
      imageFd: out.fd,
      imageName: o.image,
      ram: o.ram.map((b) => ({ name: b.name, path: b.path })),
      deviceStateFd: r,
      direct: o.direct,
      jobs: o.jobs,
      compressLevel: o.compressLevel,
      base,
      ramRead: o.ramRead,
      staged: { replaces: out.replaced },
      onProgress: o.onProgress,
      onPlanned: startMigration,
      signal: stop.signal,
    }).catch((e) => {
      fail(e);
      return undefined;
    });
    if (result) await migration;
    if (cause) throw cause.e;
    // The rename is the commit: an interrupt before it (one that came during the last writes
    // is handled now) leaves the old image; nothing between this check and the rename yields.
    await afterPendingSignals();
    if (o.signal?.aborted) throw stagedSaveInterrupted(o.image);
    out.commit();
    return result!;
  } catch (e) {
    fail(e);
    // save() has settled, so nobody reads the pipe now: QEMU is told to cancel first (so its
    // migration ends as cancelled, not failed), then the read end is closed, which ends a QEMU
    // blocked on a write to it (EPIPE); the migration is awaited until QEMU says it ended.
    if (migration) await qmp.execute('migrate_cancel').catch(() => undefined);
    if (pipe) fs.closeSync(pipe.r);
    pipe = undefined;
    if (migration) await migration.catch(() => undefined);
    else if (fdWithQemu) {
      // A refused migrate leaves the write end with QEMU: nothing would ever read it.
      await qmp.execute('closefd', { fdname: FD_NAME }).catch(() => undefined);
    }
    out.discard();
    throw cause!.e;
  } finally {
    o.signal?.removeEventListener('abort', onAbort);
    closeWriteEnd();
    if (pipe) fs.closeSync(pipe.r);
    if (base) fs.closeSync(base.fd);
  }
}
