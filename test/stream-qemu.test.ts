/**
 * Real QEMU 10 through the stream helper: a paused guest whose RAM is a patterned file on
 * /dev/shm is saved with `migrate` through `iohelper` (both CLI forms, with and without
 * O_DIRECT), restored into a fresh QEMU with `-incoming defer` + `migrate-incoming` through
 * `iohelper`, and the restored RAM file must equal the original byte for byte.
 */
import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { native } from '../src/native';
import { waitForMigration } from '../src/qmp/client';
import { IOHELPER } from './support/cli';
import { expectGuestSees } from './support/guest-view';
import { createRamFile, describeQemu, filesEqual, fillPattern, shmPath, startQemu } from './support/qemu';

const M = 1024 * 1024;
const RAM_SIZE = 256 * M;
const { O_DIRECT, O_WRONLY, O_RDONLY, O_CREAT, O_TRUNC } = fs.constants;

function helper(args: string[], stdio: Array<number | 'ignore' | 'pipe'>): { proc: ChildProcess; done: Promise<{ code: number | null; stderr: string }> } {
  const proc = spawn(process.execPath, [IOHELPER, ...args], { stdio: [...stdio.slice(0, 2), 'pipe', ...stdio.slice(3)] as never });
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<{ code: number | null; stderr: string }>((resolve) => proc.on('close', (code) => resolve({ code, stderr })));
  return { proc, done };
}

const maxBandwidth = { 'max-bandwidth': 64 * 1024 * M };

/** Saves the guest over `fd:` (pipe passed with getfd) with the libvirt form, the file opened by us, as libvirt does. */
async function saveLibvirtForm(ram: string, image: string, direct: boolean, header?: Buffer): Promise<void> {
  const [r, w] = native.pipe();
  const vm = await startQemu({ ram: [{ id: 'ram0', path: ram, size: RAM_SIZE }] });
  await vm.qmp.executeWithFds('getfd', { fdname: 'migrate' }, [w]);
  const out = fs.openSync(image, O_WRONLY | O_CREAT | O_TRUNC, 0o600);
  try {
    if (header) fs.writeSync(out, header);
    if (direct) native.setFlags(out, native.getFlags(out) | O_DIRECT);
    const h = helper([image, '1'], [r, out]);
    fs.closeSync(r);
    fs.closeSync(w);
    await vm.qmp.execute('migrate-set-parameters', maxBandwidth);
    await vm.qmp.execute('migrate', { uri: 'fd:migrate' });
    await waitForMigration(vm.qmp);
    expect(await h.done).toEqual({ code: 0, stderr: '' });
  } finally {
    fs.closeSync(out);
    await vm.stop();
  }
}

/** Saves with the --fd form, QEMU running the helper itself through `exec:`. */
async function saveFdForm(ram: string, image: string, direct: boolean): Promise<void> {
  const vm = await startQemu({ ram: [{ id: 'ram0', path: ram, size: RAM_SIZE }] });
  try {
    await vm.qmp.execute('migrate-set-parameters', maxBandwidth);
    const cmd = `exec '${process.execPath}' '${IOHELPER}' --fd 3 ${direct ? '--direct' : ''} --name '${image}' 3>'${image}'`;
    await vm.qmp.execute('migrate', { uri: `exec:${cmd}` });
    await waitForMigration(vm.qmp);
  } finally {
    await vm.stop();
  }
}

/** Restores into a fresh RAM file through the libvirt form, the image opened by us. */
async function restoreLibvirtForm(image: string, ram: string, direct: boolean, saved: string, scratch: string, start = 0): Promise<void> {
  createRamFile(ram, RAM_SIZE);
  const [r, w] = native.pipe();
  const vm = await startQemu({ ram: [{ id: 'ram0', path: ram, size: RAM_SIZE }], incoming: true });
  await vm.qmp.executeWithFds('getfd', { fdname: 'migrate' }, [r]);
  const inp = fs.openSync(image, O_RDONLY | (direct ? O_DIRECT : 0));
  try {
    if (start) native.lseek(inp, start, native.constants.SEEK_SET);
    const h = helper([image, '0'], [inp, w]);
    fs.closeSync(r);
    fs.closeSync(w);
    await vm.qmp.execute('migrate-incoming', { uri: 'fd:migrate' });
    await waitForMigration(vm.qmp);
    expect(await h.done).toEqual({ code: 0, stderr: '' });
    expect(['paused', 'prelaunch']).toContain((await vm.qmp.execute('query-status')).status);
    await expectGuestSees(vm, [{ path: saved, size: RAM_SIZE }], scratch);
  } finally {
    fs.closeSync(inp);
    await vm.stop();
  }
}

