/**
 * Real QEMU 10 with x-ignore-shared: RAM stays in shared files on /dev/shm while QEMU streams
 * only device state; `iohelper save` writes RAM blocks (two NUMA backends) and that stream into
 * one image, `iohelper restore` fills fresh RAM files and feeds the stream to a fresh QEMU.
 * The restored RAM files must equal the originals byte for byte, and the image must be sparse.
 */
import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { native } from '../src/native';
import { QmpClient, waitForMigration } from '../src/qmp/client';
import { IOHELPER } from './support/cli';
import { expectGuestSees } from './support/guest-view';
import { createRamFile, describeQemu, filesEqual, fillPattern, RamSpec, shmPath, startQemu } from './support/qemu';

const M = 1024 * 1024;

function run(args: string[], stdio: unknown[]): { proc: ChildProcess; done: Promise<{ code: number | null; stderr: string }> } {
  const proc = spawn(process.execPath, [IOHELPER, ...args], { stdio: stdio as never });
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  return { proc, done: new Promise((resolve) => proc.on('close', (code) => resolve({ code, stderr }))) };
}

async function ignoreShared(qmp: QmpClient): Promise<void> {
  await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
}

const ramArgs = (ram: RamSpec[]) => ram.flatMap((r) => ['--ram', `${r.id}=${r.path}`]);

async function saveImage(ram: RamSpec[], image: string, opts: { direct: boolean; jobs: number; compress?: string }): Promise<void> {
  const vm = await startQemu({ ram });
  const out = fs.openSync(image, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC, 0o600);
  const [r, w] = native.pipe();
  try {
    await ignoreShared(vm.qmp);
    await vm.qmp.execute('migrate-set-parameters', { 'max-bandwidth': 2 ** 40 });
    const h = run(['save', '--fd', '3', '--min-hole', '4K', ...(opts.compress ? [`--compress=${opts.compress}`] : []), ...(opts.direct ? ['--direct'] : []), '--jobs', String(opts.jobs), ...ramArgs(ram)], [r, 'ignore', 'pipe', out]);
    await vm.qmp.executeWithFds('getfd', { fdname: 'm' }, [w]);
    fs.closeSync(r);
    fs.closeSync(w);
    await vm.qmp.execute('migrate', { uri: 'fd:m' });
    await waitForMigration(vm.qmp);
    expect(await h.done).toEqual({ code: 0, stderr: '' });
  } finally {
    fs.closeSync(out);
    await vm.stop();
  }
}

/** Restores `image` into the `ram` files and checks the guest sees `saved` (the source RAM files). */
async function restoreImage(ram: RamSpec[], image: string, opts: { direct: boolean; jobs: number }, saved: RamSpec[], scratch: string): Promise<void> {
  const inp = fs.openSync(image, fs.constants.O_RDONLY);
  const [r, w] = native.pipe();
  // The helper fills the RAM files first, then blocks writing the device state into the pipe.
  const h = run(['restore', '--fd', '3', ...(opts.direct ? ['--direct'] : []), '--jobs', String(opts.jobs), ...ramArgs(ram)], ['ignore', w, 'pipe', inp]);
  fs.closeSync(w);
  fs.closeSync(inp);
  let vm;
  try {
    vm = await startQemu({ ram, incoming: true });
    await ignoreShared(vm.qmp);
    await vm.qmp.executeWithFds('getfd', { fdname: 'm' }, [r]);
    fs.closeSync(r);
    await vm.qmp.execute('migrate-incoming', { uri: 'fd:m' });
    await waitForMigration(vm.qmp);
    expect(await h.done).toEqual({ code: 0, stderr: '' });
    expect(['paused', 'prelaunch']).toContain((await vm.qmp.execute('query-status')).status);
    await expectGuestSees(vm, saved, scratch);
  } finally {
    await vm?.stop();
    h.proc.kill();
  }
}

