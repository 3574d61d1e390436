/**
 * Guest RAM for the benchmarks, by memory profile:
 * - real: what a real Linux guest leaves after a memory workload (the test guest booted with
 *   `iohelper.workload`: page cache of random and text files, a file of zeros, freed data,
 *   held anonymous memory; see scripts/build-test-guest.sh), captured once per size under
 *   .cache/bench/ and reused;
 * - dense: no zero page;
 * - clustered: 25 % zero pages in runs of 2 MiB on average (1 page to 4 MiB);
 * - scattered: 25 % zero pages drawn one by one (the adversarial case for page-granular
 *   skippers: every zero page splits a write).
 * The `hugetlbfs` flag of a run puts the same bytes on hugetlbfs instead of tmpfs.
 */
import * as fs from 'fs';
import * as path from 'path';
import { packageRoot } from '../../src/package-root';
import { createRamFile, fillPattern } from './ram-file';
import { QemuInstance, startQemu } from '../../src/vm/qemu-launch';
import { copyExtents } from './fill-ram';
import { GUEST_DIR, testGuestArgs } from './test-guest';

/** `running` is not a RAM file: the test guest runs its workload in the QEMU the saves are taken from (bench/running.ts). */
export const PROFILES = ['real', 'running', 'dense', 'clustered', 'scattered'] as const;
export type Profile = (typeof PROFILES)[number];

export interface ProfileStats {
  profile: Profile;
  size: number;
  /** Bytes the RAM file has allocated (touched by the guest). */
  touchedBytes: number;
  /** Allocated pages that hold only zeros, in bytes. */
  zeroTouchedBytes: number;
}

export function describeStats(s: ProfileStats): string {
  const pct = (x: number) => `${((100 * x) / s.size).toFixed(1)} %`;
  return `${s.profile}: ${pct(s.touchedBytes)} of RAM touched, ${pct(s.zeroTouchedBytes)} touched but zero, ${pct(s.size - s.touchedBytes + s.zeroTouchedBytes)} zero in all`;
}

/**
 * Writes `profile`'s RAM of `size` bytes into `file` (created or replaced) and measures it.
 * With `mapped` (a hugetlbfs file, which has no write()) the bytes are made on /dev/shm first
 * and read into a mapping of `file`.
 */
export async function prepareProfile(profile: Profile, file: string, size: number, mapped = false): Promise<ProfileStats> {
  let source: string;
  let temporary: string | undefined;
  if (profile === 'running') throw new Error('the running profile is a live guest, not a RAM file (bench/running.ts)');
  if (profile === 'real') source = await realGuestRam(size);
  else {
    source = temporary = `/dev/shm/iohelper-bench-profile-${process.pid}`;
    createRamFile(source, size);
    const options = profile === 'dense' ? { zeroFraction: 0 } : profile === 'clustered' ? { zeroFraction: 0.25, zeroRunPages: 512 } : { zeroFraction: 0.25 };
    fillPattern(source, 7, options);
  }
  try {
    const { bytes, zeroPages } = copyExtents(source, file, { mapped });
    return { profile, size, touchedBytes: bytes, zeroTouchedBytes: zeroPages * 4096 };
  } finally {
    if (temporary) fs.rmSync(temporary, { force: true });
  }
}

const WORKLOAD_TIMEOUT_MS = 15 * 60 * 1000;
/**
 * The version of the test guest's memory workload (`iohelper.workload` in
 * scripts/build-test-guest.sh), which names the cached profiles: a change elsewhere in the
 * guest's init (the ttw branch of init version 3 and later) leaves what the workload leaves in RAM as
 * it was, so the profiles built with init version 2 stay valid. Raise it when the workload changes.
 */
const WORKLOAD_VERSION = 2;

/**
 * The cached RAM of the test guest after its memory workload, `size` bytes: booted once (TCG on
 * both cores: under nested KVM here the kernel does not boot), paused when the workload says it
 * is done, its RAM file copied to disk with its holes and written zeros kept as they are.
 */
async function realGuestRam(size: number): Promise<string> {
  const cacheDir = path.join(packageRoot(), '.cache', 'bench');
  const cached = path.join(cacheDir, `real-${size / 2 ** 20}M-v${WORKLOAD_VERSION}.ram`);
  if (fs.existsSync(cached)) return cached;
  fs.mkdirSync(cacheDir, { recursive: true });
  const ram = `/dev/shm/iohelper-real-guest-${process.pid}`;
  const serial = path.join(cacheDir, `real-guest-${process.pid}.serial`);
  fs.rmSync(ram, { force: true });
  console.error(`bench: building the real profile (${size / 2 ** 20} MiB): booting the test guest with its memory workload (TCG, a minute or two)`);
  let vm: QemuInstance | undefined;
  try {
    vm = await bootWorkloadGuest(size, ram, serial);
    await vm.qmp.execute('stop');
    const partial = `${cached}.partial`;
    copyExtents(ram, partial, { threads: 1 });
    fs.renameSync(partial, cached);
  } finally {
    await vm?.stop();
    fs.rmSync(ram, { force: true });
    fs.rmSync(serial, { force: true });
  }
  return cached;
}

/**
 * Boots the test guest (running, TCG) with its memory workload, RAM `size` bytes in the shared
 * file `ram`, serial port to the file `serial`, and returns once the workload says it is done.
 */
export async function bootWorkloadGuest(size: number, ram: string, serial: string): Promise<QemuInstance> {
  for (const f of ['vmlinuz', 'initrd.gz']) {
    if (!fs.existsSync(path.join(GUEST_DIR(), f))) throw new Error(`the real and running profiles need the test guest (${path.join(GUEST_DIR(), f)} is missing): run scripts/build-test-guest.sh`);
  }
  const vm = await startQemu({
    paused: false,
    args: testGuestArgs(size, ram, 'iohelper.workload', ['-serial', `file:${serial}`]),
  });
  try {
    const deadline = Date.now() + WORKLOAD_TIMEOUT_MS;
    while (!(fs.existsSync(serial) && fs.readFileSync(serial, 'utf8').includes('iohelper-workload-done'))) {
      if (Date.now() > deadline) throw new Error(`the test guest's workload did not finish in ${WORKLOAD_TIMEOUT_MS / 1000} s; serial: ${fs.existsSync(serial) ? fs.readFileSync(serial, 'utf8').slice(-400) : '(none)'}`);
      if (vm.proc.exitCode !== null) throw new Error(`QEMU exited during the workload: ${vm.stderr().trim()}`);
      await new Promise((r) => setTimeout(r, 500));
    }
    return vm;
  } catch (e) {
    await vm.stop();
    throw e;
  }
}
