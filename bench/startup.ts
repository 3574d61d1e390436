/**
 * Fixed start-up cost: the end-to-end time of `iohelper restore` of a tiny image (4 MiB RAM
 * block, 1 MiB of data, 4 KiB of device state) into a fresh tmpfs file, process start to exit,
 * beside `node -e 0` (the floor any Node program pays here) and `iohelper --help`.
 */
import { spawnSync } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { packageRoot } from '../src/package-root';
import { createRamFile } from './lib/ram-file';
import { summarize } from './lib/stats';
import { Row } from './lib/table';

const IOHELPER = () => path.join(packageRoot(), 'bin', 'iohelper');

function timeOnce(cmd: string, args: string[], input?: Buffer): number {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { input, stdio: [input ? 'pipe' : 'ignore', 'ignore', 'pipe'] });
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr?.toString().trim()}`);
  return s;
}

export function benchStartup(o: { runs: number; dir: string }): Row[] {
  const ram = `/dev/shm/iohelper-bench-tiny-${process.pid}`;
  const back = `${ram}-restored`;
  const image = path.join(o.dir, 'bench-tiny.img');
  createRamFile(ram, 4 << 20);
  const fd = fs.openSync(ram, 'r+');
  fs.writeSync(fd, crypto.randomBytes(1 << 20), 0, 1 << 20, 1 << 20);
  fs.closeSync(fd);
  const runs = Math.max(o.runs, 10);
  const times = new Map<string, number[]>();
  const add = (name: string, s: number) => times.set(name, [...(times.get(name) ?? []), s]);
  try {
    timeOnce(process.execPath, [IOHELPER(), 'save', '--no-stream-check', '--image', image, '--ram', `ram0=${ram}`], crypto.randomBytes(4096));
    for (let i = 0; i < runs; i++) {
      add('node -e 0 (the floor for any Node program)', timeOnce(process.execPath, ['-e', '0']));
      add('iohelper --help', timeOnce(process.execPath, [IOHELPER(), '--help']));
      fs.rmSync(back, { force: true });
      add('iohelper restore of a tiny image (4 MiB block, 1 MiB data)', timeOnce(process.execPath, [IOHELPER(), 'restore', '--image', image, '--ram', `ram0=${back}`]));
    }
  } finally {
    for (const f of [ram, back, image]) fs.rmSync(f, { force: true });
  }
  return [...times].map(([method, xs]) => ({ scenario: 'startup', method, bytes: 4 << 20, wall: summarize(xs), cpuS: summarize([]), maxRssMiB: summarize([]) }));
}
