/**
 * A save that dies or is interrupted must leave an image every reader refuses, and a refused
 * restore must leave the RAM files alone.
 */
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { createRamFile, fillPattern, sha256File } from '../src/synthetic/ram-file';
import { waitForMigration } from '../src/qmp/client';
import { IOHELPER, lastLine, runHelper } from './support/cli';
import { describeQemu, startQemu } from './support/qemu';

const M = 1024 * 1024;
let dir: string;
const ram = `/dev/shm/iohelper-faults-${process.pid}`;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-faults-'));
  createRamFile(ram, 256 * M);
  fillPattern(ram, 3, 0.25);
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.rmSync(ram, { force: true });
  fs.rmSync(`${ram}-target`, { force: true });
});

/** Starts a save whose device-state stream stays open (QEMU still "migrating"). */
function startSave(image: string) {
  const child = spawn(process.execPath, [IOHELPER, 'save', '--no-stream-check', '--image', image, '--jobs', '1', '--min-hole', '4K', '--ram', `ram0=${ram}`], { stdio: ['pipe', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stderr })));
  child.stdin!.write(Buffer.alloc(64 * 1024, 0x51));
  return { child, done };
}

async function waitForBytes(file: string, min: number): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (fs.existsSync(file) && fs.statSync(file).blocks * 512 >= min) return;
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function expectRefused(image: string): Promise<void> {
  const info = await runHelper(['inspect', image], ['ignore', 'pipe']);
  expect(info.code).toBe(2);
  expect(info.stdout.toString()).toMatch(/INCOMPLETE/);
  const target = `${ram}-target`;
  createRamFile(target, 256 * M);
  fillPattern(target, 9, 0);
  const before = await sha256File(target);
  const r = await runHelper(['restore', '--image', image, '--ram', `ram0=${target}`], ['ignore', 'pipe']);
  expect(r.code).toBe(1);
  expect(r.stdout.length).toBe(0);
  expect(lastLine(r.stderr)).toMatch(/incomplete.*\(EIMG_UNCOMMITTED\)$/);
  expect(await sha256File(target)).toBe(before);
}

test('SIGKILL in the middle of a save: the image is incomplete and refused', async () => {
  const image = path.join(dir, 'killed.img');
  const s = startSave(image);
  await waitForBytes(image, 4 * M);
  s.child.kill('SIGKILL');
  expect((await s.done).signal).toBe('SIGKILL');
  await expectRefused(image);
});

test.each(['SIGINT', 'SIGTERM'] as const)('%s during a save: exit 1, image left incomplete, nothing removed', async (sig) => {
  const image = path.join(dir, `${sig}.img`);
  const s = startSave(image);
  await waitForBytes(image, 4 * M);
  s.child.kill(sig);
  const r = await s.done;
  expect(r.signal).toBeNull();
  expect(r.code).toBe(1);
  expect(lastLine(r.stderr)).toMatch(/interrupted; .* is left incomplete \(ECANCELED\)$/);
  expect(fs.existsSync(image)).toBe(true);
  expect(fs.existsSync(ram)).toBe(true);
  await expectRefused(image);
});

describeQemu('a device-state stream cut short (QEMU died mid-migration)', () => {
  let stream: Buffer;
  beforeAll(async () => {
    const vm = await startQemu({ ram: [{ id: 'ram0', path: ram, size: 256 * M }] });
    const file = path.join(dir, 'devstate.bin');
    try {
      await vm.qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
      await vm.qmp.execute('migrate', { uri: `exec:cat > '${file}'` });
      await waitForMigration(vm.qmp);
    } finally {
      await vm.stop();
    }
    stream = fs.readFileSync(file);
  });

  const save = (image: string, input: Buffer) => runHelper(['save', '--image', image, '--ram', `ram0=${ram}`], [input, 'ignore']);

  test('the whole stream commits', async () => {
    const r = await save(path.join(dir, 'whole.img'), stream);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
  });

  test.each([0.1, 0.6, 0.999])('a stream cut at %p of its length: exit 1, image incomplete and refused', async (frac) => {
    const image = path.join(dir, `cut-${frac}.img`);
    const r = await save(image, stream.subarray(0, Math.floor(stream.length * frac)));
    expect(r.code).toBe(1);
    expect(lastLine(r.stderr)).toMatch(/device-state stream from QEMU is incomplete .*did QEMU stop mid-migration\? .*\(EIMG_TRUNCATED\)$/);
    await expectRefused(image);
  });
});
