/**
 * Parallel scenarios on a real QEMU 10 guest of `size` bytes whose RAM is one of the memory
 * profiles (bench/lib/profiles.ts) on /dev/shm:
 * - parallel: our image (x-ignore-shared + `iohelper save/restore --direct`, by jobs) against
 *   QEMU's own mapped-ram + multifd at channels 2 and 4, with and without direct-io ("QEMU
 *   best" is the fastest of the four per direction), and the limits: fio O_DIRECT writing and
 *   reading exactly our image's data bytes (at our I/O size and depth, and at 4 MiB QD16), and
 *   bench/ref/fill-ram reading the image's data into a fresh RAM file (the restore limit:
 *   what page allocation plus the reads cost without any format, checksum or QEMU).
 * - vm-e2e: every way to save a real guest (classic stream through either helper, our image,
 *   mapped-ram).
 * Alternating order, page cache dropped before every run, RAM compared after the first.
 */
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { createRamFile, filesEqual } from './lib/ram-file';
import { machineArgs, QemuInstance, qemuAvailable, startQemu } from '../src/vm/qemu-launch';
import { startImageRestore } from '../src/vm/image-migration';
import { saveVmToImage } from '../src/vm/image-save';
import { restoreVm } from '../src/vm/manager';
import { restoreMappedRam, saveMappedRam } from './lib/mapped-ram';
import { inspect } from '../src/image/inspect';
import { commandExists, dropCaches } from './lib/host';
import { HelperCommand, ourHelper, restoreThroughHelper, saveThroughHelper } from '../src/vm/stream-migration';
import { LIBVIRT_IOHELPER } from './stream';
import { sampleProcess } from './lib/proc-sampler';
import { alternatingOrder, summarize } from './lib/stats';
import { Row, summaryRows } from './lib/table';
import { describeStats, prepareProfile, Profile } from './lib/profiles';
import { fillRamArgs, fillRamTool } from './lib/fill-ram';

export interface ParallelBenchOptions {
  /** parallel: our image by jobs vs QEMU mapped-ram vs the limits; vm-e2e: every way to save a real guest. */
  set: 'parallel' | 'vm-e2e';
  profile: Profile;
  /** Where the guest RAM files live: tmpfs (/dev/shm) or a hugetlbfs mount (2 MiB pages). */
  ramDir?: string;
  hugetlbfs?: boolean;
  size: number;
  runs: number;
  dir: string;
  jobs: number[];
  verify: boolean;
}

export interface Sample {
  wallS: number;
  cpuS: number;
  peakAnonMiB: number;
  /**
   * QEMU's saves: to `completed` and then an fdatasync of its file. QEMU syncs nothing (its
   * docs: it "does not flush cached file data/metadata at the end of migration"), while our
   * image is durable when the save returns; a fair target compares durable with durable.
   */
  syncedWallS?: number;
}

/** The name of a QEMU row's durable twin: its save to `completed`, then fdatasync of its file. */
export const synced = (name: string) => `${name} + fdatasync of its file`;

