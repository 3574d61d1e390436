/** Helpers of image-faults.test.ts and image-faults-qemu.test.ts. */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { createRamFile, fillPattern, sha256File } from '../../bench/lib/ram-file';
import { lastLine, runHelper } from './cli';

const M = 1024 * 1024;

/**
 * For one test file: a temp dir and a 256 MiB patterned RAM file on /dev/shm (`ram`; restores
 * of it go to `${ram}-target`), made before its tests and removed after them.
 */
export function faultScratch(label: string): { dir: string; ram: string } {
  const s = { dir: '', ram: `/dev/shm/iohelper-${label}-${process.pid}` };
  beforeAll(() => {
    s.dir = fs.mkdtempSync(path.join(os.tmpdir(), `iohelper-${label}-`));
    createRamFile(s.ram, 256 * M);
    fillPattern(s.ram, 3, 0.25);
  });
  afterAll(() => {
    fs.rmSync(s.dir, { recursive: true, force: true });
    fs.rmSync(s.ram, { force: true });
    fs.rmSync(`${s.ram}-target`, { force: true });
  });
  return s;
}

/** Our temporaries beside `image` (.NAME.iohelper-…). */
export const temporaries = (image: string) => fs.readdirSync(path.dirname(image)).filter((f) => f.startsWith(`.${path.basename(image)}.iohelper-`));

/** `image` is incomplete: inspect says so, and a restore of it into a 256 MiB target (`${ram}-target`) is refused and leaves the target as it was. */
export async function expectRefused(image: string, ram: string): Promise<void> {
  const info = await runHelper(['inspect', image], ['ignore', 'pipe']);
  expect(info.code).toBe(2);
  expect(info.stdout.toString()).toMatch(/INCOMPLETE/);
  const target = `${ram}-target`;
  createRamFile(target, 256 * M);
  fillPattern(target, 9, 0);
  const before = await sha256File(target);
  const r = await runHelper(['restore', '--image', image, '--ram', `ram0=${target}`], ['ignore', 'pipe']);
  expect(r.code).toBe(1);
  expect(r.stdout.length).toBe(0);
  expect(lastLine(r.stderr)).toMatch(/incomplete.*\(EIMG_UNCOMMITTED\)$/);
  expect(await sha256File(target)).toBe(before);
}
