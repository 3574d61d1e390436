/**
 * compress scenario: compressed images on the `real` memory profile, on the local disk and on
 * the same disk throttled to network-storage speed (cgroup v1 blkio, default 200 MB/s each
 * way, checked with fio in the same run). Methods, alternating, page cache dropped before each:
 * - our image uncompressed and compressed (zstd 1), `iohelper save/restore --direct` with QEMU;
 * - libvirt's zstd save format: `virsh save/restore --bypass-cache` with save_image_format =
 *   "zstd" (QEMU's one stream -> one `zstd` process -> libvirt_iohelper), a domain whose
 *   file-backed RAM holds the same bytes;
 * - `zstd -1 -T0` of the raw RAM file (the size reference) into `dd oflag=direct`, and back.
 * Reports save and restore times and every method's file size.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { filesEqual, sha256File } from './lib/ram-file';
import { qemuAvailable } from '../src/vm/qemu-launch';
import { commandExists, dropCaches } from './lib/host';
import { copyExtents } from './lib/fill-ram';
import { ensureLibvirtd, libvirtdPid, libvirtdUnavailable, memoryBackingOnTmpfs, virsh, withQemuConf } from './lib/libvirtd';
import { describeStats, prepareProfile } from './lib/profiles';
import { alternatingOrder, summarize } from './lib/stats';
import { Row, summaryRows } from './lib/table';
import { createThrottle, Throttle, throttleUnavailable } from './lib/throttle';
import { domainXml, kvmUsable, ramFile, timed } from './libvirt';
import { Method, ours, runTool, Sample } from './parallel';

export interface CompressBenchOptions {
  size: number;
  runs: number;
  dir: string;
  jobs: number;
  /** Bytes per second of the throttled disk, each way (0: local disk only). */
  throttle: number;
}

// At most 20 characters: libvirt shortens longer names in the RAM file's path.
const NAME = `iohb-zstd-${process.pid}`;
const LEVEL = 1;

/** `zstd -1 -T0` of the raw RAM file, written and read with O_DIRECT by dd. */
function rawZstd(src: string, dst: string, dir: string): Method {
  const image = path.join(dir, 'bench-raw-ram.zst');
  return {
    name: `zstd -${LEVEL} -T0 of the raw RAM file (dd O_DIRECT)`,
    image,
    // Only the shell is sampled, not the pipeline under it: no CPU figure.
    save: async () => ({ ...(await runTool('sh', ['-c', `zstd -${LEVEL} -T0 -q -c "$1" | dd of="$2" oflag=direct bs=1M iflag=fullblock conv=fsync status=none`, 'sh', src, image])), cpuS: NaN }),
    restore: async () => {
      fs.rmSync(dst, { force: true });
      return { ...(await runTool('sh', ['-c', 'dd if="$1" iflag=direct bs=1M status=none | zstd -d -T0 -q -o "$2"', 'sh', image, dst])), cpuS: NaN };
    },
    verify: async () => (await filesEqual(src, dst)).equal,
    cleanup: () => fs.rmSync(image, { force: true }),
  };
}

/** libvirt's zstd format through a real libvirtd; its RAM file gets the profile's bytes while paused. */
function libvirtZstd(src: string, dir: string, size: number, expected: () => Promise<string>): Method & { xml: string } {
  const image = path.join(dir, `${NAME}.save`);
  const xml = path.join(dir, `${NAME}.xml`);
  let restoredHash: string | undefined;
  return {
    name: 'libvirt save_image_format zstd (virsh save --bypass-cache)',
    image,
    xml,
    async save(): Promise<Sample> {
      fs.rmSync(image, { force: true });
      virsh('create', xml, '--paused');
      copyExtents(src, ramFile(NAME));
      dropCaches();
      return { wallS: timed('save', NAME, image, '--bypass-cache'), cpuS: NaN, peakAnonMiB: NaN };
    },
    async restore(): Promise<Sample> {
      const wallS = timed('restore', image, '--bypass-cache', '--paused');
      restoredHash = await sha256File(ramFile(NAME));
      spawnSync('virsh', ['-c', 'qemu:///system', 'destroy', NAME], { stdio: 'ignore' });
      return { wallS, cpuS: NaN, peakAnonMiB: NaN };
    },
    verify: async () => restoredHash === (await expected()),
    cleanup: () => {
      spawnSync('virsh', ['-c', 'qemu:///system', 'destroy', NAME], { stdio: 'ignore' });
      fs.rmSync(image, { force: true });
    },
  };
}

