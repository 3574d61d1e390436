/**
 * convert's refusals and failures say what is true of what the user named: the target is
 * checked in the plan (a dangling symbolic link is a name taken, found before any work), an
 * interruption in either half is convert's and leaves no target, and a full filesystem names
 * the target's directory, never the scratch files convert keeps there.
 */
import { spawnSync } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { convert } from '../src/image/convert';
import { Progress } from '../src/progress';
import { IOHELPER } from './support/cli';
import { describeAsRoot, mountFs } from './support/mounts';

const M = 1024 * 1024;
let dir: string;
let source: string;

/** No scratch file or temporary image left in `d`. */
const leftovers = (d: string) => fs.readdirSync(d).filter((f) => f.includes('iohelper'));

async function rejection(p: Promise<unknown>): Promise<Error & { code?: string }> {
  try {
    await p;
  } catch (e) {
    return e as Error & { code?: string };
  }
  throw new Error('convert did not fail');
}

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-cvt-'));
  const ram = path.join(dir, 'ram');
  fs.writeFileSync(ram, crypto.randomBytes(16 * M));
  source = path.join(dir, 'source.img');
  const r = spawnSync(process.execPath, [IOHELPER, 'save', '--no-stream-check', '--image', source, '--ram', `a=${ram}`], { input: crypto.randomBytes(10000), encoding: 'utf8' });
  expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
  fs.rmSync(ram);
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

test('a dangling symbolic link as the target is refused in the plan, before any work, in one line', async () => {
  const target = path.join(dir, 'dangling.img');
  fs.symlinkSync(path.join(dir, 'nowhere', 'x.img'), target);
  try {
    let progressed = 0;
    const e = await rejection(convert({ source, target, onProgress: () => progressed++ }));
    expect(e.code).toBe('EEXIST');
    expect(e.message).toBe(`${target} exists (a symbolic link to nothing); convert writes a new file and never writes through a link (remove it first)`);
    expect(progressed).toBe(0); // the restore into scratch files never started
    const r = spawnSync(process.execPath, [IOHELPER, 'convert', source, target], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^\S+: \S+dangling\.img exists \(a symbolic link to nothing\);[^\n]*\(EEXIST\)\n$/);
    expect(fs.readlinkSync(target)).toBe(path.join(dir, 'nowhere', 'x.img'));
    expect(leftovers(dir)).toEqual([]);
  } finally {
    fs.rmSync(target);
  }
});

test('a target in a directory that does not exist is refused in the plan, naming that directory', async () => {
  const target = path.join(dir, 'absent-dir', 'x.img');
  const e = await rejection(convert({ source, target }));
  expect(e.code).toBe('ENOENT');
  expect(e.message).toContain(path.join(dir, 'absent-dir'));
  expect(e.message).not.toMatch(/\.iohelper-/);
});

test('interrupted in its first half (the restore into scratch files): convert interrupted, the target not created', async () => {
  const target = path.join(dir, 'first.img');
  const abort = new AbortController();
  abort.abort();
  const e = await rejection(convert({ source, target, signal: abort.signal }));
  expect({ code: e.code, message: e.message }).toEqual({ code: 'ECANCELED', message: `convert interrupted; ${target} was not created` });
  expect(fs.existsSync(target)).toBe(false);
  expect(leftovers(dir)).toEqual([]);
});

test('interrupted in its second half (the save of the new image): convert interrupted, the target not created', async () => {
  const target = path.join(dir, 'second.img');
  const abort = new AbortController();
  // Progress runs twice from 0: the first `done` ends the restore into scratch files.
  const onProgress = (p: Progress) => p.done && abort.abort();
  const e = await rejection(convert({ source, target, signal: abort.signal, onProgress }));
  expect({ code: e.code, message: e.message }).toEqual({ code: 'ECANCELED', message: `convert interrupted; ${target} was not created` });
  expect(fs.existsSync(target)).toBe(false);
  expect(leftovers(dir)).toEqual([]);
});

describeAsRoot('convert into a full filesystem', () => {
  test.each([
    ['no room for the scratch files (8 MiB for 16 MiB of RAM data)', 'size=8m'],
    ['room for the scratch files, not for the new image beside them', 'size=24m'],
  ])("%s: ENOSPC names the target's directory and says the target was not created, never a scratch file", async (_n, size) => {
    const small = mountFs('tmpfs', size);
    try {
      const target = path.join(small.dir, 'out.img');
      const e = await rejection(convert({ source, target }));
      expect(e.code).toBe('ENOSPC');
      expect(e.message).toBe(
        `no space left in ${small.dir} to convert into ${target}: the RAM's data is held in scratch files there while the new image is written beside them; ${target} was not created`,
      );
      expect(fs.readdirSync(small.dir)).toEqual([]);
    } finally {
      small.unmount();
    }
  });
});
