/**
 * The stream helper through its CLI, with plain files: every size edge around the alignment,
 * both forms, with and without O_DIRECT, a manager-written header before the stream, and the
 * libvirt failure contract.
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawn } from 'child_process';
import { native } from '../src/native';
import { IOHELPER, lastLine, runHelper } from './support/cli';

const { O_DIRECT } = fs.constants;
let dir: string;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-stream-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function randomBytes(n: number, seed: number): Buffer {
  const out = Buffer.alloc(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** Saves `data` through the helper into a file opened with `flags`, returns the file's bytes. */
async function save(data: Buffer, opts: { direct: boolean; form: 'libvirt' | 'fd'; header?: Buffer }): Promise<Buffer> {
  const file = path.join(dir, `save-${crypto.randomUUID()}`);
  const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC, 0o600);
  try {
    if (opts.header) fs.writeSync(fd, opts.header);
    if (opts.direct && opts.form === 'libvirt') native.setFlags(fd, native.getFlags(fd) | O_DIRECT);
    const r =
      opts.form === 'libvirt'
        ? await runHelper([file, '1'], [data, fd])
        : await runHelper(['--fd', '3', '--name', file, ...(opts.direct ? ['--direct'] : [])], [data, 'ignore', 'pipe', fd] as never);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
  } finally {
    fs.closeSync(fd);
  }
  const out = fs.readFileSync(file);
  fs.unlinkSync(file);
  return out;
}

/** Restores the file's bytes from `start` through the helper; returns what came out of the pipe. */
async function restore(file: string, opts: { direct: boolean; form: 'libvirt' | 'fd'; start?: number }): Promise<Buffer> {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | (opts.direct && opts.form === 'libvirt' ? O_DIRECT : 0));
  try {
    if (opts.start) native.lseek(fd, opts.start, native.constants.SEEK_SET);
    const r =
      opts.form === 'libvirt'
        ? await runHelper([file, '0'], [fd, 'pipe'])
        : await runHelper(['--fd', '3', ...(opts.direct ? ['--direct'] : [])], ['ignore', 'pipe', 'pipe', fd] as never);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
    return r.stdout;
  } finally {
    fs.closeSync(fd);
  }
}

const M = 1024 * 1024;
const SIZES = [0, 1, 511, 4095, 4096, 4097, 65535, 65536, 65537, 4 * M - 1, 4 * M, 4 * M + 1, 9 * M + 12345];

describe.each([
  ['libvirt form', 'libvirt' as const],
  ['--fd form', 'fd' as const],
])('%s', (_name, form) => {
  test.each(SIZES)('O_DIRECT round trip of %i bytes is exact and truncated to size', async (size) => {
    const data = randomBytes(size, size + 7);
    const saved = await save(data, { direct: true, form });
    expect(saved.length).toBe(size);
    expect(saved.equals(data)).toBe(true);
    const file = path.join(dir, 'rt');
    fs.writeFileSync(file, saved);
    const back = await restore(file, { direct: true, form });
    expect(back.length).toBe(size);
    expect(back.equals(data)).toBe(true);
  });

  test.each([0, 4097, 4 * M + 1])('buffered round trip of %i bytes', async (size) => {
    const data = randomBytes(size, 99);
    const saved = await save(data, { direct: false, form });
    expect(saved.equals(data)).toBe(true);
    const file = path.join(dir, 'rtb');
    fs.writeFileSync(file, saved);
    expect((await restore(file, { direct: false, form })).equals(data)).toBe(true);
  });

  test('a libvirt-style header written first is kept and the stream follows it (unaligned start)', async () => {
    const header = Buffer.alloc(92 + 1000, 0x41);
    header.write('LibvirtQemudPart', 0, 'latin1');
    const data = randomBytes(3 * M + 333, 5);
    const saved = await save(data, { direct: true, form, header });
    expect(saved.length).toBe(header.length + data.length);
    expect(saved.subarray(0, header.length).equals(header)).toBe(true);
    expect(saved.subarray(header.length).equals(data)).toBe(true);
    const file = path.join(dir, 'hdr');
    fs.writeFileSync(file, saved);
    const back = await restore(file, { direct: true, form, start: header.length });
    expect(back.equals(data)).toBe(true);
  });
});

