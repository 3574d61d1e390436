/**
 * Starting QEMU 10 guests whose RAM is file-backed (memory-backend-file), with a QMP socket.
 *
 * A memory-backend-file with share=on maps the existing file without clearing it, so what the
 * file holds before start is the guest's RAM. With -S the guest never runs, so firmware never
 * writes to it either.
 */
import { spawn, spawnSync, ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { QmpClient } from '../qmp/client';
import { withIncomingDefer } from './qemu-args';
import { systemError } from '../errors';

const QEMU = 'qemu-system-x86_64';
const MIN_QEMU_MAJOR = 10;
const MiB = 1024 * 1024;
const STOP_GRACE_MS = 5000;

let availability: { ok: boolean; why?: string } | undefined;

/** Whether qemu-system-x86_64 >= 10 is installed (checked once per process). */
export function qemuAvailable(): { ok: boolean; why?: string } {
  availability ??= checkQemu();
  return availability;
}

function checkQemu(): { ok: boolean; why?: string } {
  const r = spawnSync(QEMU, ['--version'], { encoding: 'utf8' });
  if (r.error) return { ok: false, why: `${QEMU} not runnable: ${r.error.message}` };
  const m = /version (\d+)\.(\d+)/.exec(r.stdout);
  if (!m) return { ok: false, why: `cannot parse '${QEMU} --version' output: ${(r.stdout + r.stderr).trim()}` };
  if (Number(m[1]) < MIN_QEMU_MAJOR) return { ok: false, why: `${QEMU} ${m[1]}.${m[2]} is older than ${MIN_QEMU_MAJOR}` };
  return { ok: true };
}

/** KVM when /dev/kvm is usable by this process, else TCG. */
function accelArgs(): string[] {
  try {
    fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK);
    return ['-accel', 'kvm'];
  } catch {
    return ['-accel', 'tcg'];
  }
}

/** One guest RAM block: a memory-backend-file object. `size` in bytes, a multiple of 2 MiB. */
export interface RamSpec {
  id: string;
  path: string;
  size: number;
}

/**
 * Machine arguments for a disk-less q35 guest whose RAM is the given file-backed blocks.
 * One block is the machine's memory-backend; two or more become NUMA nodes, one socket
 * (one CPU) per node. With `offsets`, block i maps its file from offsets[i], so that file
 * must be at least offsets[i] + size long (QEMU refuses to start otherwise).
 */
export function machineArgs(ram: RamSpec[], opts: { share?: boolean; offsets?: number[] } = {}): string[] {
  if (ram.length === 0) throw new Error('machineArgs: at least one RAM block is needed');
  if (opts.offsets && opts.offsets.length !== ram.length) {
    throw new Error(`machineArgs: ${opts.offsets.length} offsets for ${ram.length} RAM blocks`);
  }
  const share = opts.share ?? true ? 'on' : 'off';
  const total = ram.reduce((sum, r) => sum + r.size, 0);
  const args = ['-nodefaults', '-no-user-config', '-nographic', '-display', 'none', '-serial', 'none', '-monitor', 'none'];

  if (ram.length === 1) {
    args.push('-machine', `q35,memory-backend=${ram[0].id}`);
  } else {
    const n = ram.length;
    args.push('-machine', 'q35', '-smp', `${n},sockets=${n},cores=1,threads=1`);
  }
  args.push('-m', `${total / MiB}M`);

  ram.forEach((r, i) => {
    if (r.size <= 0 || r.size % (2 * MiB) !== 0) {
      throw new Error(`machineArgs: RAM block ${r.id} size ${r.size} is not a positive multiple of 2 MiB`);
    }
    const offset = opts.offsets?.[i];
    const offsetOpt = offset === undefined ? '' : `,offset=${offset}`;
    args.push('-object', `memory-backend-file,id=${r.id},size=${r.size},mem-path=${r.path},share=${share}${offsetOpt}`);
  });
  if (ram.length > 1) {
    ram.forEach((r, i) => args.push('-numa', `node,nodeid=${i},memdev=${r.id}`));
    ram.forEach((_, i) => args.push('-numa', `cpu,node-id=${i},socket-id=${i}`));
  }
  return args;
}

export interface QemuOptions {
  /** RAM blocks for a generated disk-less machine (machineArgs)… */
  ram?: RamSpec[];
  /** …or the user's own QEMU arguments (machine, RAM backends, devices). */
  args?: string[];
  extraArgs?: string[];
  /**
   * Leave QEMU running on its own: detached from us, its output in `logFile`, its QMP socket
   * directory kept (stop() still quits it).
   */
  detached?: { logFile: string };
  /** Adds `-incoming defer` unless the args have it (another -incoming is refused): the guest waits for migrate-incoming. */
  incoming?: boolean;
  /** Adds `-S` (default true): the guest CPUs never start unless `cont` is sent. */
  paused?: boolean;
  /** Extra child stdio entries (fds 3, 4, ...) for child_process.spawn, e.g. inherited fds. */
  stdio?: Array<any>;
  share?: boolean;
  offsets?: number[];
}

