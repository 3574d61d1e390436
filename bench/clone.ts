/**
 * Clone scenario: from one saved image of a `size` guest, the time from cloneVm() (and a lazy
 * restore) to a loaded, paused QEMU, QEMU start included; and what N clones cost in memory
 * after each has read all of its RAM: page cache grows by the image once, not N times, and the
 * clones' own anonymous memory stays small.
 */
import * as fs from 'fs';
import * as path from 'path';
import { createRamFile, fillPattern } from './lib/ram-file';
import { cloneVm, restoreVm, saveVm } from '../src/vm/manager';
import { machineArgs, qemuAvailable, startQemu } from '../src/vm/qemu-launch';
import { dropCaches } from './lib/host';
import { summarize } from './lib/stats';
import { Row } from './lib/table';

function meminfoKiB(field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(fs.readFileSync('/proc/meminfo', 'utf8'));
  return m ? Number(m[1]) : NaN;
}

function rssAnonMiB(pid: number): number {
  const m = /RssAnon:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

export async function benchClone(o: { size: number; runs: number; dir: string; count: number }): Promise<{ rows: Row[]; notes: string[] }> {
  const q = qemuAvailable();
  if (!q.ok) throw new Error(`the clone scenario needs QEMU 10 (${q.why})`);
  const ram = `/dev/shm/iohelper-bench-clone-${process.pid}`;
  const image = path.join(o.dir, 'bench-clone.img');
  createRamFile(ram, o.size);
  fillPattern(ram, 11, 0.25);
  const args = machineArgs([{ id: 'ram0', path: '/unused', size: o.size }]);
  const notes: string[] = [];
  try {
    const vm = await startQemu({ ram: [{ id: 'ram0', path: ram, size: o.size }] });
    await saveVm(vm.qmp, { image, direct: true });
    await vm.stop();
    fs.rmSync(ram);
    const clone: number[] = [];
    const lazy: number[] = [];
    for (let i = 0; i < o.runs; i++) {
      dropCaches();
      let t0 = process.hrtime.bigint();
      const [c] = await cloneVm({ image, qemuArgs: args, count: 1 });
      clone.push(Number(process.hrtime.bigint() - t0) / 1e9);
      await c.stop();
      dropCaches();
      t0 = process.hrtime.bigint();
      const l = await restoreVm({ image, qemuArgs: args, lazy: true });
      lazy.push(Number(process.hrtime.bigint() - t0) / 1e9);
      await l.stop();
    }
    dropCaches();
    const cached0 = meminfoKiB('Cached');
    const clones = await cloneVm({ image, qemuArgs: args, count: o.count });
    const cachedLoaded = meminfoKiB('Cached');
    for (const c of clones) await c.qmp.execute('pmemsave', { val: 0, size: Math.min(o.size, 2 ** 31), filename: '/dev/null' });
    const cachedRead = meminfoKiB('Cached');
    const anon = clones.map((c) => rssAnonMiB(c.proc.pid!));
    await Promise.all(clones.map((c) => c.stop()));
    const dataMiB = (fs.statSync(image).blocks * 512) / 2 ** 20;
    notes.push(
      `${o.count} clones of a ${(o.size / 2 ** 30).toFixed(1)} GiB image (${dataMiB.toFixed(0)} MiB allocated): page cache +${((cachedLoaded - cached0) / 1024).toFixed(0)} MiB once loaded, ` +
        `+${((cachedRead - cached0) / 1024).toFixed(0)} MiB after every clone read all its RAM (pmemsave of the first ${Math.min(o.size, 2 ** 31) / 2 ** 20} MiB); ` +
        `each clone's anonymous RSS ${anon.map((a) => a.toFixed(0)).join(', ')} MiB (QEMU's own, no guest RAM copied)`,
    );
    const mk = (method: string, xs: number[]): Row => ({ scenario: 'clone', method, bytes: o.size, wall: summarize(xs), cpuS: summarize([]), maxRssMiB: summarize([]) });
    return { rows: [mk('cloneVm, 1 clone: command to loaded paused QEMU', clone), mk('restore --lazy: command to loaded paused QEMU', lazy)], notes };
  } finally {
    fs.rmSync(ram, { force: true });
    fs.rmSync(image, { force: true });
  }
}
