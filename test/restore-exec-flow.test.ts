/**
 * QEMU's own restore order, as its docs and libvirt use it: the destination QEMU starts first
 * with `-incoming defer` (it creates and maps its RAM files), then `migrate-incoming
 * "exec:iohelper restore ..."` fills those files and streams the device state. The restore must
 * fill the very files QEMU maps: checked through the guest (no deleted mapping, HMP xp,
 * pmemsave), on tmpfs and hugetlbfs, from plain and compressed images. A file QEMU maps that
 * holds data cannot be filled in place and is refused (no success on memory the guest never sees).
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { saveVm } from '../src/vm/manager';
import { waitForMigration } from '../src/qmp/client';
import { QemuInstance } from '../src/vm/qemu-launch';
import { IOHELPER, runHelper } from './support/cli';
import { deletedMappings, expectGuestSees } from './support/guest-view';
import { describeAsRoot } from './support/mounts';
import { createRamFile, describeQemu, fillPattern, machineArgs, startQemu } from './support/qemu';

const M = 1024 * 1024;
const SIZE = 128 * M;
const NR = '/proc/sys/vm/nr_hugepages';
const PAGES = 160; // source + destination (64 each) with room to spare

/** Starts a destination QEMU waiting with -incoming defer and runs migrate-incoming exec:iohelper restore. */
async function execRestore(image: string, ramPath: string, running: QemuInstance[]): Promise<QemuInstance> {
  const vm = await startQemu({ args: machineArgs([{ id: 'ram0', path: ramPath, size: SIZE }]), incoming: true });
  running.push(vm);
  await vm.qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
  const cmd = `${process.execPath} ${IOHELPER} restore --image ${image} --ram ram0=${ramPath}`;
  await vm.qmp.execute('migrate-incoming', { uri: `exec:${cmd}` });
  return vm;
}

describeAsRoot('migrate-incoming exec:iohelper restore', () => {
  describeQemu('the guest sees the restored RAM', () => {
    let dir: string;
    let huge: string;
    let oldPages: number;
    const running: QemuInstance[] = [];
    const saved: Record<string, string> = {};
    const images: Record<string, string> = {};

    beforeAll(async () => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-exec-'));
      oldPages = Number(fs.readFileSync(NR, 'utf8'));
      fs.writeFileSync(NR, String(oldPages + PAGES));
      if (Number(fs.readFileSync(NR, 'utf8')) < oldPages + PAGES) throw new Error(`could not reserve ${PAGES} huge pages`);
      huge = path.join(dir, 'huge');
      fs.mkdirSync(huge);
      execFileSync('mount', ['-t', 'hugetlbfs', '-o', 'pagesize=2M', 'none', huge]);
      // The saved RAM: a patterned tmpfs file, and a copy of it in hugetlbfs (restored there).
      saved.tmpfs = `/dev/shm/iohelper-exec-src-${process.pid}`;
      createRamFile(saved.tmpfs, SIZE);
      fillPattern(saved.tmpfs, 57, 0.25);
      const seed = path.join(dir, 'seed.img');
      const s = await runHelper(['save', '--no-stream-check', '--image', seed, '--ram', `ram0=${saved.tmpfs}`], [Buffer.alloc(10), 'ignore']);
      expect({ code: s.code, stderr: s.stderr }).toEqual({ code: 0, stderr: '' });
      saved.hugetlbfs = `${huge}/src`;
      const r = await runHelper(['restore', '--image', seed, '--ram', `ram0=${saved.hugetlbfs}`], ['ignore', 'ignore']);
      expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
      // One QEMU per save: QEMU refuses to migrate a guest that a migration paused.
      for (const kind of ['tmpfs', 'hugetlbfs']) {
        for (const form of ['plain', 'compressed']) {
          const vm = await startQemu({ ram: [{ id: 'ram0', path: saved[kind], size: SIZE }] });
          try {
            images[`${kind}-${form}`] = path.join(dir, `${kind}-${form}.img`);
            await saveVm(vm.qmp, { image: images[`${kind}-${form}`], compressLevel: form === 'compressed' ? 1 : undefined });
          } finally {
            await vm.stop();
          }
        }
      }
    }, 180000);
    afterEach(async () => {
      await Promise.all(running.splice(0).map((v) => v.stop()));
    });
    afterAll(() => {
      fs.rmSync(saved.tmpfs, { force: true });
      try {
        execFileSync('umount', [huge]);
      } catch {
        // not mounted
      }
      fs.writeFileSync(NR, String(oldPages));
      fs.rmSync(dir, { recursive: true, force: true });
    });

    for (const kind of ['tmpfs', 'hugetlbfs']) {
      for (const form of ['plain', 'compressed']) {
        test(`${kind}, ${form} image: QEMU created and maps the RAM file; the restore fills that file`, async () => {
          const ramPath = kind === 'tmpfs' ? `/dev/shm/iohelper-exec-dst-${process.pid}-${form}` : `${huge}/dst-${form}`;
          try {
            const vm = await execRestore(images[`${kind}-${form}`], ramPath, running);
            await waitForMigration(vm.qmp, { timeoutMs: 120000 });
            await expectGuestSees(vm, [{ path: saved[kind], size: SIZE }], dir);
          } finally {
            await Promise.all(running.splice(0).map((v) => v.stop()));
            fs.rmSync(ramPath, { force: true });
          }
        });
      }
    }

    test('a RAM file QEMU maps that already holds data is refused, not replaced under it', async () => {
      const ramPath = `/dev/shm/iohelper-exec-busy-${process.pid}`;
      createRamFile(ramPath, SIZE);
      fillPattern(ramPath, 3, 0.5);
      try {
        const vm = await startQemu({ args: machineArgs([{ id: 'ram0', path: ramPath, size: SIZE }]), incoming: true });
        running.push(vm);
        const r = await runHelper(['restore', '--image', images['tmpfs-plain'], '--ram', `ram0=${ramPath}`], ['ignore', 'ignore']);
        expect(r.code).toBe(1);
        expect(r.stderr.trim().split('\n').pop()).toMatch(/holds data and process \d+ has it open or mapped.*fd:K.*\(EBUSY\)$|holds data and another process has it open or mapped.*\(EBUSY\)$/);
        expect(deletedMappings(vm)).toEqual([]);
      } finally {
        fs.rmSync(ramPath, { force: true });
      }
    });
  });
});