async function restoreFdForm(image: string, ram: string, direct: boolean, saved: string, scratch: string): Promise<void> {
  createRamFile(ram, RAM_SIZE);
  const vm = await startQemu({ ram: [{ id: 'ram0', path: ram, size: RAM_SIZE }], incoming: true });
  try {
    const cmd = `exec '${process.execPath}' '${IOHELPER}' --fd 3 ${direct ? '--direct' : ''} 3<'${image}'`;
    await vm.qmp.execute('migrate-incoming', { uri: `exec:${cmd}` });
    await waitForMigration(vm.qmp);
    expect(['paused', 'prelaunch']).toContain((await vm.qmp.execute('query-status')).status);
    await expectGuestSees(vm, [{ path: saved, size: RAM_SIZE }], scratch);
  } finally {
    await vm.stop();
  }
}

describeQemu('QEMU 10 save/restore through the stream helper', () => {
  const srcRam = shmPath('stream-src');
  const dstRam = shmPath('stream-dst');
  let dir: string;

  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-qemu-stream-'));
    createRamFile(srcRam, RAM_SIZE);
    const { pages, zeroPages } = fillPattern(srcRam, 1234, 0.25);
    expect(zeroPages / pages).toBeGreaterThan(0.2);
  });
  afterAll(() => {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(srcRam, { force: true });
    fs.rmSync(dstRam, { force: true });
  });
  afterEach(() => fs.rmSync(dstRam, { force: true }));

  test.each([
    ['libvirt form, O_DIRECT', 'libvirt', true],
    ['libvirt form, buffered', 'libvirt', false],
    ['--fd form via exec:, --direct', 'fd', true],
    ['--fd form via exec:, buffered', 'fd', false],
  ])('%s: restored RAM equals the original', async (_name, form, direct) => {
    const image = path.join(dir, `vm-${form}-${direct}.save`);
    if (form === 'libvirt') await saveLibvirtForm(srcRam, image, direct as boolean);
    else await saveFdForm(srcRam, image, direct as boolean);
    const head = Buffer.alloc(4);
    const fd = fs.openSync(image, 'r');
    fs.readSync(fd, head, 0, 4, 0);
    fs.closeSync(fd);
    expect(head.toString('latin1')).toBe('QEVM');

    if (form === 'libvirt') await restoreLibvirtForm(image, dstRam, direct as boolean, srcRam, dir);
    else await restoreFdForm(image, dstRam, direct as boolean, srcRam, dir);
    expect(await filesEqual(srcRam, dstRam)).toEqual({ equal: true });
    fs.rmSync(image);
  });

  test('a libvirt-style image (92-byte header + XML, then the stream) round-trips with O_DIRECT', async () => {
    const xml = Buffer.from('<domain type="kvm"><name>t</name></domain>\0');
    const header = Buffer.alloc(92);
    header.write('LibvirtQemudPart', 0, 'latin1');
    header.writeUInt32LE(2, 16); // version
    header.writeUInt32LE(xml.length, 20); // data_len
    const image = path.join(dir, 'libvirt-style.save');
    await saveLibvirtForm(srcRam, image, true, Buffer.concat([header, xml]));
    // libvirt marks the image complete once the helper has succeeded.
    const fd = fs.openSync(image, 'r+');
    fs.writeSync(fd, 'LibvirtQemudSave', 0, 'latin1');
    const magic = Buffer.alloc(4);
    fs.readSync(fd, magic, 0, 4, 92 + xml.length);
    fs.closeSync(fd);
    expect(magic.toString('latin1')).toBe('QEVM');

    await restoreLibvirtForm(image, dstRam, true, srcRam, dir, 92 + xml.length);
    expect(await filesEqual(srcRam, dstRam)).toEqual({ equal: true });
  });

  test('a corrupted stream makes QEMU fail the restore instead of loading garbage', async () => {
    const image = path.join(dir, 'corrupt.save');
    await saveLibvirtForm(srcRam, image, false);
    const fd = fs.openSync(image, 'r+');
    fs.writeSync(fd, 'XXXX', 0, 'latin1');
    fs.closeSync(fd);
    await expect(restoreLibvirtForm(image, dstRam, false, srcRam, dir)).rejects.toThrow(/migration failed|monitor closed/);
  });
});