/** fdatasync of `file`, in seconds. */
export function syncSeconds(file: string): number {
  const t0 = process.hrtime.bigint();
  const fd = fs.openSync(file, 'r');
  try {
    fs.fdatasyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  return secondsSince(t0);
}

/** A method times a save, a restore, or both (a limit may have only one side). */
export interface Method {
  name: string;
  /** The file a save writes, when there is one (its size is reported). */
  image?: string;
  save?(): Promise<Sample>;
  restore?(): Promise<Sample>;
  /** Whether the restored RAM equals the source (methods that restore into the guest's RAM). */
  verify?(): Promise<boolean>;
  cleanup(): void;
}

/** What the first save of our image tells the limits: how many data bytes it holds, and where. */
export interface ImageFacts {
  image: string;
  dataBytes: number;
  blockOffset: number;
}

const MAX_IO = 8 << 20; // the addon's I/O size for image data (native/ram_copy.cc)
const secondsSince = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e9;

/**
 * Our image through `iohelper save/restore --direct` with a real QEMU; compressed (format v2)
 * with a zstd level. The restore is what a manager waits for: restoreVm (src/vm/manager.ts)
 * from the call to a loaded, paused QEMU (helper start, RAM filled and verified while QEMU
 * starts, device state loaded), like QEMU's own restore timed from QEMU's start to completed.
 * `noVerify` restores with --no-verify (restore rows only).
 */
export function ours(jobs: number, src: string, dst: string, dir: string, size: number, facts: { current?: ImageFacts }, compressLevel?: number, noVerify = false): Method {
  const image = path.join(dir, `bench-ours-${jobs}${compressLevel === undefined ? '' : `-zstd${compressLevel}`}.img`);
  const save = async (): Promise<Sample> => {
    const vm = await startQemu({ ram: [{ id: 'ram0', path: src, size }] });
    try {
      fs.rmSync(image, { force: true });
      // The save runs in this process (src/vm/image-save.ts), which does nothing else meanwhile.
      const sampler = sampleProcess(process.pid);
      const t0 = process.hrtime.bigint();
      await saveVmToImage(vm.qmp, { image, ram: [{ name: 'ram0', path: src }], direct: true, jobs, compressLevel });
      const wallS = secondsSince(t0);
      if (!facts.current) {
        const block = inspect(image).blocks?.[0];
        if (!block) throw new Error(`${image}: inspect found no RAM block`);
        facts.current = { image, dataBytes: block.dataBytes, blockOffset: block.offset };
      }
      return { wallS, ...sampler.stop() };
    } finally {
      await vm.stop();
    }
  };
  return {
    name: `iohelper image${compressLevel === undefined ? '' : ` zstd:${compressLevel}`}, jobs ${jobs}${noVerify ? ', --no-verify' : ''} (end to end)`,
    image,
    // The --no-verify variant restores the image the verified one saved.
    save: noVerify ? undefined : save,
    async restore() {
      fs.rmSync(dst, { force: true });
      const t0 = process.hrtime.bigint();
      const vm = await restoreVm({ image, qemuArgs: machineArgs([{ id: 'ram0', path: dst, size }]), direct: true, jobs, noVerify });
      const wallS = secondsSince(t0);
      await vm.stop();
      return { wallS, cpuS: NaN, peakAnonMiB: NaN };
    },
    verify: async () => (await filesEqual(src, dst)).equal,
    cleanup: () => (noVerify ? undefined : fs.rmSync(image, { force: true })),
  };
}

/** The helper alone (labelled so): `iohelper restore` filling and verifying the RAM file, no QEMU. */
function oursHelperOnly(jobs: number, dst: string, dir: string): Method {
  const image = path.join(dir, `bench-ours-${jobs}.img`);
  return {
    name: `iohelper restore alone (helper only, no QEMU), jobs ${jobs}`,
    async restore() {
      fs.rmSync(dst, { force: true });
      const t0 = process.hrtime.bigint();
      const started = startImageRestore({ image, ram: [{ name: 'ram0', path: dst }], direct: true, jobs });
      const sampler = sampleProcess(started.helper!.proc.pid!);
      try {
        await started.ramFilled;
        return { wallS: secondsSince(t0), ...sampler.stop() };
      } finally {
        await started.stop();
        started.closeReadFd();
      }
    },
    cleanup: () => undefined,
  };
}

function qemuPid(vm: { proc: { pid?: number } }): number {
  return vm.proc.pid!;
}

export const mappedRamName = (channels: number, directIo: boolean) => `QEMU mapped-ram + multifd(${channels})${directIo ? ' + direct-io' : ''}`;

function mappedRam(src: string, dst: string, dir: string, size: number, channels: number, directIo: boolean): Method {
  const image = path.join(dir, `bench-mapped-ram-${channels}${directIo ? '-direct' : ''}.img`);
  return {
    name: mappedRamName(channels, directIo),
    async save() {
      const vm = await startQemu({ ram: [{ id: 'ram0', path: src, size }] });
      try {
        fs.rmSync(image, { force: true });
        const s = sampleProcess(qemuPid(vm));
        const t0 = process.hrtime.bigint();
        await saveMappedRam(vm.qmp, image, directIo, channels);
        const wallS = secondsSince(t0);
        const usage = s.stop();
        return { wallS, ...usage, peakAnonMiB: NaN, syncedWallS: wallS + syncSeconds(image) };
      } finally {
        await vm.stop();
      }
    },
    restore: () =>
      incomingRestore(dst, size, async (vm) => {
        const s = sampleProcess(qemuPid(vm));
        await restoreMappedRam(vm.qmp, image, directIo, channels);
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

export function runTool(cmd: string, args: string[]): Promise<Sample> {
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

/** fio O_DIRECT writing, then reading, exactly the data bytes of our image (known after our first save). */
function fioLimit(name: string, bs: number, depth: number, dir: string, facts: { current?: ImageFacts }): Method {
  const file = path.join(dir, `bench-fio-${bs}-${depth}.dat`);
  const args = () => {
    if (!facts.current) throw new Error('fio runs after the first save of our image (it moves the same number of bytes)');
    const bytes = Math.max(bs, Math.floor(facts.current.dataBytes / bs) * bs);
    return ['--name=limit', `--filename=${file}`, `--bs=${bs}`, `--iodepth=${depth}`, '--ioengine=libaio', '--direct=1', `--size=${bytes}`];
  };
  return {
    name,
    save: () => (fs.rmSync(file, { force: true }), runTool('fio', [...args(), '--rw=write', '--end_fsync=1'])),
    restore: () => runTool('fio', [...args(), '--rw=read', '--readonly']),
    cleanup: () => fs.rmSync(file, { force: true }),
  };
}

/**
 * The restore limit: O_DIRECT reads of our image's data into a fresh RAM file, no checks:
 * pwrite()n on tmpfs, read straight into a mapping on hugetlbfs (which has no write()).
 */
function fillRamLimit(threads: number, dst: string, facts: { current?: ImageFacts }, size: number, mapped: boolean): Method {
  return {
    name: `read into fresh RAM file (fill-ram, ${threads} threads, 8 MiB${mapped ? ', mapped' : ''})`,
    restore: () => {
      if (!facts.current) throw new Error('fill-ram runs after the first save of our image (it reads that image)');
      fs.rmSync(dst, { force: true });
      return runTool(fillRamTool(), fillRamArgs(facts.current.image, dst, { direct: true, mapped, threads, ioSize: MAX_IO, base: facts.current.blockOffset, length: size }));
    },
    cleanup: () => undefined,
  };
}

export async function benchParallel(o: ParallelBenchOptions): Promise<{ rows: Row[]; notes: string[] }> {
  const q = qemuAvailable();
  if (!q.ok) throw new Error(`the parallel scenario needs QEMU 10 (${q.why}); sudo bash scripts/install-qemu.sh --bench`);
  const ramDir = o.ramDir ?? '/dev/shm';
  const src = path.join(ramDir, `iohelper-bench-ram-${process.pid}`);
  const dst = `${src}-restored`;
  const stats = await prepareProfile(o.profile, src, o.size, o.hugetlbfs);
  const variant = `${o.profile}${o.hugetlbfs ? '-hugetlbfs' : ''}`;
  const notes = [`Memory profile ${describeStats(stats)}${o.hugetlbfs ? ', on hugetlbfs (2 MiB pages)' : ''}.`];
  const rows: Row[] = [];
  const label = (direction: string) => `${o.set}-${direction} ${variant}`;
  const missing = (method: string, note: string) => {
    for (const scenario of [label('save'), label('restore')]) rows.push({ scenario, method, bytes: o.size, wall: summarize([]), cpuS: summarize([]), maxRssMiB: summarize([]), note });
  };
  const facts: { current?: ImageFacts } = {};
  const methods: Method[] = [];
  const qemuVariants: string[] = [];
  if (o.set === 'parallel') {
    methods.push(...o.jobs.map((j) => ours(j, src, dst, o.dir, o.size, facts)));
    const top = Math.max(...o.jobs);
    methods.push(ours(top, src, dst, o.dir, o.size, facts, undefined, true), oursHelperOnly(top, dst, o.dir));
    for (const channels of [2, 4]) {
      for (const directIo of [true, false]) {
        methods.push(mappedRam(src, dst, o.dir, o.size, channels, directIo));
        qemuVariants.push(mappedRamName(channels, directIo));
      }
    }
    if (commandExists('/usr/bin/fio')) {
      const depth = Math.max(...o.jobs);
      methods.push(fioLimit(`fio O_DIRECT, our I/O (8 MiB, QD${depth})`, MAX_IO, depth, o.dir, facts), fioLimit('fio O_DIRECT, 4 MiB QD16', 4 << 20, 16, o.dir, facts));
    } else missing('fio', 'not installed (apt-get install fio)');
    methods.push(fillRamLimit(2, dst, facts, o.size, !!o.hugetlbfs));
  } else {
    methods.push(classicStream('iohelper', ourHelper(), src, dst, o.dir, o.size));
    if (commandExists(LIBVIRT_IOHELPER)) methods.push(classicStream('libvirt_iohelper', { cmd: LIBVIRT_IOHELPER, args: [] }, src, dst, o.dir, o.size));
    else missing('classic stream through libvirt_iohelper', `not installed (${LIBVIRT_IOHELPER})`);
    methods.push(ours(2, src, dst, o.dir, o.size, facts));
    for (const directIo of [false, true]) {
      methods.push(mappedRam(src, dst, o.dir, o.size, 2, directIo));
      qemuVariants.push(mappedRamName(2, directIo));
    }
  }

  const save = new Map<string, Sample[]>();
  const restore = new Map<string, Sample[]>();
  const add = (m: Map<string, Sample[]>, name: string, s: Sample) => m.set(name, [...(m.get(name) ?? []), s]);
  try {
    for (const [run, order] of alternatingOrder(methods, o.runs).entries()) {
      // Run 0 goes in list order, so our image exists before the limits that read its size.
      for (const m of order) {
        const parts: string[] = [];
        if (m.save) {
          dropCaches();
          const s = await m.save();
          add(save, m.name, s);
          if (s.syncedWallS !== undefined) add(save, synced(m.name), { ...s, wallS: s.syncedWallS });
          parts.push(`save ${s.wallS.toFixed(2)} s`);
        }
        if (m.restore) {
          dropCaches();
          const r = await m.restore();
          add(restore, m.name, r);
          parts.push(`restore ${r.wallS.toFixed(2)} s`);
          if (run === 0 && o.verify && m.verify && !(await m.verify())) throw new Error(`${m.name}: restored RAM differs from the original`);
        }
        console.error(`  ${variant} ${m.name}: ${parts.join(', ')}`);
      }
    }
  } finally {
    for (const m of methods) m.cleanup();
    fs.rmSync(src, { force: true });
    fs.rmSync(dst, { force: true });
  }
  for (const [direction, data] of [['save', save], ['restore', restore]] as const) {
    const names = methods.flatMap((m) => [m.name, synced(m.name)]).filter((n) => data.has(n));
    const limit = direction === 'save' ? names.find((n) => n.startsWith('fio O_DIRECT, our I/O')) : names.find((n) => n.startsWith('read into fresh RAM'));
    const r = compareWithQemu(`${variant} ${direction}`, label(direction), o.size, names, data, qemuVariants, limit);
    rows.push(...r.rows);
    notes.push(...r.notes);
  }
  return { rows, notes };
}

/**
 * The rows of one direction (medians, each against QEMU's best: durable against durable for
 * saves, with the fdatasync of its file) and a note per `iohelper image` method: its time
 * against `limit` (what the disk does with the same bytes in that run), QEMU's best durable and
 * QEMU's best unsynced.
 */
export function compareWithQemu(what: string, scenario: string, size: number, names: string[], data: Map<string, Sample[]>, qemuVariants: string[], limit?: string): { rows: Row[]; notes: string[] } {
  const median = (name: string) => summarize((data.get(name) ?? []).map((x) => x.wallS)).median;
  const cpu = (name: string) => summarize((data.get(name) ?? []).map((x) => x.cpuS)).median;
  const fastest = (variants: string[]) => variants.filter((v) => data.has(v)).sort((a, b) => median(a) - median(b))[0];
  const unsynced = fastest(qemuVariants);
  // Saves: durable against durable (QEMU's best with the fdatasync of its file); restores have no sync.
  const durable = fastest(qemuVariants.map(synced));
  const best = durable ?? unsynced;
  const asRuns = new Map([...data].map(([k, v]) => [k, v.map((x) => ({ wallS: x.wallS, cpuS: x.cpuS, memMiB: x.peakAnonMiB }))]));
  const rows = summaryRows(scenario, size, names, asRuns, best ? { method: best, label: durable ? 'QEMU best durable' : 'QEMU best' } : undefined);
  const notes: string[] = [];
  const cpuText = (n: string) => (Number.isFinite(cpu(n)) ? `, ${cpu(n).toFixed(2)} CPU-s` : '');
  for (const n of names.filter((x) => x.startsWith('iohelper image'))) {
    const parts = [`${what}, ${n}: ${median(n).toFixed(2)} s${cpuText(n)}`];
    if (limit) parts.push(`${(median(n) / median(limit)).toFixed(2)}x the limit (${limit}, ${median(limit).toFixed(2)} s${cpuText(limit)})`);
    const r = median(best) / median(n);
    if (best) parts.push(`${r >= 1 ? `${r.toFixed(2)}x faster than` : `SLOWER than (${r.toFixed(2)}x the speed of)`} QEMU best${durable ? ' durable' : ''} (${best}, ${median(best).toFixed(2)} s${cpuText(best)})`);
    if (durable && unsynced) parts.push(`QEMU best unsynced: ${unsynced}, ${median(unsynced).toFixed(2)} s${cpuText(unsynced)} (${(median(unsynced) / median(n)).toFixed(2)}x our time)`);
    notes.push(parts.join('; '));
  }
  return { rows, notes };
}
