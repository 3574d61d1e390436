/**
 * The manager with real QEMU 10: saveVm discovers the shared RAM files over QMP and saves;
 * restoreVm brings the guest back (eager: RAM files filled; lazy: mapped from the image);
 * cloneVm starts three clones from one image without copying RAM. Clones read back the
 * template's RAM, a clone's writes stay private, and the image never changes.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { cloneVm, restoreVm, saveVm } from '../src/vm/manager';
import { saveThroughHelper } from '../src/vm/stream-migration';
import { QemuInstance } from '../src/vm/qemu-launch';
import { Progress } from '../src/progress';
import { expectGuestSees, hmpWords } from './support/guest-view';
import { inspect } from '../src/image/inspect';
import { createRamFile, describeQemu, filesEqual, fillPattern, machineArgs, sha256File, shmPath, startQemu } from './support/qemu';

const M = 1024 * 1024;
const SIZE = 256 * M;

/** Sockets among the fds of process `pid` (0 once it is gone). */
function socketsOf(pid: number): number {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).filter((f) => {
      try {
        return fs.readlinkSync(`/proc/${pid}/fd/${f}`).startsWith('socket:');
      } catch {
        return false;
      }
    }).length;
  } catch {
    return 0;
  }
}

describeQemu('VM manager: save, restore, clone', () => {
  let dir: string;
  const template = shmPath('mgr-template');
  let image: string;
  let imageHash: string;
  const running: QemuInstance[] = [];
  const progress: Progress[] = [];

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-mgr-'));
    image = path.join(dir, 'vm.img');
    createRamFile(template, SIZE);
    fillPattern(template, 31, 0.25);
    const vm = await startQemu({ ram: [{ id: 'ram0', path: template, size: SIZE }] });
    try {
      const { blocks } = await saveVm(vm.qmp, { image, direct: true, onProgress: (p) => progress.push(p) });
      expect(blocks).toEqual([{ name: 'ram0', path: template, size: SIZE }]);
    } finally {
      await vm.stop();
    }
    imageHash = await sha256File(image);
  });
  afterEach(async () => {
    await Promise.all(running.splice(0).map((v) => v.stop()));
  });
  afterAll(() => {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(template, { force: true });
    fs.rmSync(shmPath('mgr-restored'), { force: true });
  });

  /** Guest-physical [1 MiB, end): RAM at the same offsets of the file on q35 with < 2 GiB. */
  async function guestMemory(vm: QemuInstance, name: string): Promise<string> {
    const out = path.join(dir, `${name}.mem`);
    await vm.qmp.execute('pmemsave', { val: M, size: SIZE - M, filename: out });
    return out;
  }

  function templateTail(): string {
    const out = path.join(dir, 'template-tail.mem');
    if (!fs.existsSync(out)) {
      const fd = fs.openSync(template, 'r');
      const buf = Buffer.alloc(SIZE - M);
      fs.readSync(fd, buf, 0, buf.length, M);
      fs.closeSync(fd);
      fs.writeFileSync(out, buf);
    }
    return out;
  }

  test('saveVm reports the helper\'s progress, ending with every byte done', () => {
    const last = progress[progress.length - 1];
    expect(last).toMatchObject({ done: true, total: SIZE });
    expect(last.bytes).toBeGreaterThanOrEqual(SIZE);
  });

  test('eager restore: RAM files filled, guest loaded', async () => {
    const ram = shmPath('mgr-restored');
    const vm = await restoreVm({ image, qemuArgs: machineArgs([{ id: 'ram0', path: ram, size: SIZE }]) });
    running.push(vm);
    expect((await vm.qmp.execute('query-migrate')).status).toBe('completed');
    expect(await filesEqual(template, ram)).toEqual({ equal: true });
    await expectGuestSees(vm, [{ path: template, size: SIZE }], dir);
  });

  test("eager restore honours QEMU's ',,' escape: mem-path=c,,d fills 'c,d', never 'c'", async () => {
    const base = shmPath('mgr-comma');
    const args = machineArgs([{ id: 'ram0', path: `${base},,d`, size: SIZE }]);
    const vm = await restoreVm({ image, qemuArgs: args });
    running.push(vm);
    expect((await vm.qmp.execute('query-migrate')).status).toBe('completed');
    expect(fs.existsSync(base)).toBe(false);
    expect(await filesEqual(template, `${base},d`)).toEqual({ equal: true });
    await expectGuestSees(vm, [{ path: template, size: SIZE }], dir);
    fs.rmSync(`${base},d`, { force: true });
  });

  test("a restore QEMU cannot load fails with QEMU's error, and leaves no QEMU or helper behind", async () => {
    const ram = shmPath('mgr-wrong-machine');
    // Saved from q35; an i440fx machine has other devices, so QEMU refuses the device state.
    const args = machineArgs([{ id: 'ram0', path: ram, size: SIZE }]).map((a) => a.replace(/^q35,/, 'pc,'));
    const err = await restoreVm({ image, qemuArgs: args }).then(() => undefined, (e: Error) => e);
    expect(err?.message).toBeDefined();
    expect(err!.message).not.toMatch(/EBADF/);
    expect(err!.message).toMatch(/QEMU said: .*(section|load|migrat)/i);
    // pgrep (not through a shell, whose own command line would match) exits 1 when nothing runs.
    const left = spawnSync('pgrep', ['-f', '--', ram], { encoding: 'utf8' });
    expect({ status: left.status, pids: left.stdout.trim() }).toEqual({ status: 1, pids: '' });
    fs.rmSync(ram, { force: true });
  });

  test("a lazy restore or clone QEMU cannot load fails with QEMU's exit status and its own reason", async () => {
    // Saved from q35; an i440fx machine has other devices, so QEMU refuses the device state and exits.
    const args = machineArgs([{ id: 'ram0', path: '/nonexistent/replaced-by-clone', size: SIZE }]).map((a) => a.replace(/^q35,/, 'pc,'));
    for (const start of [() => restoreVm({ image, lazy: true, qemuArgs: args }).then((v) => [v]), () => cloneVm({ image, qemuArgs: args, count: 2 })]) {
      const err = await start().then((vms) => void running.push(...vms), (e: Error) => e);
      expect(err).toMatchObject({ code: 'EQEMU_EXITED', message: expect.stringMatching(/^QEMU \(pid \d+\) exited with status 1; QEMU said: .*(section|load|migrat)/i) });
    }
  });

  test('a QEMU killed (-9) during an eager restore stops the fill at once and is reported with its signal; the RAM file it created is removed', async () => {
    const big = shmPath('mgr-kill-src');
    const G = 1024 * M;
    createRamFile(big, G);
    fillPattern(big, 44, 0.1);
    const bigImage = path.join(dir, 'kill.img');
    const src = await startQemu({ ram: [{ id: 'ram0', path: big, size: G }] });
    try {
      await saveVm(src.qmp, { image: bigImage });
    } finally {
      await src.stop();
      fs.rmSync(big, { force: true });
    }
    const ram = shmPath('mgr-kill-dst');
    const progress: Progress[] = [];
    const restoring = restoreVm({ image: bigImage, jobs: 1, qemuArgs: machineArgs([{ id: 'ram0', path: ram, size: G }]), onProgress: (p) => progress.push(p) }).then(
      (vm) => void running.push(vm),
      (e: Error) => e,
    );
    // QEMU starts beside the fill (the RAM file is fresh); it is killed once our QMP client is
    // connecting to it (its third socket: the QMP listener, its connection, and one of its own).
    const pid = await (async () => {
      for (const deadline = Date.now() + 60000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 5))) {
        const found = spawnSync('pgrep', ['-f', '--', ram], { encoding: 'utf8' }).stdout.trim().split('\n').filter(Boolean).map(Number);
        for (const p of found) if (socketsOf(p) >= 3) return p;
      }
      throw new Error('no QEMU of the restore connected within 60 s');
    })();
    process.kill(pid, 'SIGKILL');
    const err = await restoring;
    // Killed while starting or after: the same error, with the signal.
    expect(err).toMatchObject({ code: 'EQEMU_EXITED', signal: 'SIGKILL', message: expect.stringMatching(new RegExp(`QEMU \\(pid ${pid}\\) exited with signal SIGKILL`)) });
    // The fill stopped when QEMU died: its last report is short of the RAM's size.
    expect(progress[progress.length - 1]).toMatchObject({ done: true });
    expect(progress[progress.length - 1].bytes).toBeLessThan(G);
    expect(fs.existsSync(ram)).toBe(false);
    fs.rmSync(bigImage, { force: true });
  });

  test('a failed restore removes the RAM files it created, also when QEMU started after the helper plan', async () => {
    // Two blocks: one RAM file empty (QEMU starts after the helper's plan), one absent.
    const src = [shmPath('mgr-two-0'), shmPath('mgr-two-1')];
    src.forEach((p, i) => (createRamFile(p, 32 * M), fillPattern(p, 70 + i, 0.25)));
    const two = path.join(dir, 'two.img');
    const vm0 = await startQemu({ ram: src.map((p, i) => ({ id: `ram${i}`, path: p, size: 32 * M })) });
    try {
      await saveVm(vm0.qmp, { image: two });
    } finally {
      await vm0.stop();
    }
    const dst = [shmPath('mgr-two-empty'), shmPath('mgr-two-absent')];
    fs.writeFileSync(dst[0], '');
    // Saved from q35; an i440fx machine has other devices, so QEMU refuses the device state
    // after the RAM files were filled.
    const args = machineArgs(dst.map((p, i) => ({ id: `ram${i}`, path: p, size: 32 * M }))).map((a) => a.replace(/^q35/, 'pc'));
    try {
      await expect(restoreVm({ image: two, qemuArgs: args })).rejects.toThrow(/QEMU said/);
      expect(fs.existsSync(dst[1])).toBe(false);
    } finally {
      for (const p of [...src, ...dst]) fs.rmSync(p, { force: true });
    }
  });

  test('vm save (parallel and --stream) onto the guest\'s own RAM file is refused; the RAM is kept', async () => {
    const ram = shmPath('mgr-self');
    createRamFile(ram, 64 * M);
    fillPattern(ram, 9, 0.25);
    const before = await sha256File(ram);
    const vm = await startQemu({ ram: [{ id: 'ram0', path: ram, size: 64 * M }] });
    running.push(vm);
    const link = shmPath('mgr-self-other-name');
    fs.linkSync(ram, link);
    await expect(saveVm(vm.qmp, { image: link })).rejects.toThrow(/is the guest's RAM file/);
    await expect(saveThroughHelper({ qmp: vm.qmp, image: ram, direct: false })).rejects.toThrow(/is the guest's RAM file/);
    expect(await sha256File(ram)).toBe(before);
    fs.rmSync(link);
    fs.rmSync(ram);
  });

  test('a vm save that QEMU refuses leaves the old image byte for byte, and no helper behind', async () => {
    const ram = shmPath('mgr-refused');
    createRamFile(ram, 64 * M);
    fillPattern(ram, 12, 0.25);
    const keep = path.join(dir, 'keep.img');
    fs.copyFileSync(image, keep);
    // An NVMe controller is a non-migratable device: QEMU refuses 'migrate' outright.
    const blocker = ['-drive', 'if=none,id=nv0,file=null-co://,format=raw', '-device', 'nvme,drive=nv0,serial=blocker'];
    const vm = await startQemu({ ram: [{ id: 'ram0', path: ram, size: 64 * M }], extraArgs: blocker });
    running.push(vm);
    // Processes naming the image: none, since the save runs in this process (pgrep, not through
    // a shell, whose own command line would match).
    const helpers = () => spawnSync('pgrep', ['-f', '--', keep], { encoding: 'utf8' }).stdout.trim();
    try {
      await expect(saveVm(vm.qmp, { image: keep })).rejects.toThrow(/non-migratable device/);
      expect(helpers()).toBe('');
      // save() has settled when saveVm rejects: nothing is left that could go on writing.
      expect(await sha256File(keep)).toBe(imageHash);
      expect(fs.readdirSync(dir).filter((f) => f.startsWith('.keep.img.iohelper-'))).toEqual([]);
    } finally {
      for (const pid of helpers().split('\n').filter(Boolean)) process.kill(Number(pid), 'SIGKILL');
      fs.rmSync(ram, { force: true });
    }
  });

  test('a save of a guest whose RAM is not a shared file names the -object options needed', async () => {
    const vm = await startQemu({ ram: [{ id: 'ram0', path: shmPath('mgr-private'), size: 64 * M }], share: false });
    running.push(vm);
    await expect(saveVm(vm.qmp, { image: path.join(dir, 'no.img') })).rejects.toThrow(/not so: ram0 \(memory-backend-file, share=off\).*memory-backend-file,id=ID,size=SIZE,mem-path=\/dev\/shm\/NAME,share=on/);
    fs.rmSync(shmPath('mgr-private'), { force: true });
  });

  test('three clones from one image: loaded, equal to the template, writes private, image unchanged', async () => {
    const args = machineArgs([{ id: 'ram0', path: '/nonexistent/replaced-by-clone', size: SIZE }]);
    const clones = await cloneVm({ image, qemuArgs: args, count: 3 });
    running.push(...clones);
    const tail = templateTail();
    for (const [i, c] of clones.entries()) {
      expect((await c.qmp.execute('query-migrate')).status).toBe('completed');
      expect(await filesEqual(await guestMemory(c, `clone${i}`), tail)).toEqual({ equal: true });
    }
    // Let clone 0 run its firmware until it has written guest RAM (ACPI tables near the top,
    // stack, …): polled, with a deadline.
    await clones[0].qmp.execute('cont');
    for (const deadline = Date.now() + 60000; (await filesEqual(await guestMemory(clones[0], 'clone0-after'), tail)).equal; ) {
      if (Date.now() > deadline) throw new Error('clone 0 ran for 60 s without writing its RAM');
      await new Promise((r) => setTimeout(r, 100));
    }
    await clones[0].qmp.execute('stop');
    expect((await filesEqual(await guestMemory(clones[0], 'clone0-after'), tail)).equal).toBe(false);
    expect(await filesEqual(await guestMemory(clones[1], 'clone1-after'), tail)).toEqual({ equal: true });
    expect(await sha256File(image)).toBe(imageHash);
  });

  test('a clone or lazy restore of an image whose device state has a flipped bit is refused before any QEMU starts', async () => {
    const bad = path.join(dir, 'bad-state.img');
    fs.copyFileSync(image, bad);
    const fd = fs.openSync(bad, 'r+');
    const at = fs.fstatSync(fd).size - 100; // inside the device state, the file's last bytes
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, at);
    b[0] ^= 0x01;
    fs.writeSync(fd, b, 0, 1, at);
    fs.closeSync(fd);
    const args = machineArgs([{ id: 'ram0', path: '/nonexistent/replaced-by-clone', size: SIZE }]);
    for (const start of [() => cloneVm({ image: bad, qemuArgs: args, count: 2 }), () => restoreVm({ image: bad, lazy: true, qemuArgs: args })]) {
      const err = await start().then(
        (vms) => void running.push(...[vms].flat()),
        (e: Error & { code?: string }) => e,
      );
      expect(err).toMatchObject({ code: 'EIMG_CHECKSUM', message: expect.stringMatching(/bad-state\.img: corrupted: the device state .* has CRC-32C/) });
    }
    const left = spawnSync('pgrep', ['-f', '--', bad], { encoding: 'utf8' });
    expect({ status: left.status, pids: left.stdout.trim() }).toEqual({ status: 1, pids: '' });
  });

  test('a lazy restore or clone of an image with a flipped RAM byte is refused before the guest can read it; --no-verify trusts the image', async () => {
    const bad = path.join(dir, 'bad-ram.img');
    fs.copyFileSync(image, bad);
    const { blocks } = inspect(bad);
    const at = 64 * M + 4096 * 3 + 5; // guest-physical address = offset in ram0 (q35, < 2 GiB)
    const fd = fs.openSync(bad, 'r+');
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, blocks![0].offset + at);
    b[0] ^= 0x10;
    fs.writeSync(fd, b, 0, 1, blocks![0].offset + at);
    fs.closeSync(fd);
    const args = machineArgs([{ id: 'ram0', path: '/nonexistent/replaced-by-clone', size: SIZE }]);
    /** The byte the guest reads at `at` (HMP xp), through a QEMU that loaded; undefined when it was refused. */
    const guestByte = async (vms: QemuInstance[]) => {
      running.push(...vms);
      return Buffer.from((await hmpWords(vms[0], at))[0], 'hex').readUInt8(7);
    };
    for (const start of [() => restoreVm({ image: bad, lazy: true, qemuArgs: args }).then((v) => [v]), () => cloneVm({ image: bad, qemuArgs: args, count: 2 })]) {
      const err = await start().then(guestByte, (e: Error & { code?: string }) => e);
      expect(err).toMatchObject({ code: 'EIMG_CHECKSUM', message: expect.stringMatching(/bad-ram\.img: corrupted: block 'ram0' chunk 8 \(bytes 67108864\.\.75497472\) has CRC-32C/) });
    }
    const left = spawnSync('pgrep', ['-f', '--', bad], { encoding: 'utf8' });
    expect({ status: left.status, pids: left.stdout.trim() }).toEqual({ status: 1, pids: '' });
    // Trusting the image is a choice the caller makes, and then the guest reads what the file holds.
    expect(await guestByte([await restoreVm({ image: bad, lazy: true, noVerify: true, qemuArgs: args })])).toBe(b[0]);
  });

  test('QEMU arguments that already say -incoming defer: QEMU gets one -incoming and loads; another -incoming is refused before any QEMU starts', async () => {
    const args = machineArgs([{ id: 'ram0', path: shmPath('mgr-incoming'), size: SIZE }]);
    const vm = await restoreVm({ image, lazy: true, qemuArgs: [...args, '-incoming', 'defer'] });
    running.push(vm);
    const argv = fs.readFileSync(`/proc/${vm.proc.pid}/cmdline`, 'utf8').split('\0');
    expect(argv.filter((a) => a === '-incoming')).toEqual(['-incoming']);
    expect((await vm.qmp.execute('query-migrate')).status).toBe('completed');
    const other = path.join(dir, 'incoming-tcp.img');
    fs.copyFileSync(image, other); // its own path: a QEMU started for it would show in pgrep
    await expect(restoreVm({ image: other, lazy: true, qemuArgs: [...args, '-incoming', 'tcp:127.0.0.1:4444'] })).rejects.toThrow('the QEMU arguments already say -incoming tcp:127.0.0.1:4444; leave it out (or use defer)');
    const left = spawnSync('pgrep', ['-f', '--', other], { encoding: 'utf8' });
    expect({ status: left.status, pids: left.stdout.trim() }).toEqual({ status: 1, pids: '' });
  });

  test('lazy restore: loads at once from the image, without filling any RAM file', async () => {
    const vm = await restoreVm({ image, lazy: true, qemuArgs: machineArgs([{ id: 'ram0', path: shmPath('mgr-lazy'), size: SIZE }]) });
    running.push(vm);
    expect((await vm.qmp.execute('query-migrate')).status).toBe('completed');
    expect(fs.existsSync(shmPath('mgr-lazy'))).toBe(false);
    expect(await filesEqual(await guestMemory(vm, 'lazy'), templateTail())).toEqual({ equal: true });
  });
});
