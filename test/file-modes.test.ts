/**
 * Every file iohelper creates is 0600 whatever the umask (images, RAM files a restore creates,
 * convert's output, the logs of --log-dir), and a log of --log-dir, appended to by each run, is
 * quoted in an error only from this run's lines.
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { createRamFile, fillPattern } from '../bench/lib/ram-file';
import { IOHELPER, runHelper } from './support/cli';
import { saveVm } from '../src/vm/manager';
import { describeQemu, machineArgs, shmPath, startQemu } from './support/qemu';

const M = 1024 * 1024;
let dir: string;
let src: string;

/** The CLI run under `umask`. */
function runUnder(umask: number, args: string[], stdio: Array<number | 'pipe' | 'ignore' | Buffer>) {
  return runHelper(['-c', `umask ${umask.toString(8)}; exec "$0" "$@"`, process.execPath, IOHELPER, ...args], stdio, '/bin/sh');
}

const modeOf = (file: string) => fs.statSync(file).mode & 0o7777;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-modes-'));
  src = path.join(dir, 'src');
  createRamFile(src, 4 * M);
  fillPattern(src, 2, 0.5);
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

test.each([['0', 0o000], ['022', 0o022], ['0277', 0o277]])('under umask %s: a saved image, a restored RAM file and a converted image are 0600', async (_name, umask) => {
  const image = path.join(dir, `u${umask}.img`);
  const s = await runUnder(umask, ['save', '--no-stream-check', '--image', image, '--ram', `a=${src}`], [crypto.randomBytes(100), 'ignore']);
  expect({ code: s.code, stderr: s.stderr }).toEqual({ code: 0, stderr: '' });
  expect(modeOf(image).toString(8)).toBe('600');
  const ram = path.join(dir, `u${umask}.ram`);
  const r = await runUnder(umask, ['restore', '--image', image, '--ram', `a=${ram}`], ['ignore', 'ignore']);
  expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
  expect(modeOf(ram).toString(8)).toBe('600');
  const converted = path.join(dir, `u${umask}.zimg`);
  const c = await runUnder(umask, ['convert', image, converted, '--compress'], ['ignore', 'ignore']);
  expect(c.code).toBe(0);
  expect(modeOf(converted).toString(8)).toBe('600');
});

describeQemu('the logs of --log-dir', () => {
  test('0600 under umask 0 and 022; appended, and an error quotes only its own run', async () => {
    const logs = path.join(dir, 'logs');
    const ramPath = shmPath('modes-ram');
    const image = path.join(dir, 'vm.img');
    const s = await runHelper(['save', '--no-stream-check', '--image', image, '--ram', `pc.ram=${src}`], [crypto.randomBytes(100), 'ignore']);
    expect(s.code).toBe(0);
    const qemu = ['-m', '4', '-object', `memory-backend-file,id=pc.ram,size=4M,mem-path=${ramPath},share=on`, '-machine', 'pc,memory-backend=pc.ram'];
    try {
      const first = await runUnder(0, ['vm', 'restore', '--image', image, '--log-dir', logs, '--', ...qemu, '-bogus-first'], ['ignore', 'pipe']);
      expect(first.code).toBe(1);
      expect(first.stderr).toContain('-bogus-first: invalid option');
      expect(modeOf(path.join(logs, 'restore.log')).toString(8)).toBe('600');
      const second = await runUnder(0o022, ['vm', 'restore', '--image', image, '--log-dir', logs, '--', ...qemu, '-bogus-second'], ['ignore', 'pipe']);
      expect(second.code).toBe(1);
      expect(second.stderr).toContain('-bogus-second: invalid option');
      expect(second.stderr).not.toContain('-bogus-first: invalid option');
      const log = fs.readFileSync(path.join(logs, 'restore.log'), 'utf8');
      expect(log).toContain('-bogus-first: invalid option');
      expect(log).toContain('-bogus-second: invalid option');
    } finally {
      fs.rmSync(ramPath, { force: true });
    }
  });
});

describeQemu('the RAM files vm restore creates', () => {
  test('0600 under umask 0277 (the open alone would leave 0400)', async () => {
    const saved = shmPath('modes-saved');
    const restored = shmPath('modes-restored');
    const image = path.join(dir, 'vm-modes.img');
    const vm = await startQemu({ ram: [{ id: 'pc.ram', path: saved, size: 4 * M }] });
    try {
      await saveVm(vm.qmp, { image });
    } finally {
      await vm.stop();
    }
    const qemu = machineArgs([{ id: 'pc.ram', path: restored, size: 4 * M }]);
    const r = await runUnder(0o277, ['vm', 'restore', '--image', image, '--', ...qemu], ['ignore', 'pipe']);
    const pids = [...r.stdout.toString().matchAll(/pid (\d+)/g)].map((m) => Number(m[1]));
    try {
      expect({ code: r.code, stderr: r.stderr.toString() }).toEqual({ code: 0, stderr: '' });
      expect(modeOf(restored).toString(8)).toBe('600');
    } finally {
      for (const pid of pids) process.kill(pid, 'SIGKILL');
      fs.rmSync(saved, { force: true });
      fs.rmSync(restored, { force: true });
    }
  });
});

describeQemu('the log directory', () => {
  test('one that another user made, a link to one, one others may write, or a planted log is refused before any QEMU starts (and never blocks)', async () => {
    const image = path.join(dir, 'vm-logdir.img');
    const s = await runHelper(['save', '--no-stream-check', '--image', image, '--ram', `pc.ram=${src}`], [crypto.randomBytes(100), 'ignore']);
    expect(s.code).toBe(0);
    const theirs = path.join(dir, 'theirs');
    fs.mkdirSync(theirs);
    fs.chownSync(theirs, 65534, 65534);
    const link = path.join(dir, 'link-to-theirs');
    fs.symlinkSync(theirs, link);
    const ramPath = shmPath('logdir-ram');
    const qemu = ['-m', '4', '-object', `memory-backend-file,id=pc.ram,size=4M,mem-path=${ramPath},share=on`, '-machine', 'pc,memory-backend=pc.ram', '-bogus'];
    try {
      const open = path.join(dir, 'world-writable');
      fs.mkdirSync(open);
      fs.chmodSync(open, 0o1777);
      const planted = path.join(dir, 'planted');
      fs.mkdirSync(planted, { mode: 0o700 });
      require('child_process').execFileSync('mkfifo', [path.join(planted, 'restore.log')]);
      for (const [logDir, why] of [
        [theirs, /owned by uid 65534, not by us/],
        [link, /is a symbolic link/],
        [open, /is writable by others/],
        [planted, /the log \S*restore\.log is not a regular file of ours/],
      ] as const) {
        const r = await runHelper(['vm', 'restore', '--image', image, '--log-dir', logDir, '--', ...qemu], ['ignore', 'pipe']);
        expect(r.code).toBe(1);
        expect(r.stderr.toString()).toMatch(why);
        expect(r.stderr.toString()).not.toContain('-bogus');
        expect(fs.readdirSync(theirs)).toEqual([]);
      }
    } finally {
      fs.rmSync(ramPath, { force: true });
    }
  });
});

