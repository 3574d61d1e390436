/**
 * libvirt scenario: `virsh save --bypass-cache` and `virsh restore --bypass-cache --paused` of a
 * real libvirt domain (RAM in a shared file, as `<memoryBacking><source type='file'/>`), with
 * iohelper installed as libvirt's helper (`iohelper libvirt-install`) vs libvirt's own helper,
 * alternating. While the domain is paused its RAM file is filled with the synthetic pattern
 * (25 % zero pages), so QEMU streams real data; every restore is checked against its hash.
 * libvirt's memory_backing_dir is put on tmpfs for the run (on the packaged default, the root
 * disk, restores measure the disk's writeback of guest pages).
 *
 * The producer's limit is measured in the same run: `virsh save` to tmpfs without
 * --bypass-cache, where libvirt hands QEMU the file and no helper runs at all.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { DEFAULT_LIBVIRT_HELPER, helperStatus, install, planInstall, planUninstall, uninstall } from '../src/install/libvirt-helper';
import { fillPattern, sha256File } from './lib/ram-file';
import { dropCaches } from './lib/host';
import { domainRamFile, ensureLibvirtd, libvirtdUnavailable, memoryBackingOnTmpfs, virsh } from './lib/libvirtd';
import { alternatingOrder, summarize } from './lib/stats';
import { Row, RunSample, summaryRows } from './lib/table';

export interface LibvirtBenchOptions {
  size: number;
  runs: number;
  dir: string;
}

const NAME = `iohelper-bench-${process.pid}`;

export function kvmUsable(): boolean {
  try {
    fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** A domain with no disks and no kernel: it is only ever run paused, its RAM filled by us. */
export function domainXml(size: number, name = NAME): string {
  return `<domain type='${kvmUsable() ? 'kvm' : 'qemu'}'>
  <name>${name}</name>
  <memory unit='KiB'>${size / 1024}</memory>
  <memoryBacking><source type='file'/><access mode='shared'/></memoryBacking>
  <vcpu>2</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices><video><model type='none'/></video><memballoon model='none'/></devices>
</domain>`;
}

export const ramFile = (name = NAME) => domainRamFile(name);

export function timed(...args: string[]): number {
  const t0 = process.hrtime.bigint();
  const r = spawnSync('virsh', ['-c', 'qemu:///system', ...args], { encoding: 'utf8' });
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`virsh ${args.join(' ')} failed: ${r.stderr.trim()}`);
  return s;
}

interface Method {
  name: string;
  /** Where the save file goes, and virsh's cache flag. */
  dir: string;
  bypassCache: boolean;
  ours: boolean;
}

/** Puts our helper in libvirt's place (or libvirt's own back) before a method's run. */
function useHelper(ours: boolean): void {
  const installed = helperStatus(DEFAULT_LIBVIRT_HELPER).installed;
  if (ours && !installed) install(planInstall(DEFAULT_LIBVIRT_HELPER));
  if (!ours && installed) uninstall(planUninstall(DEFAULT_LIBVIRT_HELPER));
}

export async function benchLibvirt(o: LibvirtBenchOptions): Promise<{ rows: Row[]; notes: string[] }> {
  const why = libvirtdUnavailable();
  if (why) {
    const row = (scenario: string): Row => ({ scenario, method: 'libvirt', bytes: o.size, wall: summarize([]), cpuS: summarize([]), maxRssMiB: summarize([]), note: `not run: ${why}` });
    return { rows: [row('libvirt-save'), row('libvirt-restore')], notes: [] };
  }
  const daemon = await ensureLibvirtd();
  const unmountRam = memoryBackingOnTmpfs();
  // An interrupted bench must not leave our helper in libvirt's place.
  const onSignal = () => {
    spawnSync('virsh', ['-c', 'qemu:///system', 'destroy', NAME], { stdio: 'ignore' });
    useHelper(false);
    process.exit(1);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const xml = path.join(o.dir, `${NAME}.xml`);
  fs.writeFileSync(xml, domainXml(o.size));
  const shm = fs.mkdtempSync('/dev/shm/iohelper-bench-libvirt-');
  const methods: Method[] = [
    { name: 'iohelper (ours) as libvirt_iohelper', dir: o.dir, bypassCache: true, ours: true },
    { name: 'libvirt_iohelper', dir: o.dir, bypassCache: true, ours: false },
    { name: 'QEMU alone to tmpfs, no helper (the producer)', dir: shm, bypassCache: false, ours: false },
  ];
  const save = new Map<string, RunSample[]>();
  const restore = new Map<string, RunSample[]>();
  let expected: string | undefined;
  try {
    for (const order of alternatingOrder(methods, o.runs)) {
      for (const m of order) {
        useHelper(m.ours);
        const image = path.join(m.dir, `${NAME}.save`);
        const cache = m.bypassCache ? ['--bypass-cache'] : [];
        virsh('create', xml, '--paused');
        try {
          fillPattern(ramFile(), 11, 0.25);
          expected ??= await sha256File(ramFile());
          dropCaches();
          const s = timed('save', NAME, image, ...cache);
          dropCaches();
          const r = timed('restore', image, ...cache, '--paused');
          const got = await sha256File(ramFile());
          if (got !== expected) throw new Error(`${m.name}: restored RAM differs from the saved RAM`);
          save.set(m.name, [...(save.get(m.name) ?? []), { wallS: s, cpuS: NaN, memMiB: NaN }]);
          restore.set(m.name, [...(restore.get(m.name) ?? []), { wallS: r, cpuS: NaN, memMiB: NaN }]);
          console.error(`  ${m.name}: save ${s.toFixed(2)} s, restore ${r.toFixed(2)} s`);
        } finally {
          spawnSync('virsh', ['-c', 'qemu:///system', 'destroy', NAME], { stdio: 'ignore' });
          fs.rmSync(image, { force: true });
        }
      }
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    useHelper(false);
    unmountRam();
    fs.rmSync(shm, { recursive: true, force: true });
    fs.rmSync(xml, { force: true });
    daemon.stop();
  }
  const names = methods.map((m) => m.name);
  const baseline = { method: 'libvirt_iohelper', label: 'libvirt_iohelper' };
  const rows = [...summaryRows('libvirt-save', o.size, names, save, baseline), ...summaryRows('libvirt-restore', o.size, names, restore, baseline)];
  const notes = [
    `libvirt: \`virsh save/restore --bypass-cache\` of a ${kvmUsable() ? 'KVM' : 'TCG'} domain whose ${(o.size / 2 ** 30).toFixed(1)} GiB of file-backed RAM holds the synthetic pattern (25 % zero pages, scattered), libvirt's memory_backing_dir on tmpfs; ` +
      'times are whole virsh commands (libvirt, QEMU and the helper); every restore was checked byte for byte. ' +
      'When ours is close to "QEMU alone", QEMU\'s single migration stream is the limit, not the helper.',
  ];
  return { rows, notes };
}
