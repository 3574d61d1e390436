/**
 * Issue "trust the data path", image form: every input is checked before the first byte is
 * written, and a refused or failed restore leaves every pre-existing RAM target exactly as it
 * was (and no temporary file behind). Each test here failed on the code before the fix.
 */
import { spawn } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { native } from '../src/native';
import { createRamFile, fillPattern, filesEqual, sha256File } from '../bench/lib/ram-file';
import { IOHELPER, lastLine, runHelper } from './support/cli';
import { describeAsRoot, mountFs } from './support/mounts';

const M = 1024 * 1024;
const DEVICE_STATE = crypto.randomBytes(3 * M + 5);
let dir: string;
let shmDir: string;
let image: string;
const SRC = { a: '', b: '' };

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-trust-'));
  shmDir = fs.mkdtempSync('/dev/shm/iohelper-trust-');
  SRC.a = path.join(shmDir, 'src-a');
  SRC.b = path.join(shmDir, 'src-b');
  createRamFile(SRC.a, 16 * M);
  fillPattern(SRC.a, 5, 0.25);
  createRamFile(SRC.b, 8 * M);
  fillPattern(SRC.b, 6, 0.25);
  image = path.join(dir, 'good.img');
  const r = await runHelper(['save', '--no-stream-check', '--image', image, '--ram', `a=${SRC.a}`, '--ram', `b=${SRC.b}`], [DEVICE_STATE, 'ignore']);
  expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.rmSync(shmDir, { recursive: true, force: true });
});

/** An existing RAM target of the right size with content of its own; returns its hash. */
async function existingTarget(name: string, size: number, seed: number): Promise<{ path: string; hash: string }> {
  const p = path.join(shmDir, name);
  createRamFile(p, size);
  fillPattern(p, seed, 0.1);
  return { path: p, hash: await sha256File(p) };
}

/** Files in the directory that look like our temporaries. */
const temporaries = (d: string) => fs.readdirSync(d).filter((f) => f.includes('.iohelper-'));

