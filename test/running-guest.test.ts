/**
 * A guest that actually runs: a tiny Linux (Debian's kernel + a busybox initramfs built by
 * scripts/build-test-guest.sh) counts on its serial port, keeping the counter in RAM. It is
 * saved through the parallel image while running, restored into a fresh QEMU, and must go on
 * counting from where it was, not start again.
 *
 * TCG on purpose: in this sandbox a Linux kernel under nested KVM hangs in early boot (it
 * prints "Probing EDD" and nothing more), while TCG boots it in seconds.
 */
import { expectGuestSees } from './support/guest-view';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { restoreVm, saveVm } from '../src/vm/manager';
import { QemuInstance } from '../src/vm/qemu-launch';
import { shmPath, startQemu } from './support/qemu';
import { describeGuest, guestArgs, ticks, waitForTicks } from './support/guest';

describeGuest('a running Linux guest survives save and restore', () => {
  let dir: string;
  const vms: QemuInstance[] = [];
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-guest-'));
  });
  afterAll(async () => {
    await Promise.all(vms.map((v) => v.stop()));
    fs.rmSync(dir, { recursive: true, force: true });
    for (const n of ['guest-a', 'guest-b']) fs.rmSync(shmPath(n), { force: true });
  });

  test('its counter continues after the restore', async () => {
    const serialA = path.join(dir, 'a.txt');
    const serialB = path.join(dir, 'b.txt');
    const image = path.join(dir, 'guest.img');
    const src = await startQemu({ args: guestArgs(shmPath('guest-a'), serialA), paused: false });
    vms.push(src);
    await waitForTicks(serialA, 5);
    await saveVm(src.qmp, { image, direct: true });
    const before = ticks(serialA);
    const last = before[before.length - 1];
    await src.stop();

    const dst = await restoreVm({ image, qemuArgs: guestArgs(shmPath('guest-b'), serialB) });
    vms.push(dst);
    // What the guest will run on is what guest A left in its RAM file.
    await expectGuestSees(dst, [{ path: shmPath('guest-a'), size: 256 * 1024 * 1024 }], dir);
    await dst.qmp.execute('cont');
    const after = await waitForTicks(serialB, 3, 30000);
    expect(after[0]).toBeGreaterThanOrEqual(last);
    expect(after[0]).toBeLessThanOrEqual(last + 2);
    expect(after[1]).toBe(after[0] + 1);
  }, 180000);
});

describeGuest('a running Linux guest saved as a chain of deltas', () => {
  let dir: string;
  const vms: QemuInstance[] = [];
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-guest-delta-'));
  });
  afterAll(async () => {
    await Promise.all(vms.map((v) => v.stop()));
    fs.rmSync(dir, { recursive: true, force: true });
    for (const n of ['guest-delta-a', 'guest-delta-b']) fs.rmSync(shmPath(n), { force: true });
  });

  test('full, then two deltas while it runs: the depth-2 chain restores the guest as last saved, and it counts on', async () => {
    const serialA = path.join(dir, 'a.txt');
    const serialB = path.join(dir, 'b.txt');
    const src = await startQemu({ args: guestArgs(shmPath('guest-delta-a'), serialA), paused: false });
    vms.push(src);
    await waitForTicks(serialA, 3);
    await saveVm(src.qmp, { image: path.join(dir, 'full.img'), direct: true });
    for (const [image, base] of [['d1.img', 'full.img'], ['d2.img', 'd1.img']]) {
      await src.qmp.execute('cont');
      await waitForTicks(serialA, ticks(serialA).length + 2);
      await saveVm(src.qmp, { image: path.join(dir, image), base: path.join(dir, base), direct: true });
    }
    const last = ticks(serialA)[ticks(serialA).length - 1];
    // Only what the guest changed: far less than the full image's data.
    const dataOf = (f: string) => fs.statSync(path.join(dir, f)).blocks * 512;
    expect(dataOf('d2.img')).toBeLessThan(dataOf('full.img') / 4);
    // The source stays paused after its save: its RAM file is what d2.img holds.
    const dst = await restoreVm({ image: path.join(dir, 'd2.img'), qemuArgs: guestArgs(shmPath('guest-delta-b'), serialB) });
    vms.push(dst);
    await expectGuestSees(dst, [{ path: shmPath('guest-delta-a'), size: 256 * 1024 * 1024 }], dir);
    await src.stop();
    await dst.qmp.execute('cont');
    const after = await waitForTicks(serialB, 3, 30000);
    expect(after[0]).toBeGreaterThanOrEqual(last);
    expect(after[0]).toBeLessThanOrEqual(last + 2);
    expect(after[1]).toBe(after[0] + 1);
  }, 240000);
});