export interface QemuInstance {
  proc: ChildProcess;
  qmp: QmpClient;
  /** Temp dir holding the QMP socket; removed by stop(). */
  dir: string;
  /** Quits QEMU (QMP quit, else SIGTERM; SIGKILL after 5 s), closes QMP, removes the temp dir. Safe to call twice. */
  stop(): Promise<void>;
  /** The QMP socket (in `dir`). */
  qmpSocket: string;
  /** Closes our QMP connection and leaves QEMU running (for detached guests); returns the socket path. */
  release(): string;
  /** QEMU's stderr so far. */
  stderr(): string;
}

/** Starts QEMU with a QMP socket in a fresh temp dir and connects to it. Rejects with QEMU's stderr if it fails to start. */
export async function startQemu(opts: QemuOptions): Promise<QemuInstance> {
  if (!opts.ram === !opts.args) throw new Error('startQemu: give either ram or args');
  const machine = opts.ram ? machineArgs(opts.ram, { share: opts.share, offsets: opts.offsets }) : opts.args!;
  const userAccel = machine.some((a) => a === '-accel' || a === '-enable-kvm' || /(^|,)accel=/.test(a));
  // One -incoming: the user's own "-incoming defer" is kept, any other is refused.
  const incomingArgs = opts.incoming ? withIncomingDefer(machine) : machine;
  removeEmptyQemuDirs();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-qemu-'));
  const socketPath = path.join(dir, 'qmp.sock');
  const args = [
    ...(userAccel ? [] : accelArgs()),
    ...incomingArgs,
    '-qmp', `unix:${socketPath},server=on,wait=off`,
    ...(opts.paused ?? true ? ['-S'] : []),
    ...(opts.extraArgs ?? []),
  ];

  let stderr = '';
  let spawnError: Error | undefined;
  const log = opts.detached ? openLog(opts.detached.logFile) : undefined;
  const proc = spawn(QEMU, args, {
    stdio: ['ignore', log?.fd ?? 'ignore', log?.fd ?? 'pipe', ...(opts.stdio ?? [])],
    detached: !!opts.detached,
  });
  if (log !== undefined) {
    fs.closeSync(log.fd);
    proc.unref();
  } else proc.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const readStderr = () => (opts.detached ? readLog(opts.detached.logFile, log!.start) : stderr);
  // 'close' (all exit paths, stderr drained) or 'error' (spawn failed, e.g. ENOENT).
  const exited = new Promise<void>((resolve) => {
    proc.once('close', () => resolve());
    proc.on('error', (e) => {
      spawnError = e;
      resolve();
    });
  });

  const earlyExit = new AbortController();
  const onEarlyExit = () => earlyExit.abort();
  proc.once('close', onEarlyExit);
  proc.once('error', onEarlyExit);
  let qmp: QmpClient;
  try {
    qmp = await QmpClient.connect(socketPath, { signal: earlyExit.signal });
  } catch (e) {
    // A monitor that closed is a QEMU exiting, whose exit may not be reaped yet: given a moment,
    // so that its own status is reported; one still running after it is ended here.
    const stoppedByUs = !spawnError && !(await waitExit(proc, 1000));
    if (stoppedByUs) proc.kill('SIGKILL');
    await exited;
    fs.rmSync(dir, { recursive: true, force: true });
    const detail = `${(e as Error).message}):\n${readStderr().trim()}\nargs: ${args.join(' ')}`;
    if (spawnError || stoppedByUs) throw new Error(`QEMU failed to start (${spawnError ? spawnError.message : 'stopped: its monitor did not answer'}; ${detail}`);
    // Exited (or was killed) before its monitor answered: the same error as an exit later on.
    const ended = exitError(proc);
    ended.message = `QEMU failed to start: ${ended.message} (${detail}`;
    throw ended;
  } finally {
    proc.off('close', onEarlyExit);
    proc.off('error', onEarlyExit);
  }

  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      // SIGTERM also makes QEMU quit cleanly when the monitor is no longer usable.
      await qmp.execute('quit', undefined, { timeoutMs: STOP_GRACE_MS }).catch(() => proc.kill('SIGTERM'));
      if (!(await waitExit(proc, STOP_GRACE_MS))) {
        proc.kill('SIGKILL');
        await exited;
      }
      qmp.close();
      fs.rmSync(dir, { recursive: true, force: true });
    })();
    return stopping;
  };
  const release = () => {
    qmp.close();
    return socketPath;
  };
  return { proc, qmp, dir, qmpSocket: socketPath, stop, release, stderr: readStderr };
}