describe('restore leaves pre-existing RAM targets as they were when it is refused or fails', () => {
  test('a later target that is refused (read-only fd) does not let an earlier one be written', async () => {
    const a = await existingTarget('ro-a', 16 * M, 11);
    const bFile = path.join(shmDir, 'ro-b');
    fs.writeFileSync(bFile, '');
    const bFd = fs.openSync(bFile, 'r');
    try {
      const r = await runHelper(['restore', '--image', image, '--ram', `a=${a.path}`, '--ram', 'b=fd:3'], ['ignore', 'ignore', 'pipe', bFd]);
      expect(r.code).toBe(1);
      expect(lastLine(r.stderr)).toMatch(/fd:3.*must be open read-write.*\(EBADF\)/);
    } finally {
      fs.closeSync(bFd);
    }
    expect(await sha256File(a.path)).toBe(a.hash);
    expect(temporaries(shmDir)).toEqual([]);
  });

  test('a corrupted chunk: the existing targets keep their content, no temporary is left', async () => {
    const bad = path.join(dir, 'corrupt.img');
    fs.copyFileSync(image, bad);
    // Flip a byte inside block a's data (its offset is in the block table: use inspect).
    const info = JSON.parse((await runHelper(['inspect', bad, '--json'], ['ignore', 'pipe'])).stdout.toString());
    const fd = fs.openSync(bad, 'r+');
    const at = info.blocks[0].offset + 4096 * 3 + 17;
    const byte = Buffer.alloc(1);
    fs.readSync(fd, byte, 0, 1, at);
    byte[0] ^= 0x40;
    fs.writeSync(fd, byte, 0, 1, at);
    fs.closeSync(fd);
    const a = await existingTarget('corrupt-a', 16 * M, 12);
    const b = await existingTarget('corrupt-b', 8 * M, 13);
    const r = await runHelper(['restore', '--image', bad, '--ram', `a=${a.path}`, '--ram', `b=${b.path}`], ['ignore', 'pipe']);
    expect(r.code).toBe(1);
    expect(lastLine(r.stderr)).toMatch(/corrupted: block 'a' chunk .*no RAM file was changed/);
    expect(r.stdout.length).toBe(0);
    expect(await sha256File(a.path)).toBe(a.hash);
    expect(await sha256File(b.path)).toBe(b.hash);
    expect(temporaries(shmDir)).toEqual([]);
  });

  test('the same file twice (two names, one path) is refused', async () => {
    const t = await existingTarget('twice', 16 * M, 14);
    const r = await runHelper(['restore', '--image', image, '--ram', `a=${t.path}`, '--ram', `b=${t.path}`], ['ignore', 'ignore']);
    expect(r.code).toBe(1);
    expect(lastLine(r.stderr)).toMatch(/are the same file.*\(EINVAL\)/);
    expect(await sha256File(t.path)).toBe(t.hash);
    const absent = path.join(shmDir, 'twice-absent');
    const r2 = await runHelper(['restore', '--image', image, '--ram', `a=${absent}`, '--ram', `b=${shmDir}/./twice-absent`], ['ignore', 'ignore']);
    expect(r2.code).toBe(1);
    expect(lastLine(r2.stderr)).toMatch(/are the same file/);
    expect(fs.existsSync(absent)).toBe(false);
  });

  test('the image itself as a RAM target is refused', async () => {
    const copy = path.join(shmDir, 'img-as-ram.img');
    fs.copyFileSync(image, copy);
    const hash = await sha256File(copy);
    const r = await runHelper(['restore', '--image', copy, '--ram', `a=${copy}`, '--ram', `b=${path.join(shmDir, 'x-b')}`], ['ignore', 'ignore']);
    expect(r.code).toBe(1);
    expect(lastLine(r.stderr)).toMatch(/same file/);
    expect(await sha256File(copy)).toBe(hash);
  });

  test('a hard-linked target holding data is refused unless --force; with --force this name gets the block, the other keeps the old content', async () => {
    const t = await existingTarget('linked', 16 * M, 15);
    const other = path.join(shmDir, 'linked-other-name');
    fs.linkSync(t.path, other);
    const b = path.join(shmDir, 'linked-b');
    const r = await runHelper(['restore', '--image', image, '--ram', `a=${t.path}`, '--ram', `b=${b}`], ['ignore', 'ignore']);
    expect(r.code).toBe(1);
    expect(lastLine(r.stderr)).toMatch(/2 hard links: it holds data, so the restore would put a new file under this name and leave the old content under the others \(--force to allow\).*\(EMLINK\)/);
    expect(await sha256File(other)).toBe(t.hash);
    expect(fs.existsSync(b)).toBe(false);
    const forced = await runHelper(['restore', '--force', '--image', image, '--ram', `a=${t.path}`, '--ram', `b=${b}`], ['ignore', 'ignore']);
    expect({ code: forced.code, stderr: forced.stderr }).toEqual({ code: 0, stderr: '' });
    expect(await filesEqual(SRC.a, t.path)).toEqual({ equal: true });
    expect(await sha256File(other)).toBe(t.hash);
  });

  test('a restore that is interrupted while writing the device state says so (ECANCELED), not a truncated image', async () => {
    const a = path.join(shmDir, 'int-a');
    const b = path.join(shmDir, 'int-b');
    const [readyR, readyW] = native.pipe();
    const [outR, outW] = native.pipe(); // nobody reads: the device state blocks in the pipe
    const child = spawn(process.execPath, [IOHELPER, 'restore', '--image', image, '--ram', `a=${a}`, '--ram', `b=${b}`, '--ready-fd', '3'], { stdio: ['ignore', outW, 'pipe', readyW] });
    fs.closeSync(readyW);
    fs.closeSync(outW);
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    const ready = Buffer.alloc(6);
    fs.readSync(readyR, ready);
    expect(ready.toString()).toBe('ready\n');
    // Any moment after "ready" is inside the device-state copy (nobody reads the pipe).
    child.kill('SIGTERM');
    const code = await new Promise((r) => child.on('close', r));
    fs.closeSync(readyR);
    fs.closeSync(outR);
    expect(code).toBe(1);
    // The RAM files are final by then: the message must not say they were left alone.
    expect(stderr).toMatch(/restore interrupted while writing the device state; the RAM files hold the restored blocks, but QEMU did not get the whole device state.*\(ECANCELED\)\n$/);
    expect(stderr).not.toMatch(/no RAM file was/);
    expect(stderr).not.toMatch(/EIMG_TRUNCATED/);
  });
});

