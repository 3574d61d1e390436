/**
 * A save by path that dies or is interrupted leaves the previous image as it was (the new one is
 * written beside it and renamed over it only when committed); a save into an fd, written in
 * place, leaves an image every reader refuses. A refused restore leaves the RAM files alone.
 * A device-state stream QEMU cut short: image-faults-qemu.test.ts.
 */
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { sha256File } from '../bench/lib/ram-file';
import { IOHELPER, lastLine, runHelper } from './support/cli';
import { expectRefused, faultScratch, temporaries } from './support/image-faults';

const scratch = faultScratch('faults');
const ram = scratch.ram;

/**
 * Starts a save whose device-state stream stays open (QEMU still "migrating"): by path (a new
 * file renamed over `image` when complete) or, with `fd`, into `image` opened by us and passed
 * as fd 3 (written in place, as a manager's fd is). Progress lines come on the last fd.
 */
function startSave(image: string, opts: { fd?: boolean } = {}) {
  const imageFd = opts.fd ? fs.openSync(image, fs.constants.O_WRONLY | fs.constants.O_CREAT, 0o600) : undefined;
  const target = imageFd === undefined ? ['--image', image] : ['--fd', '3', '--name', image];
  const progressFd = imageFd === undefined ? 3 : 4;
  const stdio = ['pipe', 'ignore', 'pipe', ...(imageFd === undefined ? [] : [imageFd]), 'pipe'];
  const child = spawn(process.execPath, [IOHELPER, 'save', '--no-stream-check', ...target, '--jobs', '1', '--min-hole', '4K', '--ram', `ram0=${ram}`, `--progress=${progressFd}`], { stdio: stdio as never });
  if (imageFd !== undefined) fs.closeSync(imageFd);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  let progressText = '';
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stderr })));
  // "In the middle" is after the first RAM bytes were written: throws if the save ends or
  // 30 s pass without getting there.
  const progressed = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the save wrote no RAM bytes in 30 s; progress: ${progressText || 'none'}; stderr: ${stderr}`)), 30000);
    (child.stdio[progressFd] as NodeJS.ReadableStream).on('data', (d: Buffer) => {
      progressText += d.toString();
      if (/"bytes":[1-9]/.test(progressText)) {
        clearTimeout(timer);
        resolve();
      }
    });
    void done.then((r) => {
      clearTimeout(timer);
      reject(new Error(`the save ended (exit ${r.code ?? r.signal}) before it wrote any RAM bytes; progress: ${progressText || 'none'}; stderr: ${r.stderr}`));
    });
  });
  progressed.catch(() => undefined); // a test that never waits for it must not see it reject
  child.stdin!.on('error', () => undefined);
  child.stdin!.write(Buffer.alloc(64 * 1024, 0x51));
  return { child, done, progressed };
}

/** A committed image of `ram` at `image` (device state: 64 KiB of 0x52). */
async function committedImage(image: string): Promise<string> {
  const r = await runHelper(['save', '--no-stream-check', '--image', image, '--ram', `ram0=${ram}`], [Buffer.alloc(64 * 1024, 0x52), 'ignore']);
  expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
  return sha256File(image);
}

describe('a save by path (--image) over a committed image', () => {
  test.each(['SIGINT', 'SIGTERM'] as const)('%s mid-save: exit 1, the old image byte for byte, no temporary left', async (sig) => {
    const image = path.join(scratch.dir, `keep-${sig}.img`);
    const hash = await committedImage(image);
    const s = startSave(image);
    await s.progressed;
    s.child.kill(sig);
    const r = await s.done;
    expect({ code: r.code, signal: r.signal }).toEqual({ code: 1, signal: null });
    expect(lastLine(r.stderr)).toMatch(/interrupted; .*keep-SIG\w+\.img is left as it was \(ECANCELED\)$/);
    expect(await sha256File(image)).toBe(hash);
    expect(temporaries(image)).toEqual([]);
    const info = await runHelper(['inspect', image], ['ignore', 'pipe']);
    expect(info.code).toBe(0);
    expect(info.stdout.toString()).toMatch(/committed/);
  });

  test('SIGKILL mid-save: the old image byte for byte; only a hidden .NAME.iohelper-PID-HEX temporary is left', async () => {
    const image = path.join(scratch.dir, 'keep-kill.img');
    const hash = await committedImage(image);
    const s = startSave(image);
    await s.progressed;
    s.child.kill('SIGKILL');
    expect((await s.done).signal).toBe('SIGKILL');
    expect(await sha256File(image)).toBe(hash);
    expect(temporaries(image)).toEqual([expect.stringMatching(new RegExp(`^\\.keep-kill\\.img\\.iohelper-${s.child.pid}-[0-9a-f]{8}$`))]);
    for (const t of temporaries(image)) fs.rmSync(path.join(scratch.dir, t));
  });

  test('a reader that maps the old image keeps its pages while a new image replaces it', async () => {
    const image = path.join(scratch.dir, 'mapped.img');
    const hash = await committedImage(image);
    // A private read-only mapping of the whole file, as a lazy restore's or a clone's QEMU has;
    // on each input line it prints the SHA-256 of the mapped bytes.
    const reader = spawn('python3', ['-c', [
      'import hashlib, mmap, sys',
      `f = open(${JSON.stringify(image)}, "rb")`,
      'm = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)',
      'f.close()',
      'for _ in sys.stdin:',
      '    print(hashlib.sha256(m).hexdigest(), flush=True)',
    ].join('\n')], { stdio: ['pipe', 'pipe', 'inherit'] });
    const lines: string[] = [];
    let waiting: (() => void) | undefined;
    reader.stdout!.on('data', (d: Buffer) => {
      lines.push(...d.toString().split('\n').filter(Boolean));
      waiting?.();
    });
    const exited = new Promise<number | null>((resolve) => reader.on('close', (code) => {
      waiting?.();
      resolve(code);
    }));
    const ask = async () => {
      const n = lines.length;
      reader.stdin!.write('hash\n');
      while (lines.length === n && reader.exitCode === null && reader.signalCode === null) await new Promise<void>((r) => (waiting = r));
      return lines[n];
    };
    try {
      expect(await ask()).toBe(hash);
      const s = startSave(image);
      await s.progressed;
      s.child.stdin!.end(); // the device state ends: the save commits
      expect(await s.done).toMatchObject({ code: 0 });
      expect(await sha256File(image)).not.toBe(hash);
      expect(await ask()).toBe(hash);
    } finally {
      reader.stdin!.end();
      await exited;
    }
  });
});

describe('a save into an fd (--fd) is written in place', () => {
  test('SIGKILL in the middle of a save: the image is incomplete and refused', async () => {
    const image = path.join(scratch.dir, 'killed.img');
    const s = startSave(image, { fd: true });
    await s.progressed;
    s.child.kill('SIGKILL');
    expect((await s.done).signal).toBe('SIGKILL');
    await expectRefused(image, ram);
  });

  test.each(['SIGINT', 'SIGTERM'] as const)('%s during a save: exit 1, image left incomplete, nothing removed', async (sig) => {
    const image = path.join(scratch.dir, `${sig}.img`);
    const s = startSave(image, { fd: true });
    await s.progressed;
    s.child.kill(sig);
    const r = await s.done;
    expect(r.signal).toBeNull();
    expect(r.code).toBe(1);
    expect(lastLine(r.stderr)).toMatch(/interrupted; .* is left incomplete \(ECANCELED\)$/);
    expect(fs.existsSync(image)).toBe(true);
    expect(fs.existsSync(ram)).toBe(true);
    await expectRefused(image, ram);
  });
});
