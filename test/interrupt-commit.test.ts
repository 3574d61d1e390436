/**
 * An interrupt is honoured up to the commit, and the first failure stops every job
 * (src/image/exec/pool.ts, the addon's cancel word in native/copy_job.h): a signal that comes
 * while the last jobs run commits nothing, and a corrupted chunk ends the restore without the
 * other jobs being read and written first.
 *
 * "While the last jobs run" is made certain, not likely: the jobs write to an ext4 that the
 * test freezes (fsfreeze), so each blocks in its first write until the test thaws it, and the
 * interrupt comes before that. With --jobs at least the number of ranges, every job is handed
 * out before the interrupt, so a pool that only checks between jobs lets them all finish.
 * The moments to freeze and to signal are found without timing: the helper writes its
 * --planned-fd line or its --progress lines into a pipe the test keeps full, so it waits there
 * (seen in /proc/PID/syscall) until the test drains it.
 */
import { ChildProcess, execFileSync, spawn } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { createRamFile, fillPattern, sha256File } from '../bench/lib/ram-file';
import { createReplacement } from '../src/fs/atomic-file';
import * as deviceStateIo from '../src/image/io/device-state';
import * as pool from '../src/image/exec/pool';
import { save } from '../src/image/save';
import { native } from '../src/native';
import { IOHELPER, lastLine, runHelper } from './support/cli';
import { describeAsRoot, FreezableMount, mountLoopExt4 } from './support/mounts';

const M = 1024 * 1024;
const RAM = 64 * M;
let shm: string;
let src: string;
let image: string;