describeAsRoot('restore into a RAM filesystem without room', () => {
  test('ENOSPC on the RAM target before any write; the existing target is unchanged', async () => {
    const m = mountFs('tmpfs', 'size=20m');
    try {
      const a = path.join(m.dir, 'a');
      createRamFile(a, 16 * M);
      fillPattern(a, 16, 0.1);
      const hash = await sha256File(a);
      const r = await runHelper(['restore', '--image', image, '--ram', `a=${a}`, '--ram', `b=${path.join(m.dir, 'b')}`], ['ignore', 'ignore']);
      expect(r.code).toBe(1);
      expect(lastLine(r.stderr)).toMatch(/no space left for the RAM of .*\/a.*\(ENOSPC\)/);
      expect(await sha256File(a)).toBe(hash);
      expect(fs.readdirSync(m.dir)).toEqual(['a']);
    } finally {
      m.unmount();
    }
  });
});

describe('restore fills RAM files at their own offsets, holes kept', () => {
  test('an O_APPEND RAM fd target is filled at the right offsets (a pwrite-based fill would append)', async () => {
    const targets = ['append-a', 'append-b'].map((n) => path.join(shmDir, n));
    const fds = targets.map((t) => fs.openSync(t, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_TRUNC | fs.constants.O_APPEND, 0o600));
    try {
      const r = await runHelper(['restore', '--image', image, '--ram', 'a=fd:3', '--ram', 'b=fd:4'], ['ignore', 'ignore', 'pipe', ...fds]);
      expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
    } finally {
      fds.forEach((fd) => fs.closeSync(fd));
    }
    expect(await filesEqual(SRC.a, targets[0])).toEqual({ equal: true });
    expect(await filesEqual(SRC.b, targets[1])).toEqual({ equal: true });
  });

  test('a restored tmpfs target keeps holes where the image has them', async () => {
    const sparseSrc = path.join(shmDir, 'sparse-src');
    createRamFile(sparseSrc, 16 * M);
    const fd = fs.openSync(sparseSrc, 'r+');
    fs.writeSync(fd, crypto.randomBytes(M), 0, M, 5 * M);
    fs.closeSync(fd);
    const img = path.join(dir, 'sparse.img');
    const saved = await runHelper(['save', '--no-stream-check', '--image', img, '--ram', `a=${sparseSrc}`], [DEVICE_STATE, 'ignore']);
    expect(saved.code).toBe(0);
    const back = path.join(shmDir, 'sparse-back');
    const r = await runHelper(['restore', '--image', img, '--ram', `a=${back}`], ['ignore', 'ignore']);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
    expect(await filesEqual(sparseSrc, back)).toEqual({ equal: true });
    expect(fs.statSync(back).blocks * 512).toBeLessThanOrEqual(2 * M);
  });
});

