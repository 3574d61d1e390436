/**
 * vm save --base checks the base's chain with restore's rules before the guest is stopped (issue
 * 25 item 2): a real QEMU (no guest kernel needed), in the serial lane; the rest of the delta
 * tests need no QEMU and are in test/delta.test.ts.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { saveVm } from '../src/vm/manager';
import { describeQemu, shmPath, startQemu } from './support/qemu';

const RAM_SIZE = 16 * 1024 * 1024;
let dir: string;
beforeAll(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-delta-vm-'))));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describeQemu('vm save --base', () => {
  test('against a compressed image: refused before the guest is stopped, no image, no temporary', async () => {
    const ramFile = shmPath('delta-vm-ram');
    const vm = await startQemu({ ram: [{ id: 'ram0', path: ramFile, size: RAM_SIZE }], paused: false });
    try {
      await saveVm(vm.qmp, { image: path.join(dir, 'vm-z.img'), compressLevel: 1 });
      await vm.qmp.execute('cont');
      const e = await saveVm(vm.qmp, { image: path.join(dir, 'vm-d.img'), base: path.join(dir, 'vm-z.img') }).then(() => undefined, (x: Error & { code?: string }) => x);
      expect(e?.code).toBe('EIMG_BASE');
      expect(e?.message).toMatch(/vm-z\.img is compressed in 8388608-byte chunks, so a \d+-byte unit cannot be read alone/);
      expect((await vm.qmp.execute('query-status')).status).toBe('running');
      expect(fs.readdirSync(dir).filter((n) => n.startsWith('vm-d.img') || n.startsWith('.vm-d.img'))).toEqual([]);
    } finally {
      await vm.stop();
      fs.rmSync(ramFile, { force: true });
    }
  }, 60000);
});
