/**
 * Parallel scenarios on a real QEMU 10 guest of `size` bytes (RAM on /dev/shm, ~25 % zero
 * pages): our parallel image (x-ignore-shared + `iohelper save/restore --direct`, jobs 1/2/4)
 * against QEMU's own mapped-ram + multifd(2) + direct-io, and fio O_DIRECT moving the same
 * non-zero bytes (the disk's limit). Alternating order, page cache dropped before every run.
 */
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { createRamFile, filesEqual, fillPattern } from '../src/synthetic/ram-file';
import { QemuInstance, qemuAvailable, startQemu } from '../src/vm/qemu-launch';
import { finishImageRestore, saveVmToImage, startImageRestore } from '../src/vm/image-migration';
import { restoreMappedRam, saveMappedRam } from '../src/vm/mapped-ram';
import { commandExists, dropCaches } from './lib/host';
import { HelperCommand, ourHelper, restoreThroughHelper, saveThroughHelper } from '../src/vm/stream-migration';
import { LIBVIRT_IOHELPER } from './stream';
import { sampleProcess } from './lib/proc-sampler';
import { alternatingOrder, summarize } from './lib/stats';
import { Row, summaryRows } from './lib/table';

export interface ParallelBenchOptions {
  /** parallel: our image by jobs vs mapped-ram vs fio; vm-e2e: every way to save a real guest. */
  set: 'parallel' | 'vm-e2e';
  size: number;
  runs: number;
  dir: string;
  jobs: number[];
  verify: boolean;
}

interface Sample {
  wallS: number;
  cpuS: number;
  peakAnonMiB: number;
}

interface Method {
  name: string;
  save(): Promise<Sample>;
  restore(): Promise<Sample>;
  verify(): Promise<boolean>;
  cleanup(): void;
}

const secondsSince = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e9;

function ours(jobs: number, src: string, dst: string, dir: string, size: number): Method {
  const image = path.join(dir, `bench-ours-${jobs}.img`);
  return {
    name: `iohelper image, jobs ${jobs}`,
    async save() {
      const vm = await startQemu({ ram: [{ id: 'ram0', path: src, size }] });
      try {
        fs.rmSync(image, { force: true });
        let sampler: ReturnType<typeof sampleProcess> | undefined;
        const t0 = process.hrtime.bigint();
        await saveVmToImage(vm.qmp, { image, ram: [{ name: 'ram0', path: src }], direct: true, jobs }, (h) => (sampler = sampleProcess(h.proc.pid!)));
        const wallS = secondsSince(t0);
        return { wallS, ...sampler!.stop() };
      } finally {
        await vm.stop();
      }
    },
    async restore() {
      fs.rmSync(dst, { force: true });
      const t0 = process.hrtime.bigint();
      const started = startImageRestore({ image, ram: [{ name: 'ram0', path: dst }], direct: true, jobs });
      const sampler = sampleProcess(started.helper.proc.pid!);
      await started.ramFilled;
      const vm = await startQemu({ ram: [{ id: 'ram0', path: dst, size }], incoming: true });
      try {
        await finishImageRestore(vm.qmp, started);
        return { wallS: secondsSince(t0), ...sampler.stop() };
      } finally {
        await vm.stop();
      }
    },
    verify: async () => (await filesEqual(src, dst)).equal,
    cleanup: () => fs.rmSync(image, { force: true }),
  };
}

function qemuPid(vm: { proc: { pid?: number } }): number {
  return vm.proc.pid!;
}

function mappedRam(src: string, dst: string, dir: string, size: number, directIo = true): Method {
  const image = path.join(dir, 'bench-mapped-ram.img');
  return {
    name: `QEMU mapped-ram + multifd(2)${directIo ? ' + direct-io' : ''}`,
    async save() {
      const vm = await startQemu({ ram: [{ id: 'ram0', path: src, size }] });
      try {
        fs.rmSync(image, { force: true });
        const s = sampleProcess(qemuPid(vm));
        const t0 = process.hrtime.bigint();
        await saveMappedRam(vm.qmp, image, directIo);
        const wallS = secondsSince(t0);
        return { wallS, ...s.stop(), peakAnonMiB: NaN };
      } finally {
        await vm.stop();
      }
    },
    restore: () =>
      incomingRestore(dst, size, async (vm) => {
        const s = sampleProcess(qemuPid(vm));
        await restoreMappedRam(vm.qmp, image, directIo);
        return s.stop().cpuS;
      }),
    verify: async () => (await filesEqual(src, dst)).equal,
    cleanup: () => fs.rmSync(image, { force: true }),
  };
}

/**
 * A restore into a fresh RAM file by a QEMU started with -incoming defer, timed from QEMU's
 * start; `load` feeds it and returns the CPU seconds it measured (NaN when it did not).
 */
async function incomingRestore(dst: string, size: number, load: (vm: QemuInstance) => Promise<number>): Promise<Sample> {
  fs.rmSync(dst, { force: true });
  createRamFile(dst, size);
  const t0 = process.hrtime.bigint();
  const vm = await startQemu({ ram: [{ id: 'ram0', path: dst, size }], incoming: true });
  try {
    const cpuS = await load(vm);
    return { wallS: secondsSince(t0), cpuS, peakAnonMiB: NaN };
  } finally {
    await vm.stop();
  }
}

