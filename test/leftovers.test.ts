/**
 * Nothing accumulates: temporaries a killed run left beside its target (on tmpfs, a RAM block's
 * worth of memory each) are removed by the next run in that directory, which says so; a failed
 * save by path creates nothing; empty QMP socket directories of detached QEMUs that quit are
 * removed by the next QEMU start.
 */
import { spawnSync } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { createRamFile, fillPattern, filesEqual } from '../bench/lib/ram-file';
import { runHelper } from './support/cli';
import { describeQemu, startQemu } from './support/qemu';

const M = 1024 * 1024;
let dir: string;
let shmDir: string;
let image: string;
let src: string;

/** A PID that is no process's: a child that has exited (and been reaped). */
function deadPid(): number {
  const r = spawnSync('sh', ['-c', 'echo $$']);
  return Number(r.stdout.toString().trim());
}

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-leftovers-'));
  shmDir = fs.mkdtempSync('/dev/shm/iohelper-leftovers-');
  src = path.join(shmDir, 'src');
  createRamFile(src, 8 * M);
  fillPattern(src, 4, 0.25);
  image = path.join(dir, 'good.img');
  const r = await runHelper(['save', '--no-stream-check', '--image', image, '--ram', `a=${src}`], [crypto.randomBytes(100), 'ignore']);
  expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.rmSync(shmDir, { recursive: true, force: true });
});

test("a restore removes a dead run's temporary beside its target and says so; a live run's stays", async () => {
  const pid = deadPid();
  const stale = path.join(shmDir, `.target.iohelper-${pid}-0badf00d`);
  fs.writeFileSync(stale, Buffer.alloc(M, 1));
  const live = path.join(shmDir, `.target.iohelper-${process.pid}-1234abcd`);
  fs.writeFileSync(live, 'x');
  const target = path.join(shmDir, 'target');
  const r = await runHelper(['restore', '--image', image, '--ram', `a=${target}`], ['ignore', 'ignore']);
  expect(r.code).toBe(0);
  expect(r.stderr).toMatch(new RegExp(`warning: removed ${stale.replace(/\./g, '\\.')}, left by iohelper process ${pid} which is gone`));
  expect(fs.existsSync(stale)).toBe(false);
  expect(fs.existsSync(live)).toBe(true);
  expect(await filesEqual(src, target)).toEqual({ equal: true });
  fs.rmSync(live);
});

test("a convert removes a dead convert's scratch file, and leaves a directory with such a name alone (its scratch is never a directory); a save, a dead save's temporary", async () => {
  const pid = deadPid();
  const scratchFile = path.join(dir, `.out.img.iohelper-${pid}-5c7a7c40`);
  fs.writeFileSync(scratchFile, Buffer.alloc(M, 1));
  // What an older convert left: a directory, which this one does not enter.
  const scratchDir = path.join(dir, `.out.img.iohelper-convert-${pid}-AbC123`);
  fs.mkdirSync(scratchDir);
  fs.writeFileSync(path.join(scratchDir, 'block-0'), 'x');
  const c = await runHelper(['convert', image, path.join(dir, 'out.img'), '--compress'], ['ignore', 'ignore']);
  expect(c.code).toBe(0);
  expect(c.stderr).toMatch(/warning: removed .*\.out\.img\.iohelper-\d+-5c7a7c40, left by iohelper process \d+ which is gone \(\d+ bytes allocated\)/);
  expect(c.stderr).toMatch(/warning: left .*iohelper-convert-\d+-AbC123 alone: .* but it is a directory/);
  expect(fs.existsSync(scratchFile)).toBe(false);
  expect(fs.readFileSync(path.join(scratchDir, 'block-0'), 'utf8')).toBe('x');
  fs.rmSync(scratchDir, { recursive: true });
  // convert's own scratch files are gone once it is done.
  expect(fs.readdirSync(dir).filter((f) => f.includes('.iohelper-'))).toEqual([]);
  const temp = path.join(dir, `.again.img.iohelper-${pid}-00c0ffee`);
  fs.writeFileSync(temp, 'x');
  const s = await runHelper(['save', '--no-stream-check', '--image', path.join(dir, 'again.img'), '--ram', `a=${src}`], [crypto.randomBytes(100), 'ignore']);
  expect(s.code).toBe(0);
  expect(fs.existsSync(temp)).toBe(false);
});

test('a save by path that fails its checks creates no file (no empty image, no temporary)', async () => {
  const out = path.join(dir, 'never.img');
  const r = await runHelper(['save', '--no-stream-check', '--image', out, '--ram', 'a=/nonexistent/ram'], [Buffer.alloc(10), 'ignore']);
  expect(r.code).toBe(1);
  expect(fs.existsSync(out)).toBe(false);
  expect(fs.readdirSync(dir).filter((f) => f.includes('never'))).toEqual([]);
});

describeQemu('QMP socket directories', () => {
  test('an empty one left a minute ago is removed when a QEMU starts; one in use is kept', async () => {
    const old = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-qemu-'));
    const past = new Date(Date.now() - 120_000);
    fs.utimesSync(old, past, past);
    const busy = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-qemu-'));
    fs.writeFileSync(path.join(busy, 'qmp.sock'), '');
    fs.utimesSync(busy, past, past);
    const ram = `/dev/shm/iohelper-leftovers-${process.pid}-ram`;
    const vm = await startQemu({ ram: [{ id: 'ram0', path: ram, size: 32 * M }] });
    try {
      expect(fs.existsSync(old)).toBe(false);
      expect(fs.existsSync(busy)).toBe(true);
    } finally {
      await vm.stop();
      fs.rmSync(busy, { recursive: true, force: true });
      fs.rmSync(ram, { force: true });
    }
  });
});
