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
import { restore } from '../src/image/restore';
import { save } from '../src/image/save';
import { native } from '../src/native';
import { IOHELPER, lastLine, runHelper } from './support/cli';
import { describeAsRoot, FreezableMount, mountLoopExt4 } from './support/mounts';

const M = 1024 * 1024;
const RAM = 64 * M;
let shm: string;
let src: string;
let image: string;
/** The same RAM as a compressed image (its chunks restored by native/chunk_codec.cc, not ram_copy.cc). */
let compressed: string;

beforeAll(async () => {
  shm = fs.mkdtempSync('/dev/shm/iohelper-interrupt-');
  src = path.join(shm, 'src');
  createRamFile(src, RAM);
  fillPattern(src, 31, 0); // data in every page: every job has bytes to write
  image = path.join(shm, 'good.img');
  const r = await runHelper(['save', '--no-stream-check', '--chunk', '1M', '--image', image, '--ram', `a=${src}`], [crypto.randomBytes(10000), 'ignore']);
  expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
  compressed = path.join(shm, 'compressed.img');
  const z = await runHelper(['save', '--no-stream-check', '--compress', '--chunk', '1M', '--image', compressed, '--ram', `a=${src}`], [crypto.randomBytes(10000), 'ignore']);
  expect({ code: z.code, stderr: z.stderr }).toEqual({ code: 0, stderr: '' });
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

/** Whether `child`'s main thread is in write(fd); throws if it has exited (it never will be). */
function blockedWriting(child: ChildProcess, fd: number): boolean {
  if (child.exitCode !== null) throw new Error(`the helper exited (${child.exitCode}) before it blocked writing fd ${fd}`);
  return syscallOf(child.pid!).startsWith(`1 0x${fd.toString(16)} `);
}

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

/** Threads of this process in uninterruptible sleep (state D: here, writes waiting on a frozen filesystem). */
const threadsBlocked = () =>
  fs.readdirSync('/proc/self/task').filter((tid) => {
    try {
      const stat = fs.readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      return stat.slice(stat.lastIndexOf(')') + 2).startsWith('D');
    } catch {
      return false; // a thread that just ended
    }
  }).length;

function exited(child: ChildProcess): Promise<{ code: number | null; stderr: string }> {
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stderr })));
}