/** fio O_DIRECT write then read of 512 MiB in the bench directory: the disk's speed as the methods see it. */
async function fioSpeed(dir: string): Promise<{ writeMBs: number; readMBs: number }> {
  const file = path.join(dir, 'bench-fio-throttle.dat');
  const bytes = 512 << 20;
  const args = ['--name=speed', `--filename=${file}`, '--bs=4M', '--iodepth=16', '--ioengine=libaio', '--direct=1', `--size=${bytes}`];
  try {
    const w = await runTool('fio', [...args, '--rw=write', '--end_fsync=1']);
    dropCaches();
    const r = await runTool('fio', [...args, '--rw=read', '--readonly']);
    return { writeMBs: bytes / 1e6 / w.wallS, readMBs: bytes / 1e6 / r.wallS };
  } finally {
    fs.rmSync(file, { force: true });
  }
}

/** A file's size and the bytes it occupies (our uncompressed image is sparse: zero RAM is holes). */
const fileBytes = (f?: string) => {
  if (!f || !fs.existsSync(f)) return { size: NaN, allocated: NaN };
  const st = fs.statSync(f);
  return { size: st.size, allocated: st.blocks * 512 };
};
const gb = (n: number) => `${(n / 1e9).toFixed(3)} GB`;

export async function benchCompress(o: CompressBenchOptions): Promise<{ rows: Row[]; notes: string[] }> {
  const q = qemuAvailable();
  if (!q.ok) throw new Error(`the compress scenario needs QEMU 10 (${q.why}); sudo bash scripts/install-qemu.sh --bench`);
  for (const tool of ['/usr/bin/zstd', '/usr/bin/fio']) if (!commandExists(tool)) throw new Error(`the compress scenario needs ${tool} (scripts/install-qemu.sh --bench)`);
  const src = `/dev/shm/iohelper-bench-ram-${process.pid}`;
  const dst = `${src}-restored`;
  const stats = await prepareProfile('real', src, o.size);
  const notes = [`Memory profile ${describeStats(stats)}.`];
  let hash: string | undefined;
  const expected = async () => (hash ??= await sha256File(src));

  const methods: Method[] = [ours(o.jobs, src, dst, o.dir, o.size, {}), ours(o.jobs, src, dst, o.dir, o.size, {}, LEVEL), rawZstd(src, dst, o.dir)];
  const missing: string[] = [];
  const undo: Array<() => void> = [];
  let lv: ReturnType<typeof libvirtZstd> | undefined;
  const why = libvirtdUnavailable();
  if (why) missing.push(`libvirt zstd format not run: ${why}`);

  const storages: Array<{ label: string; throttle?: number }> = [{ label: 'local disk' }];
  const noThrottle = o.throttle ? throttleUnavailable() : 'not asked (--throttle 0)';
  if (noThrottle) missing.push(`throttled disk not run: ${noThrottle}`);
  else storages.push({ label: `disk throttled to ${Math.round(o.throttle / 1e6)} MB/s`, throttle: o.throttle });

  const rows: Row[] = [];
  const sizes = new Map<string, { size: number; allocated: number }>();
  try {
    // Inside the try: a libvirtd that fails to start still gets qemu.conf and the mount undone.
    if (!why) {
      undo.push(withQemuConf({ save_image_format: 'zstd' }));
      const daemon = await ensureLibvirtd();
      undo.push(() => daemon.stop());
      undo.push(memoryBackingOnTmpfs());
      lv = libvirtZstd(src, o.dir, o.size, expected);
      fs.writeFileSync(lv.xml, domainXml(o.size, NAME));
      undo.push(() => fs.rmSync(lv!.xml, { force: true }));
      methods.push(lv);
    }
    for (const storage of storages) {
      let throttle: Throttle | undefined;
      const save = new Map<string, Sample[]>();
      const restore = new Map<string, Sample[]>();
      const add = (m: Map<string, Sample[]>, name: string, s: Sample) => m.set(name, [...(m.get(name) ?? []), s]);
      try {
        if (storage.throttle) {
          throttle = createThrottle(o.dir, storage.throttle);
          throttle.add(process.pid); // every child started from now on: helpers, QEMU, zstd, dd, fio
          const pid = libvirtdPid();
          if (pid) throttle.add(pid); // the helper and zstd libvirtd spawns
        }
        const speed = await fioSpeed(o.dir);
        notes.push(`${storage.label}: fio O_DIRECT 4 MiB QD16 measured ${speed.writeMBs.toFixed(0)} MB/s write, ${speed.readMBs.toFixed(0)} MB/s read${throttle ? ` (blkio.throttle.*_bps_device ${throttle.device} ${throttle.bytesPerSecond})` : ''}.`);
        for (const [run, order] of alternatingOrder(methods, o.runs).entries()) {
          for (const m of order) {
            dropCaches();
            const s = await m.save!();
            add(save, m.name, s);
            sizes.set(m.name, fileBytes(m.image));
            dropCaches();
            const r = await m.restore!();
            add(restore, m.name, r);
            if (run === 0 && m.verify && !(await m.verify())) throw new Error(`${m.name}: restored RAM differs from the original`);
            console.error(`  ${storage.label} ${m.name}: save ${s.wallS.toFixed(2)} s, restore ${r.wallS.toFixed(2)} s, ${gb(sizes.get(m.name)!.allocated)}`);
          }
        }
      } finally {
        if (throttle) {
          throttle.remove(process.pid);
          const pid = libvirtdPid();
          if (pid) throttle.remove(pid);
          throttle.close();
        }
      }
      const names = methods.map((m) => m.name);
      const asRuns = (xs: Map<string, Sample[]>) => new Map([...xs].map(([k, v]) => [k, v.map((x) => ({ wallS: x.wallS, cpuS: x.cpuS, memMiB: x.peakAnonMiB }))]));
      const baseline = { method: methods[0].name, label: 'ours uncompressed' };
      rows.push(...summaryRows(`compress-save ${storage.label}`, o.size, names, asRuns(save), baseline), ...summaryRows(`compress-restore ${storage.label}`, o.size, names, asRuns(restore), baseline));
      notes.push(...targets(storage.label, methods, save, restore, lv?.name));
      if (!storage.throttle) notes.push(cpuCost(methods, save, o.jobs));
    }
  } finally {
    for (const m of methods) m.cleanup();
    for (const u of undo.reverse()) u();
    fs.rmSync(src, { force: true });
    fs.rmSync(dst, { force: true });
  }
  notes.push(`File sizes (apparent / allocated): ${[...sizes].map(([n, b]) => `${n} ${gb(b.size)} / ${gb(b.allocated)}`).join('; ')}.`);
  const [ourZ, raw] = [sizes.get(methods[1].name)!.size, sizes.get(methods[2].name)!.size];
  notes.push(`Size target (ours compressed <= zstd -${LEVEL} of the raw RAM + 5 %): ${gb(ourZ)} vs ${gb(raw)} = ${((100 * ourZ) / raw).toFixed(1)} % (${ourZ <= raw * 1.05 ? 'met' : 'MISSED'}).`);
  notes.push(
    `Our restore times include starting QEMU and loading the device state; \`zstd\` rows are the RAM file alone. libvirt runs one \`zstd\` process between QEMU's single stream and libvirt_iohelper (a ${kvmUsable() ? 'KVM' : 'TCG'} domain, paused, whose file-backed RAM holds the same bytes; whole virsh commands are timed).`,
    ...missing,
  );
  return { rows, notes };
}