beforeAll(async () => {
  shm = fs.mkdtempSync('/dev/shm/iohelper-interrupt-');
  src = path.join(shm, 'src');
  createRamFile(src, RAM);
  fillPattern(src, 31, 0); // data in every page: every job has bytes to write
  image = path.join(shm, 'good.img');
  const r = await runHelper(['save', '--no-stream-check', '--chunk', '1M', '--image', image, '--ram', `a=${src}`], [crypto.randomBytes(10000), 'ignore']);
  expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
});
afterAll(() => fs.rmSync(shm, { recursive: true, force: true }));

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until `check` holds, polling; throws after `ms` (a hang, not a timing assertion). */
async function until(what: string, check: () => boolean, ms = 60000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting: ${what}`);
    await sleep(10);
  }
}

/** The system call process `pid`'s main thread is in, as /proc/PID/syscall gives it ("1 0x3 …": write to fd 3). */
const syscallOf = (pid: number) => {
  try {
    return fs.readFileSync(`/proc/${pid}/syscall`, 'utf8');
  } catch {
    return '';
  }
};

/** No signal waits for delivery to `pid` any more (its handler has it). */
const signalsDelivered = (pid: number) => {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return /^SigPnd:\s*0+$/m.test(status) && /^ShdPnd:\s*0+$/m.test(status);
};

/** A FIFO's write end that blocks the process it is given to (the pipe is full), and the test's read end to drain it. */
function fullPipe(name: string): { childEnd: number; drain(): void; close(): void } {
  const fifo = path.join(shm, name);
  execFileSync('mkfifo', [fifo]);
  const reader = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const fill = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  const childEnd = fs.openSync(fifo, fs.constants.O_WRONLY);
  for (const size of [4096, 1]) {
    try {
      for (;;) fs.writeSync(fill, Buffer.alloc(size));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
    }
  }
  const buf = Buffer.alloc(65536);
  return {
    childEnd,
    drain() {
      try {
        while (fs.readSync(reader, buf) > 0);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
      }
    },
    close() {
      for (const fd of [reader, fill]) fs.closeSync(fd);
    },
  };
}

function exited(child: ChildProcess): Promise<{ code: number | null; stderr: string }> {
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stderr })));
}

describeAsRoot('an interrupt while the last jobs run commits nothing', () => {
  let ext4: FreezableMount;
  beforeAll(() => {
    ext4 = mountLoopExt4(256 * M);
  });
  afterAll(() => ext4?.unmount());
  const ours = () => fs.readdirSync(ext4.dir).filter((f) => f.includes('.iohelper-'));

  test('restore (CLI, SIGINT): a target that holds data is left as it was, and no temporary is left', async () => {
    const target = path.join(ext4.dir, 'ram');
    createRamFile(target, RAM);
    fillPattern(target, 9, 0);
    const before = await sha256File(target);
    // --planned-fd is a pipe the test has filled: the restore's "planned" line (written once
    // the targets are staged, just before the jobs are handed out) waits until the test has
    // frozen the target's filesystem and reads the pipe.
    const planned = fullPipe('planned');
    const child = spawn(process.execPath, [IOHELPER, 'restore', '--jobs', '4', '--job-size', '16M', '--planned-fd', '3', '--image', image, '--ram', `a=${target}`], {
      stdio: ['ignore', 'ignore', 'pipe', planned.childEnd],
    });
    fs.closeSync(planned.childEnd);
    const result = exited(child);
    try {
      await until('the restore writes its planned line', () => syscallOf(child.pid!).startsWith('1 0x3 '));
      ext4.freeze();
      try {
        await until('the planned line is read', () => {
          planned.drain();
          return !syscallOf(child.pid!).startsWith('1 0x3 ');
        });
        // Every job is handed out in the same turn as the planned line, before the signal is
        // handled; each waits in its first write to the frozen filesystem.
        child.kill('SIGINT');
        await until('SIGINT is delivered', () => signalsDelivered(child.pid!));
        await sleep(200); // the idle main thread runs its handler (a slow one only makes this test fail)
      } finally {
        ext4.thaw();
      }
      const r = await result;
      expect({ code: r.code, last: lastLine(r.stderr) }).toEqual({ code: 1, last: expect.stringMatching(/restore interrupted; no RAM file was changed \(ECANCELED\)$/) });
      expect(await sha256File(target)).toBe(before);
      expect(ours()).toEqual([]);
    } finally {
      child.kill('SIGKILL');
      planned.close();
    }
  });

  test('save (library, abort): the image is left as it was, and nothing is committed', async () => {
    const target = path.join(ext4.dir, 'saved.img');
    fs.copyFileSync(image, target);
    const before = await sha256File(target);
    const staged = createReplacement(target);
    const abort = new AbortController();
    // The one place the test steps in: between the device state's copy (complete, as a QEMU
    // that finished sending leaves it) and the RAM jobs, it freezes the filesystem; then it
    // aborts, as SIGTERM does, once every job is handed out. Both are the real functions.
    let deviceState: Promise<unknown> | undefined;
    const realStream = deviceStateIo.streamDeviceState;
    const realRun = pool.runPool;
    const streamSpy = jest.spyOn(deviceStateIo, 'streamDeviceState').mockImplementation((o) => (deviceState = realStream(o)));
    const runSpy = jest.spyOn(pool, 'runPool').mockImplementation(async (o) => {
      await deviceState;
      ext4.freeze();
      try {
        const run = realRun(o);
        run.catch(() => undefined); // awaited below, after the thaw
        abort.abort();
        await sleep(200); // the jobs reach their first write; they cannot pass it while frozen
        ext4.thaw();
        return await run;
      } finally {
        ext4.thaw();
      }
    });
    const [r, w] = native.pipe();
    fs.writeSync(w, crypto.randomBytes(10000));
    fs.closeSync(w);
    try {
      const saving = save({
        imageFd: staged.fd,
        imageName: target,
        ram: [{ name: 'a', path: src }],
        deviceStateFd: r,
        jobs: 4,
        jobSize: 16 * M,
        checkDeviceState: false,
        staged: { replaces: staged.replaced },
        signal: abort.signal,
      });
      await expect(saving).rejects.toMatchObject({ code: 'ECANCELED', message: expect.stringMatching(/interrupted.*left as it was/) });
      expect(runSpy).toHaveBeenCalledTimes(1);
    } finally {
      staged.discard();
      streamSpy.mockRestore();
      runSpy.mockRestore();
      fs.closeSync(r);
    }
    expect(await sha256File(target)).toBe(before);
    expect(ours()).toEqual([]);
  });
});

test('save by path (CLI, SIGTERM while it is blocked): the old image is left as it was, no temporary', async () => {
  // The save's progress goes to a pipe nobody reads: its main thread blocks in a progress
  // write (one during the copy, or the last one, after the copy and before the commit) and
  // gets SIGTERM there, its device state long complete. Before: the signal, handled only
  // after the blocked write, was not seen before the rename, and the image was replaced.
  const dir = fs.mkdtempSync(path.join(shm, 'save-'));
  const target = path.join(dir, 'saved.img');
  fs.copyFileSync(image, target);
  const before = await sha256File(target);
  const progress = fullPipe('progress');
  const child = spawn(process.execPath, [IOHELPER, 'save', '--no-stream-check', '--jobs', '4', '--job-size', '16M', '--progress=3', '--image', target, '--ram', `a=${src}`], {
    stdio: ['pipe', 'ignore', 'pipe', progress.childEnd],
  });
  fs.closeSync(progress.childEnd);
  child.stdin!.end(crypto.randomBytes(10000));
  const result = exited(child);
  let draining: NodeJS.Timeout | undefined;
  try {
    await until('the save blocks writing progress', () => syscallOf(child.pid!).startsWith('1 0x3 '));
    child.kill('SIGTERM');
    await until('SIGTERM is delivered', () => signalsDelivered(child.pid!));
    draining = setInterval(() => progress.drain(), 10);
    const r = await result;
    expect({ code: r.code, last: lastLine(r.stderr) }).toEqual({ code: 1, last: expect.stringMatching(/save interrupted; .*saved\.img is left as it was \(ECANCELED\)$/) });
    expect(await sha256File(target)).toBe(before);
    expect(fs.readdirSync(dir)).toEqual(['saved.img']);
  } finally {
    clearInterval(draining);
    child.kill('SIGKILL');
    progress.close();
  }
});

describe('the first bad chunk stops every job', () => {
  test('the first chunk of each of the first two jobs corrupted, 32 jobs on 2 threads: no other job runs', async () => {
    // Both first jobs fail at their first chunk, before writing anything, whichever thread runs
    // which and whenever; no other job may start once a bad chunk is seen. An fd target is
    // written in place and never put back, so its allocated bytes count what the jobs wrote.
    // (Jobs in flight are cancelled through the same word as on an interrupt, tested above.)
    const corrupt = path.join(shm, 'corrupt.img');
    fs.copyFileSync(image, corrupt);
    const info = JSON.parse((await runHelper(['inspect', corrupt, '--json'], ['ignore', 'pipe'])).stdout.toString());
    const fd = fs.openSync(corrupt, 'r+');
    for (const at of [info.blocks[0].offset + 100, info.blocks[0].offset + 2 * M + 100]) {
      const b = Buffer.alloc(1);
      fs.readSync(fd, b, 0, 1, at);
      b[0] ^= 0x5a;
      fs.writeSync(fd, b, 0, 1, at);
    }
    fs.closeSync(fd);
    const target = path.join(shm, 'fd-target');
    const t = fs.openSync(target, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_TRUNC, 0o600);
    try {
      const r = await runHelper(['restore', '--jobs', '2', '--job-size', '2M', '--image', corrupt, '--ram', 'a=fd:3'], ['ignore', 'ignore', 'pipe', t]);
      expect({ code: r.code, last: lastLine(r.stderr) }).toEqual({ code: 1, last: expect.stringMatching(/chunk [02] .*\(EIMG_CHECKSUM\)$/) });
      // Before: every other job was read and written first (60 MiB).
      expect(fs.fstatSync(t).blocks * 512).toBe(0);
    } finally {
      fs.closeSync(t);
    }
  });
});
