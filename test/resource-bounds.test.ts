/**
 * Resource bounds: the helper's anonymous memory stays small while saving a large guest with a
 * large device-state stream, and repeated library calls leak no file descriptors or mappings.
 */
import { spawn } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { inspect } from '../src/image/inspect';
import { restore } from '../src/image/restore';
import { save } from '../src/image/save';
import { native } from '../src/native';
import { createRamFile, fillPattern } from '../bench/lib/ram-file';
import { IOHELPER } from './support/cli';

const M = 1024 * 1024;
let dir: string;
const ram = `/dev/shm/iohelper-bounds-${process.pid}`;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-bounds-'));
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
  for (const f of fs.readdirSync('/dev/shm')) if (f.startsWith(`iohelper-bounds-${process.pid}`)) fs.rmSync(`/dev/shm/${f}`, { force: true });
});

function rssAnonKiB(pid: number): number {
  try {
    return Number(/RssAnon:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

test('saving 1 GiB of RAM with a 256 MiB device-state stream stays under 128 MiB of anonymous memory', async () => {
  createRamFile(ram, 1024 * M);
  fillPattern(ram, 8, 0.25);
  const image = path.join(dir, 'big.img');
  const child = spawn(process.execPath, [IOHELPER, 'save', '--no-stream-check', '--direct', '--jobs', '4', '--image', image, '--ram', `ram0=${ram}`], { stdio: ['pipe', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  let peak = 0;
  const timer = setInterval(() => (peak = Math.max(peak, rssAnonKiB(child.pid!))), 10);
  const chunk = crypto.randomBytes(4 * M);
  const feed = (async () => {
    for (let i = 0; i < 64; i++) if (!child.stdin!.write(chunk)) await new Promise((r) => child.stdin!.once('drain', r));
    child.stdin!.end();
  })();
  const code = await new Promise((resolve) => child.on('close', resolve));
  await feed;
  clearInterval(timer);
  expect({ code, stderr }).toEqual({ code: 0, stderr: '' });
  expect(inspect(image).deviceStateBytes).toBe(256 * M);
  expect(peak / 1024).toBeLessThan(128);
  expect(peak).toBeGreaterThan(0);
  fs.rmSync(image);
  fs.rmSync(ram);
}, 180000);

function openFds(): number {
  return fs.readdirSync('/proc/self/fd').length;
}
function mappings(): number {
  return fs.readFileSync('/proc/self/maps', 'utf8').split('\n').length;
}

test('1,000 library calls (save, restore, inspect) leak no fds and no mappings', async () => {
  const small = `${ram}-small`;
  createRamFile(small, 2 * M);
  fillPattern(small, 4, 0.25);
  const image = path.join(dir, 'small.img');
  const deviceState = Buffer.alloc(1000, 7);
  const once = async () => {
    const img = fs.openSync(image, 'w');
    const [r, w] = native.pipe();
    fs.writeSync(w, deviceState);
    fs.closeSync(w);
    await save({ imageFd: img, ram: [{ name: 'ram0', path: small }], deviceStateFd: r, checkDeviceState: false, jobs: 1 });
    fs.closeSync(r);
    fs.closeSync(img);
    const img2 = fs.openSync(image, 'r');
    const [r2, w2] = native.pipe();
    await restore({ imageFd: img2, ram: [{ name: 'ram0', path: `${small}-out` }], deviceStateFd: w2, jobs: 1 });
    fs.closeSync(w2);
    fs.closeSync(r2);
    fs.closeSync(img2);
    inspect(image);
    inspect(image);
  };
  await once(); // warm up: thread pools, lazily loaded modules
  const fds = openFds();
  const maps = mappings();
  for (let i = 0; i < 250; i++) await once(); // 4 calls each
  expect(openFds()).toBe(fds);
  expect(mappings()).toBeLessThanOrEqual(maps + 16);
}, 180000);
