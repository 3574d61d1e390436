/**
 * One file, one role: a file given to save or restore in two roles (an fd number twice, two
 * fds or a path and an fd on one file) is refused before anything is read or written, naming
 * both roles; the file is left as it was.
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { runInShell, shellFixture } from './support/cli';

let dir: string;
let ram: string;
const TWO_ROLES = 'are the same file: one file cannot have two roles';

const sh = (script: string) => runInShell(dir, script);

const sha = (file: string) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');

beforeAll(async () => {
  ({ dir, ram } = await shellFixture('iohelper-roles-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

test('restore --ram pc.ram=fd:1 with stdout on that file (1<>f): refused, f unchanged', () => {
  fs.copyFileSync(ram, path.join(dir, 'f'));
  const before = sha(path.join(dir, 'f'));
  const r = sh('$IOH restore --image full.img --ram pc.ram=fd:1 1<>f');
  expect(r.code).toBe(1);
  expect(r.stderr).toContain(`the device state (stdout) and --ram pc.ram=fd:1 ${TWO_ROLES}`);
  expect(sha(path.join(dir, 'f'))).toBe(before);
});

test('save --ram pc.ram=fd:0 <ram (the RAM file as the device state too): refused, no image', () => {
  const r = sh('$IOH save --no-stream-check --image s.img --ram pc.ram=fd:0 <ram');
  expect(r.code).toBe(1);
  expect(r.stderr).toContain(`the device state (stdin) and --ram pc.ram=fd:0 ${TWO_ROLES}`);
  expect(fs.readdirSync(dir).filter((f) => f.startsWith('s.img') || f.startsWith('.s.img'))).toEqual([]);
});

test('two fds on one file (the image and a RAM target), and a save over its own RAM file: refused', () => {
  const r = sh('$IOH restore --fd 5 --ram pc.ram=fd:6 5<full.img 6<>full.img >/dev/null');
  expect(r.code).toBe(1);
  expect(r.stderr).toContain(`the image (--fd 5) and --ram pc.ram=fd:6 ${TWO_ROLES}`);
  expect(sh('$IOH inspect full.img >/dev/null').code).toBe(0); // the image is whole
  const before = sha(ram);
  const s = sh('$IOH save --no-stream-check --image ram --ram pc.ram=ram <ds');
  expect(s.code).toBe(1);
  expect(s.stderr).toContain(`the image (--image ram) and --ram pc.ram=ram ${TWO_ROLES}`);
  expect(sha(ram)).toBe(before);
});

test('/dev/null in two roles is no conflict', () => {
  const r = sh('$IOH restore --image full.img --ram pc.ram=out.ram --progress=5 5>/dev/null >/dev/null');
  expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
});