test('a 2.5 GiB sparse stream round-trips through O_DIRECT with offsets past 2^31 intact', async () => {
  const size = 2.5 * 1024 * M + 4097;
  const src = path.join(dir, 'sparse-src');
  const markers: Array<[number, string]> = [
    [0, 'start'],
    [2 ** 31 - 3, 'across-2^31'],
    [2 ** 31 + 4096, 'past-2^31'],
    [size - 5, 'tail!'],
  ];
  const fd = fs.openSync(src, 'w');
  fs.ftruncateSync(fd, size);
  for (const [off, text] of markers) fs.writeSync(fd, text, off);
  fs.closeSync(fd);

  const saved = path.join(dir, 'sparse-saved');
  const inFd = fs.openSync(src, 'r');
  const outFd = fs.openSync(saved, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | O_DIRECT, 0o600);
  const r = await runHelper([saved, '1'], [inFd, outFd]);
  fs.closeSync(inFd);
  fs.closeSync(outFd);
  expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
  expect(fs.statSync(saved).size).toBe(size);
  const check = fs.openSync(saved, 'r');
  for (const [off, text] of markers) {
    const b = Buffer.alloc(text.length);
    fs.readSync(check, b, 0, b.length, off);
    expect(b.toString()).toBe(text);
  }
  fs.closeSync(check);
  fs.unlinkSync(src);
  fs.unlinkSync(saved);
}, 300000);

describe('libvirt contract', () => {
  test('--help prints the usage line on stdout and exits 0', async () => {
    const r = await runHelper(['--help'], ['ignore', 'pipe']);
    expect(r.code).toBe(0);
    expect(r.stdout.toString().split('\n')[0]).toBe(`Usage: ${IOHELPER} FILENAME FD`);
  });

  test.each([[[]], [['onlyone']], [['a', '1', 'extra']]])('wrong argument count %j: try --help, exit 1', async (args) => {
    const r = await runHelper(args as string[], ['ignore', 'ignore']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`${IOHELPER}: try --help for more details`);
  });

  test('an O_RDWR fd is refused with one failure line', async () => {
    const file = path.join(dir, 'rdwr');
    const fd = fs.openSync(file, 'w+');
    const r = await runHelper([file, '1'], [Buffer.from('x'), fd]);
    fs.closeSync(fd);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(lastLine(r.stderr)).toMatch(new RegExp(`^${IOHELPER}: failure with ${file}: .*reading and writing.*\\(EINVAL\\)$`));
  });

  test('a closed fd gives EBADF', async () => {
    const r = await runHelper(['/some/file', '200'], ['ignore', 'ignore']);
    expect(r.code).toBe(1);
    expect(lastLine(r.stderr)).toMatch(/failure with \/some\/file: .*\(EBADF\)$/);
  });

  test('a directory fd is refused (EISDIR)', async () => {
    const fd = fs.openSync(dir, 'r');
    const r = await runHelper(['--fd', '3', '--name', dir], ['ignore', 'pipe', 'pipe', fd] as never);
    fs.closeSync(fd);
    expect(r.code).toBe(1);
    expect(lastLine(r.stderr)).toMatch(/is a directory.*\(EISDIR\)$/);
  });

  test('a pipe where the file belongs is refused (ESPIPE)', async () => {
    const [rd, wr] = native.pipe();
    const r = await runHelper(['thepipe', '0'], [rd, 'pipe']);
    fs.closeSync(rd);
    fs.closeSync(wr);
    expect(r.code).toBe(1);
    expect(lastLine(r.stderr)).toMatch(/failure with thepipe: .*is a pipe, not a regular file.*\(ESPIPE\)$/);
  });

  test('a reader that goes away ends in exit 1 with EPIPE, not a signal death', async () => {
    const file = path.join(dir, 'big');
    fs.writeFileSync(file, Buffer.alloc(32 * M, 1));
    const fd = fs.openSync(file, 'r');
    const [rd, wr] = native.pipe();
    fs.closeSync(rd);
    const r = await runHelper([file, '0'], [fd, wr]);
    fs.closeSync(fd);
    fs.closeSync(wr);
    expect(r.signal).toBeNull();
    expect(r.code).toBe(1);
    expect(lastLine(r.stderr)).toMatch(/Unable to write the stream: Broken pipe \(EPIPE\)$/);
  });

  test('--progress=FD writes JSON lines ending with the full byte count', async () => {
    const data = randomBytes(6 * M + 1, 3);
    const file = path.join(dir, 'prog');
    const fd = fs.openSync(file, 'w');
    const [rd, wr] = native.pipe();
    const r = await runHelper(['--fd', '3', '--direct', '--progress=4'], [data, 'ignore', 'pipe', fd, wr] as never);
    fs.closeSync(wr);
    fs.closeSync(fd);
    const buf = Buffer.alloc(1 << 16);
    const n = fs.readSync(rd, buf);
    fs.closeSync(rd);
    expect(r.code).toBe(0);
    const lines = buf.subarray(0, n).toString().trim().split('\n').map((l) => JSON.parse(l));
    const last = lines[lines.length - 1];
    expect(last).toMatchObject({ bytes: data.length, done: true });
    expect(fs.readFileSync(file).equals(data)).toBe(true);
  });
});

