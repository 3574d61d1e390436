/**
 * Guest RAM on hugetlbfs (2 MiB pages), as large-VM hosts run it: a real QEMU 10 guest is saved
 * through the parallel image, restored into a new hugetlbfs file, cloned and lazily restored
 * (both map the image itself), and its RAM compared byte for byte. Needs root (huge pages are
 * reserved for the test and the old count put back).
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { cloneVm, restoreVm, saveVm } from '../src/vm/manager';
import { QemuInstance } from '../src/vm/qemu-launch';
import { runHelper } from './support/cli';
import { describeAsRoot } from './support/mounts';
import { expectGuestSees } from './support/guest-view';
import { createRamFile, describeQemu, filesEqual, fillPattern, machineArgs, startQemu } from './support/qemu';

const M = 1024 * 1024;
const SIZE = 128 * M;
const PAGES = 256; // template, restored copy, and a restore's temporary file, with room to spare
const NR = '/proc/sys/vm/nr_hugepages';

describeAsRoot('hugetlbfs guest RAM', () => {
  describeQemu('save, restore, clone and lazy restore with 2 MiB pages', () => {
    let dir: string;
    let huge: string;
    let oldPages: number;
    let src: string;
    let image: string;
    let seed: string;
    const running: QemuInstance[] = [];

    beforeAll(async () => {
      oldPages = Number(fs.readFileSync(NR, 'utf8'));
      fs.writeFileSync(NR, String(oldPages + PAGES));
      const got = Number(fs.readFileSync(NR, 'utf8'));
      if (got < oldPages + PAGES) throw new Error(`could reserve only ${got - oldPages} of ${PAGES} huge pages`);
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-huge-'));
      huge = path.join(dir, 'huge');
      fs.mkdirSync(huge);
      execFileSync('mount', ['-t', 'hugetlbfs', '-o', 'pagesize=2M', 'none', huge]);
      // hugetlbfs files cannot be written with write(2): the guest RAM is made by restoring an
      // image of a patterned tmpfs file into it (which also tests restore into hugetlbfs).
      src = `/dev/shm/iohelper-huge-${process.pid}`;
      createRamFile(src, SIZE);
      fillPattern(src, 41, 0.25);
      seed = path.join(dir, 'seed.img');
      const s = await runHelper(['save', '--no-stream-check', '--image', seed, '--ram', `ram0=${src}`], [Buffer.alloc(10), 'ignore']);
      expect({ code: s.code, stderr: s.stderr }).toEqual({ code: 0, stderr: '' });
      const r = await runHelper(['restore', '--image', seed, '--ram', `ram0=${huge}/template`], ['ignore', 'ignore']);
      expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
      expect(await filesEqual(src, `${huge}/template`)).toEqual({ equal: true });

      const vm = await startQemu({ ram: [{ id: 'ram0', path: `${huge}/template`, size: SIZE }] });
      try {
        image = path.join(dir, 'vm.img');
        await saveVm(vm.qmp, { image, direct: true });
      } finally {
        await vm.stop();
      }
    }, 120000);

    afterEach(async () => {
      await Promise.all(running.splice(0).map((v) => v.stop()));
    });

    afterAll(() => {
      if (huge) execFileSync('umount', ['-l', huge]);
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
      if (src) fs.rmSync(src, { force: true });
      if (oldPages !== undefined) fs.writeFileSync(NR, String(oldPages));
    });

    test('the image records 2 MiB pages and 2 MiB-aligned blocks', async () => {
      const r = await runHelper(['inspect', image, '--json'], ['ignore', 'pipe']);
      const info = JSON.parse(r.stdout.toString());
      expect(info.pageSize).toBe(2 * M);
      expect(info.blocks[0].offset % (2 * M)).toBe(0);
    });

    test('eager restore into a new hugetlbfs file: RAM identical, guest loaded', async () => {
      const vm = await restoreVm({ image, direct: true, qemuArgs: machineArgs([{ id: 'ram0', path: `${huge}/restored`, size: SIZE }]) });
      running.push(vm);
      expect((await vm.qmp.execute('query-migrate')).status).toBe('completed');
      expect(await filesEqual(src, `${huge}/restored`)).toEqual({ equal: true });
      await expectGuestSees(vm, [{ path: src, size: SIZE }], dir);
      expect(fs.readdirSync(huge).filter((f) => f.includes('.iohelper-'))).toEqual([]);
    });

    test('compressed: vm save --compress of the hugetlbfs guest, eager restore into hugetlbfs, RAM identical; convert keeps the 2 MiB page size', async () => {
      const zimage = path.join(dir, 'vm.zimg');
      const vm0 = await startQemu({ ram: [{ id: 'ram0', path: `${huge}/template`, size: SIZE }] });
      try {
        await saveVm(vm0.qmp, { image: zimage, direct: true, compressLevel: 1 });
      } finally {
        await vm0.stop();
      }
      const vm = await restoreVm({ image: zimage, direct: true, qemuArgs: machineArgs([{ id: 'ram0', path: `${huge}/zrestored`, size: SIZE }]) });
      running.push(vm);
      expect((await vm.qmp.execute('query-migrate')).status).toBe('completed');
      expect(await filesEqual(src, `${huge}/zrestored`)).toEqual({ equal: true });
      await expectGuestSees(vm, [{ path: src, size: SIZE }], dir);
      const mappable = path.join(dir, 'vm-from-z.img');
      const c = await runHelper(['convert', zimage, mappable], ['ignore', 'ignore']);
      expect(c.code).toBe(0);
      const info = JSON.parse((await runHelper(['inspect', mappable, '--json'], ['ignore', 'pipe'])).stdout.toString());
      expect(info.pageSize).toBe(2 * M);
      expect(info.blocks[0].offset % (2 * M)).toBe(0);
      fs.rmSync(`${huge}/zrestored`, { force: true });
    });

    test('clone and lazy restore map the image: loaded, guest memory equal to the template', async () => {
      const args = machineArgs([{ id: 'ram0', path: `${huge}/unused`, size: SIZE }]);
      const [clone] = await cloneVm({ image, qemuArgs: args, count: 1 });
      running.push(clone);
      const lazy = await restoreVm({ image, lazy: true, qemuArgs: args });
      running.push(lazy);
      const tail = path.join(dir, 'tail');
      const fd = fs.openSync(src, 'r');
      const buf = Buffer.alloc(SIZE - M);
      fs.readSync(fd, buf, 0, buf.length, M);
      fs.closeSync(fd);
      fs.writeFileSync(tail, buf);
      for (const [name, vm] of [['clone', clone], ['lazy', lazy]] as const) {
        expect((await vm.qmp.execute('query-migrate')).status).toBe('completed');
        const out = path.join(dir, `${name}.mem`);
        await vm.qmp.execute('pmemsave', { val: M, size: SIZE - M, filename: out });
        expect(await filesEqual(out, tail)).toEqual({ equal: true });
      }
      expect(fs.existsSync(`${huge}/unused`)).toBe(false);
    });

    test('a mount with size= larger than the unreserved pool: ENOSPC before any write, not a raw ENOMEM from mmap', async () => {
      // A mapping reserves huge pages without touching them (QEMU's RAM, paused): a mount's own
      // size= then says more is free than the pool can give.
      const pool = '/sys/kernel/mm/hugepages/hugepages-2048kB';
      const unreserved = () => Number(fs.readFileSync(`${pool}/free_hugepages`, 'utf8')) - Number(fs.readFileSync(`${pool}/resv_hugepages`, 'utf8'));
      const hold = unreserved() - 8; // leave 16 MiB: less than the seed's data
      expect(hold).toBeGreaterThan(0);
      const vm = await startQemu({ ram: [{ id: 'ram0', path: `${huge}/held`, size: hold * 2 * M }] });
      running.push(vm);
      expect(unreserved()).toBeLessThanOrEqual(8);
      const sized = path.join(dir, 'sized');
      fs.mkdirSync(sized);
      execFileSync('mount', ['-t', 'hugetlbfs', '-o', 'pagesize=2M,size=1G', 'none', sized]);
      try {
        const r = await runHelper(['restore', '--image', seed, '--ram', `ram0=${sized}/ram`], ['ignore', 'ignore']);
        expect(r.code).toBe(1);
        expect(r.stderr.toString()).toMatch(/no space left for the RAM of .*sized\/ram: .* the filesystem has \d+ free \(ENOSPC\)\n?$/);
        expect(fs.readdirSync(sized)).toEqual([]);
      } finally {
        execFileSync('umount', ['-l', sized]);
      }
    });
  });
});
