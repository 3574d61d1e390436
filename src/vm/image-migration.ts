/**
 * The parallel path for a QEMU whose RAM is shared files: with x-ignore-shared QEMU streams only
 * device state, and the RAM files are copied to or from the image at fixed offsets by a worker
 * pool. The save runs in this process (image-save.ts), as the manager's restore does
 * (in-process-restore.ts); `iohelper restore` in a child (startImageRestore) remains for tools
 * that time the helper as its own process (bench), and finishImageRestore serves both.
 */
import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as readline from 'node:readline';
import { openFile } from '../fs/open-file';
import { native } from '../native';
import { Progress, ProgressListener } from '../progress';
import { QmpClient, waitForMigration } from '../qmp/client';
import { helperFailure } from './helper-failure';
import { ourHelper } from './stream-migration';

interface RamBlockFile {
  /** Block name in the image (we use the memory backend's id). */
  name: string;
  path: string;
}

export interface ImageMigrationOptions {
  image: string;
  ram: RamBlockFile[];
  direct?: boolean;
  jobs?: number;
  /** Progress of the copy (RAM + device state). */
  onProgress?: ProgressListener;
  timeoutMs?: number;
}

interface HelperRun {
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

function restoreArgs(o: ImageMigrationOptions): string[] {
  return ['restore', '--fd', '3', '--name', o.image, ...(o.direct ? ['--direct'] : []), ...(o.jobs ? ['--jobs', String(o.jobs)] : []), ...o.ram.flatMap((r) => ['--ram', `${r.name}=${r.path}`])];
}

/** Waits for QEMU and the restore; when both fail, the restore's error (the cause) wins. */
async function bothDone(migration: Promise<unknown>, restore: Promise<void>): Promise<void> {
  await Promise.all([migration.catch(async (e) => {
    await restore;
    throw e;
  }), restore]);
}

export async function enableIgnoreShared(qmp: QmpClient): Promise<void> {
  await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
}

/** How long a helper gets to stop after SIGTERM (it stops its copies and exits 1) before SIGKILL. */
const HELPER_STOP_MS = 10_000;

/**
 * Ends the helper and waits until it has exited: no child outlives a failed operation (it would
 * be re-parented and go on writing).
 */
async function stopHelper(h: HelperRun): Promise<void> {
  const kill = setTimeout(() => h.proc.kill('SIGKILL'), HELPER_STOP_MS);
  if (h.proc.exitCode === null && h.proc.signalCode === null) h.proc.kill('SIGTERM');
  try {
    await h.done.catch(() => undefined);
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
    helper = spawnHelper([...restoreArgs(o), '--ready-fd', '4', '--planned-fd', '5'], ['ignore', w, 'ignore', inp, readyW, plannedW], o.onProgress);
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
    stop: () => stopHelper(helper),
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