/**
 * Runs `bin` as a command (so bin/iohelper's sh part runs) through sh, with `redirects` (e.g.
 * '<&-') applied to it: Node's spawn cannot hand a child a closed fd 0 or 1, a shell can.
 */
function runClosed(bin: string, file: string, fileRedirect: string, redirects: string, input?: Buffer): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', `exec "$0" "$1" 3 3${fileRedirect}"$1" ${redirects}`, bin, file], { stdio: 'pipe' });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout: Buffer.concat(out), stderr: err }));
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
  });
}

describe('a closed stdin or stdout, refused only where the direction uses it (bin/iohelper run as a command)', () => {
  test('save with stdin closed: exit 1, EBADF, nothing written (it used to save an empty stream and exit 0)', async () => {
    const file = path.join(dir, 'closed-stdin-save');
    fs.writeFileSync(file, '');
    const r = await runClosed(IOHELPER, file, '>', '<&-');
    expect(r.code).toBe(1);
    expect(lastLine(r.stderr)).toBe(`${IOHELPER}: failure with ${file}: the stream: fd 0 was closed when iohelper started (EBADF)`);
    expect(fs.statSync(file).size).toBe(0);
  });

  test('restore with stdout closed: exit 1, EBADF', async () => {
    const file = path.join(dir, 'closed-stdout-restore');
    fs.writeFileSync(file, randomBytes(100000, 5));
    const r = await runClosed(IOHELPER, file, '<', '>&-');
    expect(r.code).toBe(1);
    expect(lastLine(r.stderr)).toBe(`${IOHELPER}: failure with ${file}: the stream: fd 1 was closed when iohelper started (EBADF)`);
  });

  test('the std stream the direction does not use may be closed: save without stdout, restore without stdin', async () => {
    const data = randomBytes(300000, 6);
    const file = path.join(dir, 'closed-unused');
    const saved = await runClosed(IOHELPER, file, '>', '>&-', data);
    expect({ code: saved.code, stderr: saved.stderr }).toEqual({ code: 0, stderr: '' });
    expect(fs.readFileSync(file).equals(data)).toBe(true);
    const restored = await runClosed(IOHELPER, file, '<', '<&-');
    expect({ code: restored.code, stderr: restored.stderr }).toEqual({ code: 0, stderr: '' });
    expect(restored.stdout.equals(data)).toBe(true);
  });

  test("libvirt-install's wrapper goes through the same check", async () => {
    const { wrapperScript } = await import('../src/install/libvirt-helper');
    const wrapper = path.join(dir, 'wrapper');
    fs.writeFileSync(wrapper, wrapperScript(path.join(__dirname, '..'), process.execPath, '/nowhere'), { mode: 0o755 });
    const file = path.join(dir, 'closed-stdin-wrapper');
    fs.writeFileSync(file, '');
    const r = await runClosed(wrapper, file, '>', '<&-');
    expect(r.code).toBe(1);
    expect(lastLine(r.stderr)).toBe(`${wrapper}: failure with ${file}: the stream: fd 0 was closed when iohelper started (EBADF)`);
  });
});

