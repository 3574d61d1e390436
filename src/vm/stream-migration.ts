/**
 * The classic save/restore path, as libvirt drives it: QEMU's migration stream goes through a
 * pipe (handed to QEMU with QMP getfd) and a helper process copies it to or from the file,
 * which the caller opens (with O_DIRECT when asked). Works with any memory backend.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { systemError } from '../errors';
import { openFile } from '../fs/open-file';
import { native } from '../native';
import { packageRoot } from '../package-root';
import { QmpClient, waitForMigration } from '../qmp/client';
import { helperFailure } from './helper-failure';
import { listMemoryBackends } from './qemu-ram';

/** The helper program run in libvirt's form `<cmd> <args…> FILENAME FD`. */
export interface HelperCommand {
  cmd: string;
  args: string[];
}

/** Our own helper, run with this Node. */
export function ourHelper(): HelperCommand {
  return { cmd: process.execPath, args: [path.join(packageRoot(), 'bin', 'iohelper')] };
}

export interface StreamMigrationOptions {
  qmp: QmpClient;
  image: string;
  direct: boolean;
  helper?: HelperCommand;
  /** Restore: where the stream starts in the file (after a manager's header). */
  offset?: number;
  timeoutMs?: number;
}

export interface StreamSaveOptions extends StreamMigrationOptions {
  /** Called once the file is open and QEMU holds the pipe, before it migrates (the manager stops the guest here). */
  onReady?: () => Promise<void>;
  /** Aborting it ends the helper and cancels the migration. */
  signal?: AbortSignal;
}

function runHelper(h: HelperCommand, image: string, fdArg: '0' | '1', stdio: [number, number], signal?: AbortSignal): Promise<void> {
  // An abort of `signal` ends the child with SIGTERM (it stops its copy and exits 1).
  const child = spawn(h.cmd, [...h.args, image, fdArg], { stdio: [stdio[0], stdio[1], 'pipe'], signal });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    child.on('error', (e) => (e.name === 'AbortError' ? undefined : reject(e)));
    child.on('close', (code, sig) =>
      code === 0 ? resolve() : reject(helperFailure(stderr, h, code ?? sig)),
    );
  });
}

const UNTHROTTLED = { 'max-bandwidth': 2 ** 50 };

/**
 * The save file must not be one of the guest's own RAM files: opening it (O_TRUNC) would
 * destroy the RAM being saved. Compared by st_dev/st_ino, so other names of the file count.
 */
export async function refuseRamAsImage(qmp: QmpClient, image: string): Promise<void> {
  let out: fs.Stats;
  try {
    out = fs.statSync(image);
  } catch {
    return; // does not exist yet: cannot be a RAM file
  }
  for (const b of await listMemoryBackends(qmp)) {
    if (!b.memPath) continue;
    let st: fs.Stats;
    try {
      st = fs.statSync(b.memPath);
    } catch {
      continue;
    }
    if (st.dev === out.dev && st.ino === out.ino) {
      throw systemError('EINVAL', `${image} is the guest's RAM file (${b.id}: ${b.memPath}); saving there would destroy the RAM being saved`, { path: image });
    }
  }
}

/**
 * Sets max-bandwidth, migrates into the helper and waits for both. The guest is stopped by the
 * caller, before this or in `onReady`. On failure or abort the helper has exited and QEMU's
 * migration has ended (cancelled) when this rejects.
 */
export async function saveThroughHelper(o: StreamSaveOptions): Promise<void> {
  await refuseRamAsImage(o.qmp, o.image);
  const out = openFile(o.image, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | (o.direct ? fs.constants.O_DIRECT : 0), { block: true });
  const [r, w] = native.pipe();
  let helper: Promise<void>;
  try {
    helper = runHelper(o.helper ?? ourHelper(), o.image, '1', [r, out], o.signal);
    await o.qmp.executeWithFds('getfd', { fdname: 'iohelper-migrate' }, [w]);
  } finally {
    fs.closeSync(r);
    fs.closeSync(w);
    fs.closeSync(out);
  }
  helper.catch(() => undefined);
  let migration: Promise<unknown> | undefined;
  try {
    await o.onReady?.();
    if (o.signal?.aborted) throw interrupted(o.image);
    await o.qmp.execute('migrate-set-parameters', UNTHROTTLED);
    await o.qmp.execute('migrate', { uri: 'fd:iohelper-migrate' });
    migration = waitForMigration(o.qmp, { timeoutMs: o.timeoutMs });
    await Promise.all([migration, helper]);
  } catch (e) {
    // The helper's exit (ours by the signal, or its own failure) broke QEMU's pipe; a QEMU that
    // failed first gets its migration cancelled. Both are over before the caller resumes the guest.
    if (migration) await o.qmp.execute('migrate_cancel').catch(() => undefined);
    else await o.qmp.execute('closefd', { fdname: 'iohelper-migrate' }).catch(() => undefined);
    await Promise.allSettled([migration, helper]);
    throw o.signal?.aborted ? interrupted(o.image) : e;
  }
}

function interrupted(image: string): Error {
  return systemError('ECANCELED', `save interrupted; ${image} is incomplete (the stream path writes in place)`, { path: image });
}

/** QEMU must have been started with `-incoming defer`. */
export async function restoreThroughHelper(o: StreamMigrationOptions): Promise<void> {
  const inp = openFile(o.image, fs.constants.O_RDONLY | (o.direct ? fs.constants.O_DIRECT : 0), { block: true });
  const [r, w] = native.pipe();
  let helper: Promise<void>;
  try {
    if (o.offset) native.lseek(inp, o.offset, native.constants.SEEK_SET);
    helper = runHelper(o.helper ?? ourHelper(), o.image, '0', [inp, w]);
    await o.qmp.executeWithFds('getfd', { fdname: 'iohelper-migrate' }, [r]);
  } finally {
    fs.closeSync(r);
    fs.closeSync(w);
    fs.closeSync(inp);
  }
  helper.catch(() => undefined);
  await o.qmp.execute('migrate-incoming', { uri: 'fd:iohelper-migrate' });
  await Promise.all([waitForMigration(o.qmp, { timeoutMs: o.timeoutMs }), helper]);
}
