/**
 * The parallel path for a QEMU whose RAM is shared files: with x-ignore-shared QEMU streams only
 * device state, and `iohelper save`/`restore` (a child process) copy the RAM files to or from
 * the image at fixed offsets with a worker pool.
 */
import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as readline from 'node:readline';
import { openFile } from '../fs/open-file';
import { native } from '../native';
import { Progress, ProgressListener } from '../progress';
import { QmpClient, waitForMigration } from '../qmp/client';
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
    proc.on('close', (code, signal) => (code === 0 ? resolve() : reject(new Error(stderr.trim() || `iohelper ended with ${code ?? signal}`))));
  });
  done.catch(() => undefined);
  return { proc, done };
}

function helperArgs(verb: 'save' | 'restore', o: ImageMigrationOptions): string[] {
  return [verb, '--fd', '3', '--name', o.image, ...(o.direct ? ['--direct'] : []), ...(o.jobs ? ['--jobs', String(o.jobs)] : []), ...(o.compressLevel !== undefined ? [`--compress=zstd:${o.compressLevel}`] : []), ...o.ram.flatMap((r) => ['--ram', `${r.name}=${r.path}`]), ...(o.helperArgs ?? [])];
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

/** The guest must be stopped (or never started). Resolves when the image is committed. */
export async function saveVmToImage(qmp: QmpClient, o: ImageMigrationOptions, onSpawn?: (h: HelperRun) => void): Promise<void> {
  await enableIgnoreShared(qmp);
  await qmp.execute('migrate-set-parameters', { 'max-bandwidth': 2 ** 50 });
  const out = openFile(o.image, fs.constants.O_WRONLY | fs.constants.O_CREAT);
  const [r, w] = native.pipe();
  let h: HelperRun;
  try {
    h = spawnHelper(helperArgs('save', o), [r, 'ignore', 'ignore', out], o.onProgress);
    onSpawn?.(h);
    await qmp.executeWithFds('getfd', { fdname: 'iohelper-save' }, [w]);
  } finally {
    fs.closeSync(r);
    fs.closeSync(w);
    fs.closeSync(out);
  }
  await qmp.execute('migrate', { uri: 'fd:iohelper-save' });
  // A compressed save reads QEMU's device state only after every chunk is stored, so QEMU's
  // migration stays active for the whole save: no deadline of its own then (the helper's exit,
  // which closes the pipe, ends it either way).
  const timeoutMs = o.timeoutMs ?? (o.compressLevel !== undefined ? Infinity : undefined);
  await bothDone(waitForMigration(qmp, { timeoutMs }), h.done);
}

/**
 * Step 1 of a restore: the helper validates the image and fills the RAM files, then waits to
 * hand the device state to QEMU. Returns the pipe end QEMU must read.
 */
export interface ImageRestore {
  helper: HelperRun;
  /** The device-state pipe's read end, for QEMU. */
  readFd: number;
  /** Closes readFd; later calls do nothing (a second close could hit a reused fd number). */
  closeReadFd(): void;
  /** Resolves once the helper has filled (and checked) every RAM file. */
  ramFilled: Promise<void>;
}

export function startImageRestore(o: ImageMigrationOptions): ImageRestore {
  const inp = openFile(o.image, fs.constants.O_RDONLY);
  const [r, w] = native.pipe();
  const [readyR, readyW] = native.pipe();
  let helper: HelperRun;
  try {
    helper = spawnHelper([...helperArgs('restore', o), '--ready-fd', '4'], ['ignore', w, 'ignore', inp, readyW], o.onProgress);
  } finally {
    fs.closeSync(w);
    fs.closeSync(inp);
    fs.closeSync(readyW);
  }
  const ramFilled = new Promise<void>((resolve, reject) => {
    const stream = fs.createReadStream('', { fd: readyR });
    let said = '';
    stream.on('data', (d) => (said += d.toString()));
    stream.on('error', reject);
    stream.on('close', () => (said.startsWith('ready') ? resolve() : helper.done.then(() => reject(new Error('iohelper restore ended without filling RAM')), reject)));
  });
  ramFilled.catch(() => undefined);
  let open = true;
  const closeReadFd = () => {
    if (open) fs.closeSync(r);
    open = false;
  };
  return { helper, readFd: r, closeReadFd, ramFilled };
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
  await bothDone(waitForMigration(qmp, { timeoutMs }), started.helper.done);
}
