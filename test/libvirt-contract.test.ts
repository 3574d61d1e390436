/**
 * Side by side with libvirt's own helper, /usr/lib/libvirt/libvirt_iohelper: the same usage,
 * exit codes and failure lines, FD parsing, O_APPEND, and streams either writes the other reads.
 * In the serial (qemu) project: libvirt-install.test.ts and libvirt.test.ts put iohelper in that
 * path for a while, and this file must run the real one.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { native } from '../src/native';
import { IOHELPER, lastLine, runHelper } from './support/cli';
import { requireOrSkip } from './support/require-or-skip';
import { randomBytes, restore, runClosed } from './support/stream';

const { O_DIRECT } = fs.constants;
const M = 1024 * 1024;
let dir: string;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-libvirt-contract-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const LIBVIRT_IOHELPER = '/usr/lib/libvirt/libvirt_iohelper';
const haveLibvirt = fs.existsSync(LIBVIRT_IOHELPER);
requireOrSkip(haveLibvirt ? undefined : `${LIBVIRT_IOHELPER} is not installed (scripts/install-qemu.sh --libvirt installs it)`)('same contract as libvirt_iohelper (installed)', () => {
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
