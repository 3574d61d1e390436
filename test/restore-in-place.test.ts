/**
 * Which way a restore fills each RAM target (src/image/restore-targets.ts): a fresh target
 * (absent, empty, all holes) in place, so whoever maps it sees the restored bytes, and put back
 * as it was when the restore fails; a target holding data through a temporary renamed over it,
 * refused while another process has it open or mapped (it would keep the old memory).
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { createRamFile, fillPattern, filesEqual, sha256File } from '../bench/lib/ram-file';
import { lastLine, runHelper } from './support/cli';

const M = 1024 * 1024;
let dir: string;
let shmDir: string;
let image: string;
let corrupt: string;
let src: string;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-in-place-'));
  shmDir = fs.mkdtempSync('/dev/shm/iohelper-in-place-');
  src = path.join(shmDir, 'src');
  createRamFile(src, 16 * M);
  fillPattern(src, 21, 0.25);
  image = path.join(dir, 'good.img');
  const r = await runHelper(['save', '--no-stream-check', '--image', image, '--ram', `a=${src}`], [crypto.randomBytes(4096), 'ignore']);
  expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
  // The last chunk corrupted: every chunk before it has been filled when the restore notices.
  corrupt = path.join(dir, 'corrupt.img');
  fs.copyFileSync(image, corrupt);
  const info = JSON.parse((await runHelper(['inspect', corrupt, '--json'], ['ignore', 'pipe'])).stdout.toString());
  const fd = fs.openSync(corrupt, 'r+');
  const at = info.blocks[0].offset + 16 * M - 4096 * 2 + 9;
  const b = Buffer.alloc(1);
  fs.readSync(fd, b, 0, 1, at);
  b[0] ^= 0x11;
  fs.writeSync(fd, b, 0, 1, at);
  fs.closeSync(fd);
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.rmSync(shmDir, { recursive: true, force: true });
});

const temporaries = () => fs.readdirSync(shmDir).filter((f) => f.includes('.iohelper-'));
const restore = (img: string, target: string, extra: string[] = []) => runHelper(['restore', ...extra, '--image', img, '--ram', `a=${target}`], ['ignore', 'ignore']);

describe('fresh targets are filled in place', () => {
  test('an all-holes target that another process has open gets the block in the same file (it sees every byte)', async () => {
    const t = path.join(shmDir, 'holes-open');
    createRamFile(t, 16 * M);
    expect(fs.statSync(t).blocks).toBe(0);
    const fd = fs.openSync(t, 'r'); // as a QEMU waiting for the stream keeps its RAM file
    try {
      const r = await restore(image, t);
      expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
      expect(fs.fstatSync(fd).ino).toBe(fs.statSync(t).ino);
      expect(await filesEqual(src, `/proc/self/fd/${fd}`)).toEqual({ equal: true });
    } finally {
      fs.closeSync(fd);
    }
  });

  test('an empty target is filled in place (same inode)', async () => {
    const t = path.join(shmDir, 'empty');
    fs.writeFileSync(t, '');
    const ino = fs.statSync(t).ino;
    const r = await restore(image, t);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
    expect(fs.statSync(t).ino).toBe(ino);
    expect(await filesEqual(src, t)).toEqual({ equal: true });
  });

  test('a failed restore puts an all-holes target back: same inode, same size, nothing allocated', async () => {
    const t = path.join(shmDir, 'holes-fail');
    createRamFile(t, 16 * M);
    const before = fs.statSync(t);
    const r = await restore(corrupt, t);
    expect(r.code).toBe(1);
    expect(lastLine(r.stderr)).toMatch(/corrupted: block 'a' chunk 1 .*no RAM file was changed.*\(EIMG_CHECKSUM\)$/);
    const after = fs.statSync(t);
    expect({ ino: after.ino, size: after.size, blocks: after.blocks }).toEqual({ ino: before.ino, size: before.size, blocks: 0 });
    expect(temporaries()).toEqual([]);
  });

  test('a failed restore puts an empty target back to empty, and removes a target it created', async () => {
    const empty = path.join(shmDir, 'empty-fail');
    fs.writeFileSync(empty, '');
    const r = await restore(corrupt, empty);
    expect(r.code).toBe(1);
    expect(fs.statSync(empty).size).toBe(0);
    const absent = path.join(shmDir, 'absent-fail');
    const r2 = await restore(corrupt, absent);
    expect(r2.code).toBe(1);
    expect(fs.existsSync(absent)).toBe(false);
    expect(temporaries()).toEqual([]);
  });

  test('a hard-linked all-holes target with --force: both names hold the block (one file, filled in place)', async () => {
    const t = path.join(shmDir, 'holes-linked');
    createRamFile(t, 16 * M);
    const other = path.join(shmDir, 'holes-linked-other');
    fs.linkSync(t, other);
    const refused = await restore(image, t);
    expect(refused.code).toBe(1);
    expect(lastLine(refused.stderr)).toMatch(/2 hard links: restoring fills it in place, so its other names get the restored block too \(--force to allow\)/);
    const r = await restore(image, t, ['--force']);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
    expect(await filesEqual(src, other)).toEqual({ equal: true });
  });
});

describe('targets holding data are replaced, never from under a process', () => {
  async function dataTarget(name: string): Promise<{ path: string; hash: string }> {
    const p = path.join(shmDir, name);
    createRamFile(p, 16 * M);
    fillPattern(p, 99, 0.1);
    return { path: p, hash: await sha256File(p) };
  }

  test('one that another process has open is refused (EBUSY), its content kept; the message says what to do', async () => {
    const t = await dataTarget('data-open');
    const fd = fs.openSync(t.path, 'r');
    try {
      const r = await restore(image, t.path);
      expect(r.code).toBe(1);
      expect(lastLine(r.stderr)).toMatch(new RegExp(`holds data and process ${process.pid} has it open or mapped.*would leave that process on the old memory.*fd:K.*\\(EBUSY\\)$`));
    } finally {
      fs.closeSync(fd);
    }
    expect(await sha256File(t.path)).toBe(t.hash);
    expect(temporaries()).toEqual([]);
  });

  test('one nobody has open is replaced (a new file under the name)', async () => {
    const t = await dataTarget('data-free');
    const ino = fs.statSync(t.path).ino;
    const r = await restore(image, t.path);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
    expect(fs.statSync(t.path).ino).not.toBe(ino);
    expect(await filesEqual(src, t.path)).toEqual({ equal: true });
  });
});