/**
 * A detached QEMU keeps its QMP socket directory; when it quits, QEMU removes the socket and
 * the empty directory stays. Those left a minute or more ago are removed (a younger empty one
 * may be another start's, before its QEMU made the socket).
 */
function removeEmptyQemuDirs(): void {
  const tmp = os.tmpdir();
  let names: string[];
  try {
    names = fs.readdirSync(tmp).filter((n) => n.startsWith('iohelper-qemu-'));
  } catch {
    return;
  }
  for (const n of names) {
    const p = path.join(tmp, n);
    try {
      if (Date.now() - fs.statSync(p).mtimeMs >= 60_000) fs.rmdirSync(p); // ENOTEMPTY for a live one
    } catch {
      // not empty, not ours, or gone
    }
  }
}

/**
 * A detached QEMU's log: appended to (earlier runs' lines stay for the user), 0600 whatever the
 * umask (QEMU's messages may name guest details), never through a link. `start` is where this
 * run's lines begin: errors quote only those.
 */
function openLog(file: string): { fd: number; start: number } {
  const refused = () => systemError('EPERM', `the log ${file} is not a regular file of ours with one name; refusing to write QEMU's output into it`, { path: file });
  let fd: number;
  try {
    // O_NONBLOCK: a FIFO planted under the log's name must not block the open (and our signals).
    fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK, 0o600);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw code === 'ENXIO' || code === 'ELOOP' ? refused() : e; // a FIFO without a reader, a link
  }
  try {
    const st = fs.fstatSync(fd);
    // Appended to only when it is a file of ours with no other name: never someone else's file.
    if (!st.isFile() || st.uid !== process.geteuid?.() || st.nlink !== 1) throw refused();
    fs.fchmodSync(fd, 0o600);
    return { fd, start: st.size };
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

/** This run's part of a log (from `start`), bounded to its last MiB. */
function readLog(file: string, start: number): string {
  try {
    const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    try {
      const end = fs.fstatSync(fd).size;
      const from = Math.max(start, end - LOG_TAIL_BYTES);
      const buf = Buffer.alloc(Math.max(0, end - from));
      const n = fs.readSync(fd, buf, 0, buf.length, from);
      return buf.subarray(0, n).toString('utf8');
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return '';
  }
}

/** How much of a detached QEMU's log an error quotes at most (it shows the last lines anyway). */
const LOG_TAIL_BYTES = 1024 * 1024;

/** Resolves true once the process has exited, false if it is still running after timeoutMs. */
function waitExit(proc: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      proc.off('exit', onExit);
      resolve(false);
    }, timeoutMs);
    const onExit = () => {
      clearTimeout(timer);
      resolve(true);
    };
    proc.once('exit', onExit);
  });
}

/** How a QEMU that ended by itself ended, as data (code) and in words. */
function exitError(proc: ChildProcess): Error {
  const how = proc.signalCode !== null ? `signal ${proc.signalCode}` : `status ${proc.exitCode}`;
  return Object.assign(new Error(`QEMU (pid ${proc.pid}) exited with ${how}`), { code: 'EQEMU_EXITED', exitCode: proc.exitCode, signal: proc.signalCode });
}

/**
 * `work` (a step that needs `vm`), ended as soon as that QEMU exits: then it rejects with the
 * exit status (code EQEMU_EXITED), so the caller stops its own work (a fill) at once instead of
 * finishing it for nobody. A QMP error caused by the monitor closing is QEMU exiting too: its
 * exit status, which follows, is reported instead.
 */
export async function whileRunning<T>(vm: QemuInstance, work: Promise<T>): Promise<T> {
  const proc = vm.proc;
  let onExit!: () => void;
  const exited = new Promise<Error>((resolve) => (onExit = () => resolve(exitError(proc))));
  if (proc.exitCode !== null || proc.signalCode !== null) onExit();
  else proc.once('exit', onExit);
  let monitorClosed = false;
  const onClose = () => (monitorClosed = true);
  vm.qmp.once('close', onClose);
  try {
    return await Promise.race([work, exited.then((e) => Promise.reject(e))]);
  } catch (e) {
    if (monitorClosed && (await waitExit(proc, STOP_GRACE_MS))) throw await exited;
    throw e;
  } finally {
    proc.off('exit', onExit);
    vm.qmp.off('close', onClose);
  }
}
