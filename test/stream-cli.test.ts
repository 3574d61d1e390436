/**
 * The stream helper through its CLI, with plain files: every size edge around the alignment,
 * both forms, with and without O_DIRECT, a manager-written header before the stream, and the
 * libvirt failure contract (side by side with libvirt_iohelper itself: libvirt-contract.test.ts).
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { native } from '../src/native';
import { IOHELPER, lastLine, runHelper } from './support/cli';
import { randomBytes, restore, runClosed } from './support/stream';

const { O_DIRECT } = fs.constants;
let dir: string;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-stream-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

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
