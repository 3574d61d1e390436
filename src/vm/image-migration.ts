/**
 * The parallel path for a QEMU whose RAM is shared files: with x-ignore-shared QEMU streams only
 * device state, and `iohelper save`/`restore` (a child process) copy the RAM files to or from
 * the image at fixed offsets with a worker pool.
 */
import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as readline from 'node:readline';
import { createReplacement } from '../fs/atomic-file';
import { openFile } from '../fs/open-file';
import { native } from '../native';
import { Progress, ProgressListener } from '../progress';
import { QmpClient, waitForMigration } from '../qmp/client';
import { helperFailure } from './helper-failure';
import { ourHelper } from './stream-migration';

export interface RamBlockFile {
  /** Block name in the image (we use the memory backend's id). */
  name: string;
  path: string;
}

export interface ImageMigrationOptions {
  image: string;
  ram: RamBlockFile[];
  direct?: boolean;
  jobs?: number;
  /** Save: zstd level of a compressed image. */
  compressLevel?: number;
  /** Save: a delta against this image (iohelper save --base). */
  base?: string;
  /** Extra arguments for the helper (e.g. --chunk). */
  helperArgs?: string[];
  /** Progress of the helper's copy (RAM + device state). */
  onProgress?: ProgressListener;
  timeoutMs?: number;
}

export interface HelperRun {
  proc: ChildProcess;
  done: Promise<void>;
}

/**
 * Spawns the helper. With `onProgress`, the helper's JSON progress lines come back on one more
 * fd (appended after `stdio`) and are parsed here.
 */
function spawnHelper(args: string[], stdio: Array<number | 'ignore'>, onProgress?: ProgressListener): HelperRun {
  const h = ourHelper();
  let progressArgs: string[] = [];
  let progressW: number | undefined;
  let progressR: number | undefined;
  if (onProgress) {
    [progressR, progressW] = native.pipe();
    progressArgs = [`--progress=${stdio.length}`];
    stdio = [...stdio, progressW];
  }
  const proc = spawn(h.cmd, [...h.args, ...args, ...progressArgs], { stdio: [stdio[0], stdio[1], 'pipe', ...stdio.slice(3)] as never });
  if (progressW !== undefined) {
    fs.closeSync(progressW);
    const lines = readline.createInterface({ input: fs.createReadStream('', { fd: progressR }) });
    lines.on('line', (l) => {
      try {
        onProgress!(JSON.parse(l) as Progress);
      } catch {
        // not a progress line
      }
    });
  }
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<void>((resolve, reject) => {
    proc.on('error', reject);
    proc.on('close', (code, signal) => (code === 0 ? resolve() : reject(helperFailure(stderr, h, code ?? signal))));
  });
  done.catch(() => undefined);
  return { proc, done };
}

function helperArgs(verb: 'save' | 'restore', o: ImageMigrationOptions): string[] {
  return [verb, '--fd', '3', '--name', o.image, ...(o.direct ? ['--direct'] : []), ...(o.jobs ? ['--jobs', String(o.jobs)] : []), ...(o.compressLevel !== undefined ? [`--compress=zstd:${o.compressLevel}`] : []), ...(verb === 'save' && o.base !== undefined ? ['--base', o.base] : []), ...o.ram.flatMap((r) => ['--ram', `${r.name}=${r.path}`]), ...(o.helperArgs ?? [])];
}

/** Waits for QEMU and the helper; when both fail, the helper's error (the cause) wins. */
async function bothDone(migration: Promise<unknown>, helper: Promise<void>): Promise<void> {
  await Promise.all([migration.catch(async (e) => {
    await helper;
    throw e;
  }), helper]);
}

export async function enableIgnoreShared(qmp: QmpClient): Promise<void> {
  await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
}

/**
 * The guest must be stopped (or never started). Resolves when the image is committed: written
 * by the helper into a new file beside `image` (never `image` itself) and renamed over it only
 * after the helper committed it (synced) and QEMU reported the migration completed. On any
 * failure the helper is ended and awaited, the new file removed, and `image` is as it was.
 */
export async function saveVmToImage(qmp: QmpClient, o: ImageMigrationOptions, onSpawn?: (h: HelperRun) => void): Promise<void> {
  await enableIgnoreShared(qmp);
  await qmp.execute('migrate-set-parameters', { 'max-bandwidth': 2 ** 50 });
  const out = createReplacement(o.image);
  let h: HelperRun | undefined;
  let migrateSent = false;
  try {
    const [r, w] = native.pipe();
    try {
      h = spawnHelper(helperArgs('save', o), [r, 'ignore', 'ignore', out.fd], o.onProgress);
      onSpawn?.(h);
      await qmp.executeWithFds('getfd', { fdname: 'iohelper-save' }, [w]);
    } finally {
      fs.closeSync(r);
      fs.closeSync(w);
    }
    await qmp.execute('migrate', { uri: 'fd:iohelper-save' });
    migrateSent = true;
    // A compressed or delta save reads QEMU's device state only after every chunk is stored, so QEMU's
    // migration stays active for the whole save: no deadline of its own then (the helper's exit,
    // which closes the pipe, ends it either way).
    const timeoutMs = o.timeoutMs ?? (o.compressLevel !== undefined || o.base !== undefined ? Infinity : undefined);
    await Promise.all([waitForMigration(qmp, { timeoutMs }), h.done]);
    out.commit();
  } catch (e) {
    const cause = h ? await stopHelper(h) : undefined;
    out.discard();
    // A refused migrate leaves the pipe's write end with QEMU (it has just answered, so this
    // cannot hang on a stuck QEMU); the helper is gone, so nothing would ever read it.
    if (h && !migrateSent) await qmp.execute('closefd', { fdname: 'iohelper-save' }).catch(() => undefined);
    throw cause ?? e;
  }
}