/** The classic path on the same guest: QEMU's whole stream through a helper into an O_DIRECT file. */
function classicStream(name: string, helper: HelperCommand, src: string, dst: string, dir: string, size: number): Method {
  const image = path.join(dir, `bench-stream-${name.replace(/\W+/g, '-')}.save`);
  return {
    name: `classic stream through ${name}`,
    async save() {
      const vm = await startQemu({ ram: [{ id: 'ram0', path: src, size }] });
      try {
        const t0 = process.hrtime.bigint();
        await saveThroughHelper({ qmp: vm.qmp, image, direct: true, helper });
        return { wallS: secondsSince(t0), cpuS: NaN, peakAnonMiB: NaN };
      } finally {
        await vm.stop();
      }
    },
    restore: () =>
      incomingRestore(dst, size, async (vm) => {
        await restoreThroughHelper({ qmp: vm.qmp, image, direct: true, helper });
        return NaN;
      }),
    verify: async () => (await filesEqual(src, dst)).equal,
    cleanup: () => fs.rmSync(image, { force: true }),
  };
}

function runTool(cmd: string, args: string[]): Promise<Sample> {
  const t0 = process.hrtime.bigint();
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const s = sampleProcess(child.pid!);
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve, reject) =>
    child.on('close', (code) => {
      const u = s.stop();
      if (code !== 0) reject(new Error(`${cmd} failed: ${err.trim()}`));
      else resolve({ wallS: secondsSince(t0), ...u, peakAnonMiB: NaN });
    }),
  );
}

/** fio O_DIRECT, 4 MiB blocks, 16 in flight: the same non-zero bytes, written then read. */
function fioLimit(bytes: number, dir: string): Method {
  const file = path.join(dir, 'bench-fio.dat');
  const common = ['--name=limit', `--filename=${file}`, '--bs=4M', '--iodepth=16', '--ioengine=libaio', '--direct=1', `--size=${Math.floor(bytes / (4 << 20)) * (4 << 20)}`];
  return {
    name: 'fio O_DIRECT QD16 (disk limit, non-zero bytes)',
    save: () => (fs.rmSync(file, { force: true }), runTool('fio', [...common, '--rw=write', '--end_fsync=1'])),
    restore: () => runTool('fio', [...common, '--rw=read', '--readonly']),
    verify: async () => true,
    cleanup: () => fs.rmSync(file, { force: true }),
  };
}

export async function benchParallel(o: ParallelBenchOptions): Promise<Row[]> {
  const q = qemuAvailable();
  if (!q.ok) throw new Error(`the parallel scenario needs QEMU 10 (${q.why}); sudo bash scripts/install-qemu.sh --bench`);
  const src = `/dev/shm/iohelper-bench-ram-${process.pid}`;
  const dst = `${src}-restored`;
  createRamFile(src, o.size);
  const { pages, zeroPages } = fillPattern(src, 7, 0.25);
  const nonZero = (pages - zeroPages) * 4096;
  const rows: Row[] = [];
  const missing = (method: string, note: string) => {
    for (const scenario of [`${o.set}-save`, `${o.set}-restore`]) rows.push({ scenario, method, bytes: o.size, wall: summarize([]), cpuS: summarize([]), maxRssMiB: summarize([]), note });
  };
  const methods: Method[] = [];
  if (o.set === 'parallel') {
    methods.push(...o.jobs.map((j) => ours(j, src, dst, o.dir, o.size)), mappedRam(src, dst, o.dir, o.size));
    if (commandExists('/usr/bin/fio')) methods.push(fioLimit(nonZero, o.dir));
    else missing('fio', 'not installed (apt-get install fio)');
  } else {
    methods.push(classicStream('iohelper', ourHelper(), src, dst, o.dir, o.size));
    if (commandExists(LIBVIRT_IOHELPER)) methods.push(classicStream('libvirt_iohelper', { cmd: LIBVIRT_IOHELPER, args: [] }, src, dst, o.dir, o.size));
    else missing('classic stream through libvirt_iohelper', `not installed (${LIBVIRT_IOHELPER})`);
    methods.push(ours(2, src, dst, o.dir, o.size), mappedRam(src, dst, o.dir, o.size, false), mappedRam(src, dst, o.dir, o.size, true));
  }

  const save = new Map<string, Sample[]>();
  const restore = new Map<string, Sample[]>();
  try {
    for (const [run, order] of alternatingOrder(methods, o.runs).entries()) {
      for (const m of order) {
        dropCaches();
        const s = await m.save();
        dropCaches();
        const r = await m.restore();
        if (run === 0 && o.verify && !(await m.verify())) throw new Error(`${m.name}: restored RAM differs from the original`);
        save.set(m.name, [...(save.get(m.name) ?? []), s]);
        restore.set(m.name, [...(restore.get(m.name) ?? []), r]);
        console.error(`  ${m.name}: save ${s.wallS.toFixed(2)} s, restore ${r.wallS.toFixed(2)} s`);
      }
    }
  } finally {
    for (const m of methods) m.cleanup();
    fs.rmSync(src, { force: true });
    fs.rmSync(dst, { force: true });
  }
  const names = methods.map((m) => m.name);
  const asRuns = (xs: Map<string, Sample[]>) => new Map([...xs].map(([k, v]) => [k, v.map((x) => ({ wallS: x.wallS, cpuS: x.cpuS, memMiB: x.peakAnonMiB }))]));
  const peer = { method: 'QEMU mapped-ram + multifd(2) + direct-io', label: 'mapped-ram' };
  rows.push(...summaryRows(`${o.set}-save`, o.size, names, asRuns(save), peer), ...summaryRows(`${o.set}-restore`, o.size, names, asRuns(restore), peer));
  return rows;
}
