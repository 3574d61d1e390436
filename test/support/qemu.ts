/**
 * Integration-test helpers: start real QEMU 10 guests whose RAM is a file-backed shared
 * memory backend, and make, compare and hash the RAM files in bounded memory.
 *
 * A memory-backend-file with share=on maps the existing file without clearing it, so a
 * pattern written before start is the guest's RAM. With -S the guest never runs, so the
 * firmware never writes to it either: the file is unchanged after a paused start and quit.
 */
import { spawn, spawnSync, ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { QmpClient } from '../../src/qmp/client';

const QEMU = 'qemu-system-x86_64';
const MIN_QEMU_MAJOR = 10;
const MiB = 1024 * 1024;
const PAGE = 4096;
const CHUNK = 4 * MiB;
const STOP_GRACE_MS = 5000;

/** Set REQUIRE_QEMU=1 (e.g. in CI) to make a missing QEMU fail the tests instead of skipping them. */
export const requireQemu = process.env.REQUIRE_QEMU === '1';

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

/**
 * `describe` for tests that need QEMU: skipped with a console message when QEMU is missing,
 * or a failing test in its place when REQUIRE_QEMU=1.
 */
export function describeQemu(name: string, fn: () => void): void {
  const { ok, why } = qemuAvailable();
  if (ok) {
    describe(name, fn);
  } else if (requireQemu) {
    describe(name, () => {
      it('needs QEMU (REQUIRE_QEMU=1)', () => {
        throw new Error(`REQUIRE_QEMU=1 but ${why}`);
      });
    });
  } else {
    console.warn(`Skipping "${name}": ${why} (set REQUIRE_QEMU=1 to fail instead)`);
    describe.skip(name, fn);
  }
}

/** KVM when /dev/kvm is usable by this process, else TCG. */
export function accelArgs(): string[] {
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
  ram: RamSpec[];
  extraArgs?: string[];
  /** Adds `-incoming defer`: the guest waits for migrate-incoming. */
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
  /** QEMU's stderr so far. */
  stderr(): string;
}

/** Starts QEMU with a QMP socket in a fresh temp dir and connects to it. Rejects with QEMU's stderr if it fails to start. */
export async function startQemu(opts: QemuOptions): Promise<QemuInstance> {
  const machine = machineArgs(opts.ram, { share: opts.share, offsets: opts.offsets });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-qemu-'));
  const socketPath = path.join(dir, 'qmp.sock');
  const args = [
    ...accelArgs(),
    ...machine,
    '-qmp', `unix:${socketPath},server=on,wait=off`,
    ...(opts.paused ?? true ? ['-S'] : []),
    ...(opts.incoming ? ['-incoming', 'defer'] : []),
    ...(opts.extraArgs ?? []),
  ];

  let stderr = '';
  let spawnError: Error | undefined;
  const proc = spawn(QEMU, args, { stdio: ['ignore', 'ignore', 'pipe', ...(opts.stdio ?? [])] });
  proc.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
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
    if (proc.exitCode === null && proc.signalCode === null && !spawnError) proc.kill('SIGKILL');
    await exited;
    fs.rmSync(dir, { recursive: true, force: true });
    const status = spawnError ? spawnError.message : `exit ${proc.exitCode ?? proc.signalCode}`;
    throw new Error(`QEMU failed to start (${status}; ${(e as Error).message}):\n${stderr.trim()}\nargs: ${args.join(' ')}`);
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
  return { proc, qmp, dir, stop, stderr: () => stderr };
}

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

/** A per-process path on /dev/shm for a test RAM file; the caller removes it. */
export function shmPath(label: string): string {
  return path.join('/dev/shm', `iohelper-test-${process.pid}-${label}`);
}

/** Creates (or truncates) a sparse file of `size` bytes. */
export function createRamFile(filePath: string, size: number): void {
  const fd = fs.openSync(filePath, 'w');
  try {
    fs.ftruncateSync(fd, size);
  } finally {
    fs.closeSync(fd);
  }
}

/** mulberry32: a tiny, fast, seedable 32-bit PRNG returning uint32 values. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/**
 * Overwrites the whole file (its current size) with a deterministic pattern, 4 MiB at a time:
 * about `zeroFraction` of the 4 KiB pages are zero, the others are pseudo-random bytes from
 * `seed` with the page index stamped into their first 8 bytes, so no two pages are equal.
 */
export function fillPattern(filePath: string, seed: number, zeroFraction = 0.25): { pages: number; zeroPages: number } {
  const random = Buffer.allocUnsafe(CHUNK);
  const words = new Uint32Array(random.buffer, random.byteOffset, CHUNK / 4);
  const nextWord = mulberry32(seed);
  for (let i = 0; i < words.length; i++) words[i] = nextWord();

  const nextZeroDraw = mulberry32(seed ^ 0x9e3779b9);
  const zeroThreshold = zeroFraction * 2 ** 32;
  const chunk = Buffer.allocUnsafe(CHUNK);
  const fd = fs.openSync(filePath, 'r+');
  let pages = 0;
  let zeroPages = 0;
  try {
    const size = fs.fstatSync(fd).size;
    for (let pos = 0; pos < size; pos += CHUNK) {
      const len = Math.min(CHUNK, size - pos);
      random.copy(chunk, 0, 0, len);
      for (let off = 0; off < len; off += PAGE, pages++) {
        if (nextZeroDraw() < zeroThreshold) {
          chunk.fill(0, off, Math.min(off + PAGE, len));
          zeroPages++;
        } else if (off + 8 <= len) {
          chunk.writeUInt32LE((pages ^ seed) >>> 0, off);
          chunk.writeUInt32LE(Math.floor(pages / 2 ** 32), off + 4);
        }
      }
      fs.writeSync(fd, chunk, 0, len, pos);
    }
  } finally {
    fs.closeSync(fd);
  }
  return { pages, zeroPages };
}

/** Compares two files in 4 MiB chunks; `firstDiff` is the first differing offset (or the shorter length). */
export async function filesEqual(a: string, b: string): Promise<{ equal: boolean; firstDiff?: number }> {
  const [fa, fb] = await Promise.all([fs.promises.open(a, 'r'), fs.promises.open(b, 'r')]);
  try {
    const [sa, sb] = await Promise.all([fa.stat(), fb.stat()]);
    const size = Math.min(sa.size, sb.size);
    const ba = Buffer.allocUnsafe(CHUNK);
    const bb = Buffer.allocUnsafe(CHUNK);
    for (let pos = 0; pos < size; pos += CHUNK) {
      const len = Math.min(CHUNK, size - pos);
      await Promise.all([readFully(fa, ba, len, pos), readFully(fb, bb, len, pos)]);
      const ca = ba.subarray(0, len);
      const cb = bb.subarray(0, len);
      if (!ca.equals(cb)) {
        let i = 0;
        while (ca[i] === cb[i]) i++;
        return { equal: false, firstDiff: pos + i };
      }
    }
    return sa.size === sb.size ? { equal: true } : { equal: false, firstDiff: size };
  } finally {
    await Promise.all([fa.close(), fb.close()]);
  }
}

async function readFully(fh: fs.promises.FileHandle, buf: Buffer, len: number, pos: number): Promise<void> {
  for (let done = 0; done < len; ) {
    const { bytesRead } = await fh.read(buf, done, len - done, pos + done);
    if (bytesRead === 0) throw new Error(`unexpected end of file at ${pos + done}`);
    done += bytesRead;
  }
}

/** Hex SHA-256 of a file, streamed in 4 MiB reads. */
export async function sha256File(filePath: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of fs.createReadStream(filePath, { highWaterMark: CHUNK })) hash.update(chunk);
  return hash.digest('hex');
}