describe('save checks every input before it writes', () => {
  test('an O_APPEND image fd is refused and the file keeps its content', async () => {
    const out = path.join(dir, 'append.img');
    fs.writeFileSync(out, 'precious');
    const fd = fs.openSync(out, fs.constants.O_WRONLY | fs.constants.O_APPEND);
    const r = await runHelper(['save', '--no-stream-check', '--fd', '3', '--ram', `a=${SRC.a}`], [DEVICE_STATE, 'ignore', 'pipe', fd]);
    fs.closeSync(fd);
    expect(r.code).toBe(1);
    expect(lastLine(r.stderr)).toMatch(/O_APPEND.*\(EINVAL\)/);
    expect(fs.readFileSync(out, 'utf8')).toBe('precious');
  });

  test('the image and a RAM file being one file is refused: the guest RAM is kept', async () => {
    const ram = await existingTarget('self-save', 8 * M, 17);
    const r = await runHelper(['save', '--no-stream-check', '--image', ram.path, '--ram', `a=${ram.path}`], [DEVICE_STATE, 'ignore']);
    expect(r.code).toBe(1);
    expect(lastLine(r.stderr)).toMatch(/same file.*\(EINVAL\)/);
    expect(await sha256File(ram.path)).toBe(ram.hash);
  });

  test('an image fd opened with O_DIRECT works without --direct (the fd says)', async () => {
    const out = path.join(dir, 'odirect.img');
    const fd = fs.openSync(out, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | fs.constants.O_DIRECT, 0o600);
    const r = await runHelper(['save', '--no-stream-check', '--fd', '3', '--ram', `a=${SRC.a}`, '--ram', `b=${SRC.b}`], [DEVICE_STATE, 'ignore', 'pipe', fd]);
    fs.closeSync(fd);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
    const a = path.join(shmDir, 'odirect-a');
    const b = path.join(shmDir, 'odirect-b');
    const back = await runHelper(['restore', '--image', out, '--ram', `a=${a}`, '--ram', `b=${b}`], ['ignore', 'pipe']);
    expect(back.code).toBe(0);
    expect(back.stdout.equals(DEVICE_STATE)).toBe(true);
    expect(await filesEqual(SRC.a, a)).toEqual({ equal: true });
  });

  test('a layout the reader would refuse is refused before the image is touched (1025 blocks; > 2^24 checksums)', async () => {
    const out = path.join(dir, 'limits.img');
    fs.writeFileSync(out, 'old image');
    const many = path.join(shmDir, 'many');
    fs.mkdirSync(many);
    const rams = Array.from({ length: 1025 }, (_, i) => {
      const p = path.join(many, `r${i}`);
      createRamFile(p, 4096);
      return ['--ram', `r${i}=${p}`];
    }).flat();
    const r = await runHelper(['save', '--no-stream-check', '--image', out, ...rams], [DEVICE_STATE, 'ignore']);
    expect(r.code).toBe(1);
    expect(lastLine(r.stderr)).toMatch(/1025 RAM blocks: an image holds 1\.\.1024/);
    expect(fs.readFileSync(out, 'utf8')).toBe('old image');
    // 64 GiB + 4 KiB of sparse RAM in 4 KiB chunks: 2^24 + 1 checksums.
    const big = path.join(shmDir, 'big');
    createRamFile(big, 64 * 1024 * M + 4096);
    const r2 = await runHelper(['save', '--no-stream-check', '--image', out, '--chunk', '4K', '--ram', `big=${big}`], [DEVICE_STATE, 'ignore']);
    fs.rmSync(big);
    expect(r2.code).toBe(1);
    expect(lastLine(r2.stderr)).toMatch(/checksums exceed the reader's limit/);
    expect(fs.readFileSync(out, 'utf8')).toBe('old image');
  });

  test('a FIFO named as a RAM file is refused at once (the open never blocks)', async () => {
    const fifo = path.join(dir, 'fifo');
    require('child_process').execFileSync('mkfifo', [fifo]);
    const t0 = Date.now();
    const r = await runHelper(['save', '--no-stream-check', '--image', path.join(dir, 'fifo.img'), '--ram', `a=${fifo}`], [DEVICE_STATE, 'ignore']);
    expect(r.code).toBe(1);
    expect(lastLine(r.stderr)).toMatch(/is a FIFO, not a regular file/);
    expect(Date.now() - t0).toBeLessThan(20000);
  });
});

describe('inspect of hostile metadata', () => {
  test('control characters in block names are shown escaped; a createdMs no Date can hold does not crash inspect', async () => {
    const { save } = await import('../src/image/save');
    const { decodeHeader, encodeHeader, HEADER_SIZE } = await import('../src/image/format');
    const out = path.join(dir, 'hostile-names.img');
    const fd = fs.openSync(out, 'w+');
    const [r, w] = native.pipe();
    fs.writeSync(w, Buffer.alloc(100, 1));
    fs.closeSync(w);
    await save({ imageFd: fd, ram: [{ name: 'a\x1b[2Jb\x07', path: SRC.b }], deviceStateFd: r, checkDeviceState: false, jobs: 1 });
    fs.closeSync(r);
    const head = Buffer.alloc(HEADER_SIZE);
    fs.readSync(fd, head, 0, HEADER_SIZE, 0);
    const h = decodeHeader(head, fs.fstatSync(fd).size);
    fs.writeSync(fd, encodeHeader({ ...h, createdMs: Number.MAX_SAFE_INTEGER }), 0, HEADER_SIZE, 0);
    fs.closeSync(fd);
    const res = await runHelper(['inspect', out], ['ignore', 'pipe']);
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    const text = res.stdout.toString();
    expect(text).toContain('block a\\x1b[2Jb\\x07:');
    expect(text).not.toMatch(/[\x00-\x08\x0b-\x1f]/);
    expect(text).toContain(`invalid (${Number.MAX_SAFE_INTEGER} ms)`);
  });
});