/** Local disk: what compressing costs in wall time against its CPU time spread over the workers (at most the cores). */
function cpuCost(methods: Method[], save: Map<string, Sample[]>, jobs: number): string {
  const med = (n: string, f: (x: Sample) => number) => summarize((save.get(n) ?? []).map(f)).median;
  const [plain, zstd] = [methods[0].name, methods[1].name];
  const extraWall = med(zstd, (x) => x.wallS) - med(plain, (x) => x.wallS);
  const extraCpu = med(zstd, (x) => x.cpuS) - med(plain, (x) => x.cpuS);
  const lanes = Math.min(jobs, os.availableParallelism());
  const bound = extraCpu / lanes;
  return `local disk, compression cost on save: +${extraWall.toFixed(2)} s wall for +${extraCpu.toFixed(2)} s CPU over ${lanes} cores (${bound.toFixed(2)} s): target "no more than CPU / workers" ${extraWall <= bound + 0.05 ? 'met' : 'MISSED'}.`;
}

/** The issue's targets, per storage: compressed vs uncompressed, vs libvirt's zstd format. */
function targets(label: string, methods: Method[], save: Map<string, Sample[]>, restore: Map<string, Sample[]>, libvirtName?: string): string[] {
  const med = (m: Map<string, Sample[]>, n: string) => summarize((m.get(n) ?? []).map((x) => x.wallS)).median;
  const [plain, zstd] = [methods[0].name, methods[1].name];
  const out: string[] = [];
  for (const [dir, data] of [['save', save], ['restore', restore]] as const) {
    const parts = [`${label}, ${dir}: ours compressed ${med(data, zstd).toFixed(2)} s is ${(med(data, plain) / med(data, zstd)).toFixed(2)}x as fast as ours uncompressed (${med(data, plain).toFixed(2)} s)`];
    if (libvirtName && data.has(libvirtName)) parts.push(`${(med(data, libvirtName) / med(data, zstd)).toFixed(2)}x as fast as libvirt's zstd format (${med(data, libvirtName).toFixed(2)} s)`);
    out.push(parts.join('; ') + '.');
  }
  return out;
}