const LIBVIRT_IOHELPER = '/usr/lib/libvirt/libvirt_iohelper';
const haveLibvirt = fs.existsSync(LIBVIRT_IOHELPER);
(haveLibvirt ? describe : describe.skip)('same contract as libvirt_iohelper (installed)', () => {
  test('both print the same usage shape and wrong-argc message', async () => {
    const ours = await runHelper(['--help'], ['ignore', 'pipe']);
    const theirs = await runHelper(['--help'], ['ignore', 'pipe'], LIBVIRT_IOHELPER);
    expect(theirs.code).toBe(0);
    expect(ours.stdout.toString().split('\n')[0].replace(IOHELPER, 'ARGV0')).toBe(
      theirs.stdout.toString().split('\n')[0].replace(LIBVIRT_IOHELPER, 'ARGV0'),
    );
    const ours2 = await runHelper([], ['ignore', 'ignore']);
    const theirs2 = await runHelper([], ['ignore', 'ignore'], LIBVIRT_IOHELPER);
    expect(ours2.code).toBe(theirs2.code);
    expect(ours2.stderr.replace(IOHELPER, 'ARGV0')).toBe(theirs2.stderr.replace(LIBVIRT_IOHELPER, 'ARGV0'));
  });

  test('both fail an O_RDWR fd with exit 1 and a "failure with FILE" line', async () => {
    const file = path.join(dir, 'rdwr2');
    for (const bin of [IOHELPER, LIBVIRT_IOHELPER]) {
      const fd = fs.openSync(file, 'w+');
      const r = await runHelper([file, '1'], [Buffer.from('x'), fd], bin);
      fs.closeSync(fd);
      expect(r.code).toBe(1);
      expect(lastLine(r.stderr)).toContain(`: failure with ${file}`);
    }
  });

  test('both exit 1 on a save with stdin closed and on a restore with stdout closed', async () => {
    const file = path.join(dir, 'closed-both');
    for (const bin of [IOHELPER, LIBVIRT_IOHELPER]) {
      fs.writeFileSync(file, '');
      expect((await runClosed(bin, file, '>', '<&-')).code).toBe(1);
      fs.writeFileSync(file, 'x');
      expect((await runClosed(bin, file, '<', '>&-')).code).toBe(1);
    }
  });

  test('the FD argument is read as libvirt_iohelper reads it (strtol, whole string): leading white space and a sign are fine', async () => {
    const data = randomBytes(100000, 31);
    for (const text of [' 1', '+1', ' \t\n+1', '01', '+001']) {
      for (const bin of [LIBVIRT_IOHELPER, IOHELPER]) {
        const file = path.join(dir, 'fd-text');
        const fd = fs.openSync(file, 'w');
        const r = await runHelper([file, text], [data, fd], bin);
        fs.closeSync(fd);
        expect({ bin, text, code: r.code, stderr: r.stderr }).toEqual({ bin, text, code: 0, stderr: '' });
        expect(fs.readFileSync(file).equals(data)).toBe(true);
      }
    }
  });

  test('an FD argument strtol does not take whole is refused by both; a negative one parses but is no open fd', async () => {
    for (const text of ['1 ', '0x1', '', ' ', '+', '1x', '+-1', '2147483648', '99999999999']) {
      for (const bin of [LIBVIRT_IOHELPER, IOHELPER]) {
        const r = await runHelper(['f', text], [Buffer.alloc(0), 'ignore'], bin);
        expect({ bin, text, code: r.code }).toEqual({ bin, text, code: 1 });
      }
      const ours = await runHelper(['f', text], [Buffer.alloc(0), 'ignore']);
      expect(ours.stderr).toBe(`${IOHELPER}: failure with f: unable to parse FD number '${text}'`);
    }
    for (const text of ['-1', ' -5', '-2147483648']) {
      const theirs = await runHelper(['f', text], [Buffer.alloc(0), 'ignore'], LIBVIRT_IOHELPER);
      expect(theirs.code).toBe(1);
      const ours = await runHelper(['f', text], [Buffer.alloc(0), 'ignore']);
      expect({ code: ours.code, last: lastLine(ours.stderr) }).toEqual({ code: 1, last: `${IOHELPER}: failure with f: f: fd ${Number(text)} is not open (EBADF)` });
    }
  });

  /** Saves `data` through `bin` onto an O_APPEND fd of a file that already holds `existing`. */
  async function appendSave(bin: string, data: Buffer, existing: Buffer, direct: boolean): Promise<{ code: number | null; stderr: string; out: Buffer }> {
    const file = path.join(dir, `append-${path.basename(bin)}-${direct}`);
    fs.writeFileSync(file, existing);
    const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_APPEND | (direct ? O_DIRECT : 0));
    const r = await runHelper([file, '1'], [data, fd], bin);
    // The open file description is shared with the caller: O_APPEND must still be set afterwards.
    expect(native.getFlags(fd) & fs.constants.O_APPEND).toBe(fs.constants.O_APPEND);
    fs.closeSync(fd);
    return { code: r.code, stderr: r.stderr, out: fs.readFileSync(file) };
  }

  test('an O_APPEND fd gets the stream appended, byte for byte as libvirt_iohelper writes it', async () => {
    const data = randomBytes(6 * M + 4321, 21);
    const existing = randomBytes(1000, 22);
    const theirs = await appendSave(LIBVIRT_IOHELPER, data, existing, false);
    const ours = await appendSave(IOHELPER, data, existing, false);
    expect([ours.code, ours.stderr, theirs.code]).toEqual([0, '', 0]);
    expect(theirs.out.equals(Buffer.concat([existing, data]))).toBe(true);
    expect(ours.out.equals(theirs.out)).toBe(true);
  });

  test('an O_APPEND O_DIRECT fd: ours appends exactly (libvirt_iohelper refuses a non-empty file)', async () => {
    const data = randomBytes(6 * M + 4321, 23);
    const existing = randomBytes(1000, 24);
    const ours = await appendSave(IOHELPER, data, existing, true);
    expect([ours.code, ours.stderr]).toEqual([0, '']);
    expect(ours.out.equals(Buffer.concat([existing, data]))).toBe(true);
    const theirs = await appendSave(LIBVIRT_IOHELPER, data, existing, true);
    expect(theirs.code).toBe(1);
  });

  test('a stream saved by libvirt_iohelper with O_DIRECT restores through ours byte for byte', async () => {
    const data = randomBytes(5 * M + 77, 11);
    const file = path.join(dir, 'by-libvirt');
    const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | O_DIRECT, 0o600);
    const r = await runHelper([file, '1'], [data, fd], LIBVIRT_IOHELPER);
    fs.closeSync(fd);
    expect(r.code).toBe(0);
    expect((await restore(file, { direct: true, form: 'libvirt' })).equals(data)).toBe(true);
  });
});
if (!haveLibvirt) console.warn(`${LIBVIRT_IOHELPER} not installed: the side-by-side contract tests are skipped (scripts/install-qemu.sh --libvirt installs it)`);