describeAsRoot('an interrupt while the last jobs run commits nothing', () => {
  let ext4: FreezableMount;
  beforeAll(() => {
    ext4 = mountLoopExt4(512 * M);
  });
  afterAll(() => ext4?.unmount());
  // Each test's files go after it: the filesystem holds a few RAM files, not all of them.
  afterEach(() => {
    for (const f of fs.readdirSync(ext4.dir)) if (f !== 'lost+found') fs.rmSync(path.join(ext4.dir, f), { force: true });
  });
  const ours = () => fs.readdirSync(ext4.dir).filter((f) => f.includes('.iohelper-'));

  test.each([
    ['mappable', () => image],
    ['compressed', () => compressed],
  ])('restore of a %s image (CLI, SIGINT): a target that holds data is left as it was, and no temporary is left', async (kind, imageOf) => {
    const target = path.join(ext4.dir, 'ram');
    createRamFile(target, RAM);
    fillPattern(target, 9, 0);
    const before = await sha256File(target);
    // --planned-fd is a pipe the test has filled: the restore's "planned" line (written once
    // the targets are staged, just before the jobs are handed out) waits until the test has
    // frozen the target's filesystem and reads the pipe.
    const planned = fullPipe(`planned-${kind}`);
    const child = spawn(process.execPath, [IOHELPER, 'restore', '--jobs', '4', '--job-size', '16M', '--planned-fd', '3', '--image', imageOf(), '--ram', `a=${target}`], {
      stdio: ['ignore', 'ignore', 'pipe', planned.childEnd],
    });
    fs.closeSync(planned.childEnd);
    const result = exited(child);
    try {
      await until('the restore writes its planned line', () => blockedWriting(child, 3));
      ext4.freeze();
      try {
        await until('the planned line is read', () => {
          planned.drain();
          return !blockedWriting(child, 3);
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

  /**
   * The one place the library tests step in: runPool, the real one, runs with the filesystem
   * frozen, so every job waits in its first write; once all of them wait there the test aborts
   * (as SIGTERM does) and thaws. `before` runs first; `settled` gets the fd the jobs wrote,
   * once they all ended. Without cancellation they would each run out their 16 MiB range.
   */
  function holdJobsThenAbort(abort: AbortController, writtenFd: (o: pool.PoolRun) => number, before?: () => Promise<unknown>) {
    const realRun = pool.runPool;
    const counted = { bytes: -1 };
    const spy = jest.spyOn(pool, 'runPool').mockImplementation(async (o) => {
      await before?.();
      ext4.freeze();
      try {
        const run = realRun(o);
        run.catch(() => undefined); // awaited below, after the thaw
        await until('every job waits in its first write', () => threadsBlocked() >= o.tasks.length);
        abort.abort();
        ext4.thaw();
        try {
          return await run;
        } finally {
          counted.bytes = fs.fstatSync(writtenFd(o)).blocks * 512;
        }
      } finally {
        ext4.thaw();
      }
    });
    return { spy, counted };
  }

  test('save (library, abort): the jobs in flight are cancelled, the image is left as it was, nothing is committed', async () => {
    const target = path.join(ext4.dir, 'saved.img');
    fs.copyFileSync(image, target);
    const before = await sha256File(target);
    const staged = createReplacement(target);
    const abort = new AbortController();
    // The device state is complete before the jobs are held, as a QEMU that finished sending leaves it.
    let deviceState: Promise<unknown> | undefined;
    const realStream = deviceStateIo.streamDeviceState;
    const streamSpy = jest.spyOn(deviceStateIo, 'streamDeviceState').mockImplementation((o) => (deviceState = realStream(o)));
    const { spy, counted } = holdJobsThenAbort(abort, () => staged.fd, async () => deviceState);
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
      expect(spy).toHaveBeenCalledTimes(1);
      // Each job ended after the write it waited in (8 MiB at most): half the RAM, not all of it.
      expect(counted.bytes).toBeGreaterThan(0);
      expect(counted.bytes).toBeLessThanOrEqual(RAM / 2 + M);
    } finally {
      staged.discard();
      streamSpy.mockRestore();
      spy.mockRestore();
      fs.closeSync(r);
    }
    expect(await sha256File(target)).toBe(before);
    expect(ours()).toEqual([]);
  });

  test.each([
    ['mappable', () => image],
    ['compressed', () => compressed],
  ])('restore of a %s image (library, abort): the jobs in flight are cancelled, the target is left as it was', async (_kind, imageOf) => {
    const target = path.join(ext4.dir, 'ram-lib');
    createRamFile(target, RAM);
    fillPattern(target, 11, 0);
    const before = await sha256File(target);
    const abort = new AbortController();
    const { spy, counted } = holdJobsThenAbort(abort, (o) => (o.tasks[0].job as { ramFd: number }).ramFd);
    const imageFd = fs.openSync(imageOf(), 'r');
    const devNull = fs.openSync('/dev/null', 'w');
    try {
      const restoring = restore({ imageFd, imageName: imageOf(), ram: [{ name: 'a', path: target }], deviceStateFd: devNull, jobs: 4, jobSize: 16 * M, signal: abort.signal });
      await expect(restoring).rejects.toMatchObject({ code: 'ECANCELED', message: expect.stringMatching(/restore interrupted; no RAM file was changed/) });
      // Each job ended after the write it waited in (8 MiB at most), into the temporary.
      expect(counted.bytes).toBeGreaterThan(0);
      expect(counted.bytes).toBeLessThanOrEqual(RAM / 2);
    } finally {
      spy.mockRestore();
      fs.closeSync(imageFd);
      fs.closeSync(devNull);
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
    await until('the save blocks writing progress', () => blockedWriting(child, 3));
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

describeAsRoot("a killed restore over another user's file", () => {
  test('its temporary is root\'s and 0600 until the commit, so the next run removes it; a commit gives the target its owner and mode back', async () => {
    const target = path.join(shm, 'theirs.ram');
    createRamFile(target, RAM);
    fillPattern(target, 5, 0);
    fs.chownSync(target, 65534, 65534);
    fs.chmodSync(target, 0o640);
    const planned = fullPipe('planned-killed');
    const child = spawn(process.execPath, [IOHELPER, 'restore', '--planned-fd', '3', '--image', image, '--ram', `a=${target}`], { stdio: ['ignore', 'ignore', 'pipe', planned.childEnd] });
    fs.closeSync(planned.childEnd);
    const result = exited(child);
    let temporary: string;
    try {
      // Staged (the temporary exists), not yet committed: the "planned" line waits in the full pipe.
      await until('the restore writes its planned line', () => blockedWriting(child, 3));
      [temporary] = fs.readdirSync(shm).filter((f) => f.startsWith('.theirs.ram.iohelper-'));
      const st = fs.statSync(path.join(shm, temporary));
      expect({ uid: st.uid, mode: (st.mode & 0o7777).toString(8) }).toEqual({ uid: 0, mode: '600' });
      child.kill('SIGKILL');
      await result;
    } finally {
      child.kill('SIGKILL');
      planned.close();
    }
    const r = await runHelper(['restore', '--image', image, '--ram', `a=${target}`], ['ignore', 'ignore']);
    expect(r.code).toBe(0);
    expect(r.stderr.toString()).toContain(`removed ${path.join(shm, temporary!)}`);
    expect(fs.readdirSync(shm).filter((f) => f.includes('.iohelper-'))).toEqual([]);
    const st = fs.statSync(target);
    expect({ uid: st.uid, gid: st.gid, mode: (st.mode & 0o7777).toString(8) }).toEqual({ uid: 65534, gid: 65534, mode: '640' });
    expect(await sha256File(target)).toBe(await sha256File(src));
  });
});