/** How long a helper gets to stop after SIGTERM (it stops its copies and exits 1) before SIGKILL. */
const HELPER_STOP_MS = 10_000;

/**
 * Ends the helper and waits until it has exited: no child outlives a failed operation (it would
 * be re-parented and go on writing). Resolves with the helper's own error when it failed by
 * itself (the cause, e.g. ENOSPC, of QEMU's broken pipe), else undefined.
 */
export async function stopHelper(h: HelperRun): Promise<unknown> {
  const kill = setTimeout(() => h.proc.kill('SIGKILL'), HELPER_STOP_MS);
  const signalled = h.proc.exitCode === null && h.proc.signalCode === null && h.proc.kill('SIGTERM');
  try {
    await h.done;
    return undefined;
  } catch (e) {
    // Our SIGTERM ends it with "… interrupted … (ECANCELED)", or by the signal itself when it
    // came before the helper set up its handler (or after SIGKILL).
    const ours = signalled && (h.proc.signalCode !== null || (e instanceof Error && /\(ECANCELED\)$/.test(e.message)));
    return ours ? undefined : e;
  } finally {
    clearTimeout(kill);
  }
}

/**
 * Step 1 of a restore: the helper (or restore() in this process: src/vm/in-process-restore.ts)
 * validates the image and fills the RAM files, then waits to hand the device state to QEMU.
 * Holds the pipe end QEMU must read.
 */
export interface ImageRestore {
  /** The helper process, when the restore runs in one. */
  helper?: HelperRun;
  /** Settles when the restore has ended: every byte of the device state written, or failed. */
  done: Promise<void>;
  /** Ends the restore (a fill in progress puts its in-place targets back) and waits for it. */
  stop(): Promise<void>;
  /** The device-state pipe's read end, for QEMU. */
  readFd: number;
  /** Closes readFd; later calls do nothing (a second close could hit a reused fd number). */
  closeReadFd(): void;
  /** Resolves once the helper has checked everything and opened (or created) the RAM files. */
  planned: Promise<void>;
  /** Resolves once the helper has filled (and checked) every RAM file. */
  ramFilled: Promise<void>;
}

/** Resolves when the helper writes `line` on the pipe read by `fd` (which this closes), rejects when it exits without. */
function helperSays(fd: number, line: string, helper: HelperRun): Promise<void> {
  const said = new Promise<void>((resolve, reject) => {
    const stream = fs.createReadStream('', { fd });
    let text = '';
    stream.on('data', (d) => (text += d.toString()));
    stream.on('error', reject);
    stream.on('close', () => (text.startsWith(line) ? resolve() : helper.done.then(() => reject(new Error(`iohelper restore ended without saying ${line}`)), reject)));
  });
  said.catch(() => undefined);
  return said;
}

export function startImageRestore(o: ImageMigrationOptions): ImageRestore {
  const inp = openFile(o.image, fs.constants.O_RDONLY);
  const [r, w] = native.pipe();
  const [readyR, readyW] = native.pipe();
  const [plannedR, plannedW] = native.pipe();
  let helper: HelperRun;
  try {
    helper = spawnHelper([...helperArgs('restore', o), '--ready-fd', '4', '--planned-fd', '5'], ['ignore', w, 'ignore', inp, readyW, plannedW], o.onProgress);
  } finally {
    fs.closeSync(w);
    fs.closeSync(inp);
    fs.closeSync(readyW);
    fs.closeSync(plannedW);
  }
  let open = true;
  const closeReadFd = () => {
    if (open) fs.closeSync(r);
    open = false;
  };
  return {
    helper,
    done: helper.done,
    stop: async () => void (await stopHelper(helper)),
    readFd: r,
    closeReadFd,
    planned: helperSays(plannedR, 'planned', helper),
    ramFilled: helperSays(readyR, 'ready', helper),
  };
}

/** Step 2: QEMU (started with -incoming defer on the same RAM files) loads the device state. */
export async function finishImageRestore(qmp: QmpClient, started: ImageRestore, timeoutMs?: number): Promise<void> {
  try {
    await enableIgnoreShared(qmp);
    await qmp.executeWithFds('getfd', { fdname: 'iohelper-restore' }, [started.readFd]);
  } finally {
    started.closeReadFd();
  }
  await qmp.execute('migrate-incoming', { uri: 'fd:iohelper-restore' });
  // Only the device state is left (about a megabyte): poll often, the manager waits on this.
  await bothDone(waitForMigration(qmp, { timeoutMs, pollMs: 10 }), started.done);
}