describeQemu('QEMU 10 x-ignore-shared save/restore through the parallel image', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-image-qemu-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  const cases: Array<[string, number, number, boolean, number]> = [
    ['big: 576 MiB + 128 MiB blocks, O_DIRECT, 4 jobs', 576, 128, true, 4],
    ['small: 128 MiB + 64 MiB, O_DIRECT, 1 job', 128, 64, true, 1],
    ['small: 128 MiB + 64 MiB, buffered, 4 jobs', 128, 64, false, 4],
    ['small: 128 MiB + 64 MiB, buffered, 1 job', 128, 64, false, 1],
  ];

  test.each(cases)('%s: RAM identical, image sparse', async (_n, s0, s1, direct, jobs) => {
    const src: RamSpec[] = [
      { id: 'ram0', path: shmPath('img-src0'), size: s0 * M },
      { id: 'ram1', path: shmPath('img-src1'), size: s1 * M },
    ];
    const dst: RamSpec[] = src.map((r, i) => ({ ...r, path: shmPath(`img-dst${i}`) }));
    const image = path.join(dir, 'vm.img');
    try {
      let nonZero = 0;
      src.forEach((r, i) => {
        createRamFile(r.path, r.size);
        const { pages, zeroPages } = fillPattern(r.path, 100 + i, 0.25);
        nonZero += (pages - zeroPages) * 4096;
      });
      await saveImage(src, image, { direct, jobs });
      const st = fs.statSync(image);
      const allocated = st.blocks * 512;
      expect(allocated).toBeGreaterThanOrEqual(nonZero);
      expect(allocated).toBeLessThan(nonZero + 8 * M); // + device state and metadata
      await restoreImage(dst, image, { direct, jobs }, src, dir);
      for (let i = 0; i < src.length; i++) expect(await filesEqual(src[i].path, dst[i].path)).toEqual({ equal: true });
    } finally {
      for (const r of [...src, ...dst]) fs.rmSync(r.path, { force: true });
      fs.rmSync(image, { force: true });
    }
  }, 300000);

  // Compressed (format version 2): text-like pages compress, random ones are stored raw, zero
  // chunks are not stored; the device state follows the chunks.
  test.each([
    ['zstd:1, 256 MiB + 64 MiB, O_DIRECT, 4 jobs', 'zstd:1', true, 4],
    ['zstd:3, 128 MiB + 64 MiB, buffered, 1 job', 'zstd:3', false, 1],
  ] as Array<[string, string, boolean, number]>)('compressed %s: RAM identical, image smaller than its data', async (_n, compress, direct, jobs) => {
    const sizes = [compress === 'zstd:1' ? 256 : 128, 64];
    const src: RamSpec[] = sizes.map((s, i) => ({ id: `ram${i}`, path: shmPath(`cimg-src${i}`), size: s * M }));
    const dst: RamSpec[] = src.map((r, i) => ({ ...r, path: shmPath(`cimg-dst${i}`) }));
    const image = path.join(dir, 'vm-compressed.img');
    try {
      let nonZero = 0;
      src.forEach((r, i) => {
        createRamFile(r.path, r.size);
        const { pages, zeroPages } = fillPattern(r.path, 200 + i, { zeroFraction: 0.3, zeroRunPages: 512 });
        nonZero += (pages - zeroPages) * 4096;
        writeText(r.path, 0, r.size / 2); // the first half: text, as page cache of logs and sources
      });
      await saveImage(src, image, { direct, jobs, compress });
      const st = fs.statSync(image);
      expect(st.size).toBeLessThan(nonZero * 0.75);
      expect(st.blocks * 512).toBeLessThanOrEqual(st.size + 64 * 1024); // packed: no holes to speak of
      await restoreImage(dst, image, { direct, jobs }, src, dir);
      for (let i = 0; i < src.length; i++) expect(await filesEqual(src[i].path, dst[i].path)).toEqual({ equal: true });
    } finally {
      for (const r of [...src, ...dst]) fs.rmSync(r.path, { force: true });
      fs.rmSync(image, { force: true });
    }
  }, 300000);
});

/** Overwrites [start, end) with lines of text (compressible, no two lines alike). */
function writeText(file: string, start: number, end: number): void {
  const fd = fs.openSync(file, 'r+');
  try {
    for (let pos = start, n = 0; pos < end; pos += 4 * M) {
      const lines: string[] = [];
      let len = 0;
      while (len < 4 * M) {
        const line = `${n++} kernel: [${(n * 0.37).toFixed(3)}] eth0: link up, ${n % 1000} Mbps, full duplex, flow ${n % 7 ? 'rx' : 'tx'}\n`;
        lines.push(line);
        len += line.length;
      }
      fs.writeSync(fd, Buffer.from(lines.join('')).subarray(0, Math.min(4 * M, end - pos)), 0, Math.min(4 * M, end - pos), pos);
    }
  } finally {
    fs.closeSync(fd);
  }
}
