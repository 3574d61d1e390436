/** Runs the built `iohelper` command as a child process with chosen fds, as libvirt would. */
import { spawn, spawnSync, StdioOptions } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { createRamFile, fillPattern } from '../../bench/lib/ram-file';

export const IOHELPER = path.join(__dirname, '..', '..', 'bin', 'iohelper');

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
}

/**
 * stdio entries are fds (numbers), 'pipe', 'ignore' or 'inherit'. When stdin is a Buffer it is
 * written to a pipe and closed. stdout 'pipe' is collected.
 */
export function runHelper(args: string[], stdio: Array<number | 'pipe' | 'ignore' | Buffer>, argv0 = IOHELPER): Promise<RunResult> {
  const input = Buffer.isBuffer(stdio[0]) ? stdio[0] : undefined;
  const spec = stdio.map((s, i) => (i === 2 ? 'pipe' : Buffer.isBuffer(s) ? 'pipe' : s)) as StdioOptions;
  if ((spec as unknown[]).length < 3) (spec as unknown[]).push(...Array(3 - (spec as unknown[]).length).fill('pipe'));
  (spec as unknown[])[2] = 'pipe';
  return new Promise((resolve, reject) => {
    const child = spawn(argv0 === IOHELPER ? process.execPath : argv0, argv0 === IOHELPER ? [IOHELPER, ...args] : args, {
      stdio: spec,
    });
    const out: Buffer[] = [];
    let err = '';
    child.stdout?.on('data', (d: Buffer) => out.push(d));
    child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout: Buffer.concat(out), stderr: err }));
    if (input && child.stdin) {
      child.stdin.on('error', () => undefined);
      child.stdin.end(input);
    }
  });
}

/**
 * `script` run by sh in `cwd`, where $IOH is the built iohelper: for redirections (`1<>f`) and
 * arguments a JavaScript string cannot carry (bytes that are not UTF-8).
 */
export function runInShell(cwd: string, script: string): { code: number | null; stderr: string } {
  const r = spawnSync('sh', ['-c', `cd "$1" && ${script}`, 'sh', cwd], { encoding: 'utf8', env: { ...process.env, IOH: `${process.execPath} ${IOHELPER}` } });
  return { code: r.status, stderr: r.stderr };
}

/**
 * A directory for shell-driven CLI tests: `ram` (4 MiB, half of it data), `ds` (a device
 * state) and `full.img` saved from them as block pc.ram. The caller removes `dir`.
 */
export async function shellFixture(prefix: string): Promise<{ dir: string; ram: string; image: string }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const ram = path.join(dir, 'ram');
  createRamFile(ram, 4 * 1024 * 1024);
  fillPattern(ram, 2, 0.5);
  fs.writeFileSync(path.join(dir, 'ds'), crypto.randomBytes(10000));
  const image = path.join(dir, 'full.img');
  const r = await runHelper(['save', '--no-stream-check', '--image', image, '--ram', `pc.ram=${ram}`], [fs.readFileSync(path.join(dir, 'ds')), 'ignore']);
  if (r.code !== 0) throw new Error(`the fixture's save failed: ${r.stderr}`);
  return { dir, ram, image };
}

/** The last non-empty stderr line. */
export function lastLine(stderr: string): string {
  const lines = stderr.split('\n').filter((l) => l.length > 0);
  return lines[lines.length - 1] ?? '';
}

/**
 * Resolves once process `pid` waits for its pipe `fd` the helper's way (src/stream/copy.ts
 * pipeIo: the pipe is O_NONBLOCK, in /proc/PID/fdinfo/FD, only while a read or write of it
 * waits, and the SIGINT/SIGTERM handlers are in place by then). Throws after `timeoutMs`, or
 * when the process is gone first.
 */
export async function waitForPipeWait(pid: number, fd: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let info: string;
    try {
      info = fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
    } catch {
      throw new Error(`process ${pid} (or its fd ${fd}) was gone before it waited on the pipe`);
    }
    const flags = parseInt(/^flags:\s*([0-7]+)/m.exec(info)?.[1] ?? '0', 8);
    if (flags & fs.constants.O_NONBLOCK) return;
    if (Date.now() > deadline) throw new Error(`process ${pid} did not wait on its fd ${fd} within ${timeoutMs} ms (flags ${flags.toString(8)})`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
