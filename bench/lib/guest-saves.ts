/**
 * Saves of a live guest's QEMU (one QEMU, many saves): ours (saveVm, as `iohelper vm save
 * --direct` runs it) and QEMU's mapped-ram, each timed end to end with the CPU of this process,
 * its reaped children and QEMU. Used by the incremental scenario and the `running` profile.
 */
import * as fs from 'fs';
import { saveVm } from '../../src/vm/manager';
import { QemuInstance } from '../../src/vm/qemu-launch';
import { RamReadMode } from '../../src/util/limits';
import { saveMappedRam } from './mapped-ram';
import { RunSample } from './table';
import { syncSeconds } from '../parallel';

export interface SaveSample extends RunSample {
  size: number;
  allocated: number;
  /** QEMU's save: to `completed`, then fdatasync of its file (ours is durable when it returns). */
  syncedWallS?: number;
  /** Our save: how it read guest RAM (`pread`, `mmap`; src/image/ram-read.ts), as its progress said. */
  ramRead?: string;
}

const secondsSince = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e9;

/** CPU seconds of a process so far (user + system), from /proc; 0 when it is gone. */
function cpuOf(pid: number | undefined, children = false): number {
  try {
    const f = fs.readFileSync(`/proc/${pid ?? 'self'}/stat`, 'utf8');
    const x = f.slice(f.lastIndexOf(')') + 2).split(' ');
    // utime, stime at 11, 12; cutime, cstime (waited-for children) at 13, 14; USER_HZ 100.
    return (Number(x[children ? 13 : 11]) + Number(x[children ? 14 : 12])) / 100;
  } catch {
    return 0;
  }
}

/**
 * CPU of everything a save or restore runs: this process (its worker threads: an in-process
 * save or restore), its children once reaped (the iohelper save helper, convert) and the QEMU.
 */
export function cpuMeter(qemu?: () => number | undefined): () => number {
  const at = () => cpuOf(undefined) + cpuOf(undefined, true) + (qemu?.() !== undefined ? cpuOf(qemu()) : 0);
  const t0 = at();
  return () => at() - t0;
}

export function fileBytes(f: string): { size: number; allocated: number } {
  const st = fs.statSync(f);
  return { size: st.size, allocated: st.blocks * 512 };
}

/**
 * Pauses the guest for a save. QEMU refuses to migrate a VM still paused by its previous
 * migration ("postmigrate"): such a guest runs for a moment (cont, stop) first.
 */
export async function pauseForSave(vm: QemuInstance): Promise<void> {
  const { status } = await vm.qmp.execute('query-status');
  if (status === 'postmigrate') await vm.qmp.execute('cont');
  if (status !== 'paused') await vm.qmp.execute('stop');
}

/**
 * Our save of the paused guest (saveVm: durable when it returns), full or a delta against
 * `base`; O_DIRECT unless `direct` is false (then written through the page cache and fdatasync'd);
 * RAM read as `ramRead` says (default auto).
 */
export async function oursSave(vm: QemuInstance, image: string, o: { base?: string; direct?: boolean; ramRead?: RamReadMode } = {}): Promise<SaveSample> {
  fs.rmSync(image, { force: true });
  const paths = new Set<string>();
  const cpu = cpuMeter(() => vm.proc.pid);
  const t0 = process.hrtime.bigint();
  await saveVm(vm.qmp, { image, direct: o.direct ?? true, base: o.base, ramRead: o.ramRead, onProgress: (p) => p.ramRead && paths.add(p.ramRead) });
  const wallS = secondsSince(t0);
  return { wallS, cpuS: cpu(), memMiB: NaN, ...fileBytes(image), ...(paths.size ? { ramRead: [...paths].join(', ') } : {}) };
}

/** QEMU's mapped-ram save of the paused guest; the capabilities are put back for our next save. */
export async function mappedRamSave(vm: QemuInstance, file: string, channels: number, directIo: boolean): Promise<SaveSample> {
  fs.rmSync(file, { force: true });
  // x-ignore-shared (our saves turn it on) would leave the shared RAM out of QEMU's file.
  await vm.qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: false }] });
  const cpu = cpuMeter(() => vm.proc.pid);
  const t0 = process.hrtime.bigint();
  try {
    await saveMappedRam(vm.qmp, file, directIo, channels);
  } finally {
    await vm.qmp.execute('migrate-set-capabilities', {
      capabilities: [
        { capability: 'mapped-ram', state: false },
        { capability: 'multifd', state: false },
      ],
    });
  }
  const wallS = secondsSince(t0);
  const cpuS = cpu();
  return { wallS, cpuS, memMiB: NaN, ...fileBytes(file), syncedWallS: wallS + syncSeconds(file) };
}
