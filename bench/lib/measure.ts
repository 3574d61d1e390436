/**
 * Runs a pipeline of processes and measures it: wall time from the first spawn until the last
 * exit, and the CPU seconds (user + sys) and peak RSS of the one process being measured, read
 * by GNU time.
 */
import { spawn, StdioOptions } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const GNU_TIME = '/usr/bin/time';

export interface ProcSpec {
  cmd: string;
  args: string[];
  stdio: StdioOptions;
  /** Measure this process's CPU and RSS (exactly one per pipeline). */
  measured?: boolean;
}

export interface Measurement {
  wallS: number;
  cpuS: number;
  maxRssMiB: number;
}

interface Exit {
  code: number | null;
  signal: string | null;
  stderr: string;
  name: string;
}

function start(p: ProcSpec, timeFile: string): Promise<Exit> {
  const [cmd, args] = p.measured ? [GNU_TIME, ['-f', '%U %S %M', '-o', timeFile, p.cmd, ...p.args]] : [p.cmd, p.args];
  const stdio = [...(p.stdio as unknown[])];
  stdio[2] = 'pipe';
  const child = spawn(cmd, args, { stdio: stdio as StdioOptions });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stderr, name: path.basename(p.cmd) }));
  });
}

/** Spawns all, closes `closeAfterSpawn` fds in this process, waits for all; throws if any failed. */
export async function measurePipeline(procs: ProcSpec[], closeAfterSpawn: number[]): Promise<Measurement> {
  const timeFile = path.join(os.tmpdir(), `iohelper-bench-time-${process.pid}`);
  const t0 = process.hrtime.bigint();
  const exits = procs.map((p) => start(p, timeFile));
  for (const fd of closeAfterSpawn) fs.closeSync(fd);
  const results = await Promise.all(exits);
  const wallS = Number(process.hrtime.bigint() - t0) / 1e9;
  for (const r of results) {
    if (r.code !== 0) throw new Error(`${r.name} failed (exit ${r.code ?? r.signal}): ${r.stderr.trim()}`);
  }
  const [user, sys, rssKiB] = fs.readFileSync(timeFile, 'utf8').trim().split(/\s+/).map(Number);
  fs.rmSync(timeFile, { force: true });
  return { wallS, cpuS: user + sys, maxRssMiB: rssKiB / 1024 };
}
