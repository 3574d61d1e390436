/**
 * The addon builds and loads on glibc 2.28+ hosts: it names errno values with its own table, not
 * glibc's strerrorname_np (2.32+), and its errors still carry Node's codes.
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { native } from '../src/native';

const ADDON = path.join(__dirname, '..', 'build', 'Release', 'iohelper.node');

test('the built addon does not import strerrorname_np', () => {
  expect(fs.existsSync(ADDON)).toBe(true);
  expect(execFileSync('objdump', ['-T', ADDON], { encoding: 'utf8' })).not.toContain('strerrorname_np');
});

test.each([
  ['EBADF', -9, () => native.ftruncate(987654, 0)],
  ['EISDIR', -21, () => native.pread(fs.openSync(os.tmpdir(), 'r'), new Uint8Array(16), 0)],
  ['ESPIPE', -29, () => native.lseek(native.pipe()[0], 0, native.constants.SEEK_SET)],
])('errors carry the errno name %s', (code, errno, fn) => {
  let err: NodeJS.ErrnoException | undefined;
  try {
    fn();
  } catch (e) {
    err = e as NodeJS.ErrnoException;
  }
  expect(err).toMatchObject({ code, errno });
  expect(err!.message).toMatch(new RegExp(`^${code}: [a-z]`));
});
