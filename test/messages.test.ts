/**
 * The image commands' messages: a file name that is not UTF-8 is refused, never silently
 * turned into another name; any legal name works (its temporary fits NAME_MAX); the last line
 * ends with a newline (the libvirt form keeps libvirt's shape, test/libvirt-contract.test.ts);
 * an fd without a name is "fd 5", not "fd 5 (fd 5)"; a helper's failure quoted by `vm save`
 * carries one "iohelper:" prefix, not two.
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { IOHELPER, lastLine, runHelper, runInShell, shellFixture } from './support/cli';
import { describeQemu, shmPath, startQemu } from './support/qemu';

const M = 1024 * 1024;
let dir: string;
let ram: string;

const sh = (script: string) => runInShell(dir, script);

beforeAll(async () => {
  ({ dir, ram } = await shellFixture('iohelper-messages-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

test('a file name that is not UTF-8 (x\\xfe.img) is refused, and no file appears under another name', () => {
  const r = sh(`$IOH save --no-stream-check --image "$(printf 'x\\376.img')" --ram pc.ram=ram <ds`);
  expect(r.code).toBe(1);
  expect(r.stderr).toBe(`${IOHELPER}: argument 'x\\xfe.img' is not valid UTF-8, and iohelper would read it as another name; rename the file, or pass it another way (a symbolic link with a UTF-8 name, an fd) (EINVAL)\n`);
  expect(fs.readdirSync(dir, { encoding: 'buffer' }).filter((n) => n.includes('.img') && !n.equals(Buffer.from('full.img')))).toEqual([]);
});

test('a 255-byte name: saved, restored over (through a temporary beside it) and converted to', async () => {
  const long = (c: string) => path.join(dir, c.repeat(255));
  const s = await runHelper(['save', '--no-stream-check', '--image', long('i'), '--ram', `pc.ram=${ram}`], [crypto.randomBytes(1000), 'ignore']);
  expect({ code: s.code, stderr: s.stderr }).toEqual({ code: 0, stderr: '' });
  fs.copyFileSync(ram, long('r')); // holds data: replaced through a temporary
  const r = await runHelper(['restore', '--image', long('i'), '--ram', `pc.ram=${long('r')}`], ['ignore', 'ignore']);
  expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
  const c = await runHelper(['convert', long('i'), long('c'), '--compress'], ['ignore', 'ignore']);
  expect(c.code).toBe(0);
  expect(fs.existsSync(long('c'))).toBe(true);
  expect(fs.readdirSync(dir).filter((f) => f.includes('.iohelper-'))).toEqual([]);
});

test('an image command\'s failure is one line ending with a newline', async () => {
  const r = await runHelper(['inspect', path.join(dir, 'nothere')], ['ignore', 'ignore']);
  expect(r.code).toBe(1);
  expect(r.stderr).toBe(`${IOHELPER}: Unable to open ${path.join(dir, 'nothere')}: No such file or directory (ENOENT)\n`);
});

test('an fd without a name is "fd 5", never "fd 5 (fd 5)"; with --name, "NAME (fd 5)"', () => {
  const r = sh('$IOH save --fd 5 --ram pc.ram=ram 5<full.img <ds');
  expect(r.code).toBe(1);
  expect(r.stderr).toBe(`${IOHELPER}: fd 5 is open read-only; saving needs it writable (EBADF)\n`);
  const n = sh('$IOH save --fd 5 --name vm.img --ram pc.ram=ram 5<full.img <ds');
  expect(n.stderr).toBe(`${IOHELPER}: vm.img (fd 5) is open read-only; saving needs it writable (EBADF)\n`);
});

describeQemu('a helper failure in vm save', () => {
  test('is quoted with one iohelper: prefix, not two', async () => {
    const ramPath = shmPath('messages-ram');
    const vm = await startQemu({ ram: [{ id: 'pc.ram', path: ramPath, size: 16 * M }] });
    try {
      const bad = path.join(dir, 'bad.img');
      fs.writeFileSync(bad, crypto.randomBytes(100));
      const r = await runHelper(['vm', 'save', '--qmp', vm.qmpSocket, '--out', path.join(dir, 'v.img'), '--base', bad], ['ignore', 'ignore']);
      expect(r.code).toBe(1);
      expect(lastLine(r.stderr).startsWith(`${IOHELPER}: `)).toBe(true);
      expect(r.stderr).not.toContain(`${IOHELPER}: ${IOHELPER}`);
      expect(r.stderr.endsWith('\n')).toBe(true);
    } finally {
      await vm.stop();
      fs.rmSync(ramPath, { force: true });
    }
  });
});
