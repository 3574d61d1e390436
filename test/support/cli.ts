/** Runs the built `iohelper` command as a child process with chosen fds, as libvirt would. */
import { spawn, StdioOptions } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

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
