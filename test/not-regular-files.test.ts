/**
 * Image paths that name something other than a regular file. A FIFO given to inspect, convert,
 * restore --image, save --image or vm clone is refused at once with one line, never opened
 * (an open of a FIFO blocks until a peer comes, and a blocked open ignored SIGINT and SIGTERM);
 * inspect of a block device holding an image reads the device's size.
 */
import { execFileSync, spawnSync } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { IOHELPER } from './support/cli';
import { describeAsRoot } from './support/mounts';

const M = 1024 * 1024;
let dir: string;
let image: string;
let ram: string;

/** The CLI with a deadline: a command that blocks is killed (SIGKILL: a blocked open ignores the others) and fails the test. */
function cli(args: string[], input?: Buffer) {
  const t0 = Date.now();
  const r = spawnSync(process.execPath, [IOHELPER, ...args], { input: input ?? Buffer.alloc(0), timeout: 15000, killSignal: 'SIGKILL', encoding: 'utf8' });
  return { status: r.status, signal: r.signal, stderr: r.stderr, ms: Date.now() - t0 };
}

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-notreg-'));
  ram = path.join(dir, 'ram');
  fs.writeFileSync(ram, crypto.randomBytes(4 * M));
  image = path.join(dir, 'good.img');
  const r = cli(['save', '--no-stream-check', '--image', image, '--ram', `a=${ram}`], crypto.randomBytes(10 * 1024)); // the image ends on a 512-byte sector
  expect(fs.statSync(image).size % 512).toBe(0);
  expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('a FIFO where an image belongs', () => {
  let fifo: string;
  beforeAll(() => {
    fifo = path.join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
  });

  test.each([
    ['inspect', () => ['inspect', fifo]],
    ['convert (source)', () => ['convert', fifo, path.join(dir, 'out.img')]],
    ['restore --image', () => ['restore', '--image', fifo, '--ram', `a=${path.join(dir, 'restored')}`]],
    ['save --image', () => ['save', '--image', fifo, '--ram', `a=${ram}`]],
    ['vm clone --image', () => ['vm', 'clone', '--image', fifo, '--', '-m', '4M']],
    ['vm restore --image (eager)', () => ['vm', 'restore', '--image', fifo, '--', '-object', `memory-backend-file,id=a,size=4M,mem-path=${path.join(dir, 'vm-ram')},share=on`]],
  ] as Array<[string, () => string[]]>)('%s: exit 1 at once with one line, nothing created', (_n, args) => {
    const r = cli(args());
    expect({ status: r.status, signal: r.signal }).toEqual({ status: 1, signal: null });
    expect(r.stderr).toMatch(new RegExp(`^\\S+: ${fifo} is a FIFO, not a regular file[^\\n]* \\(EINVAL\\)\n$`));
    expect(r.ms).toBeLessThan(10000);
    expect(fs.readdirSync(dir).sort()).toEqual(['fifo', 'good.img', 'ram']);
  });

  test('convert onto a FIFO: the target exists (EEXIST), it is never opened', () => {
    const r = cli(['convert', image, fifo]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/fifo exists; convert writes a new file .*\(EEXIST\)\n$/);
  });
});

describeAsRoot('an image on a block device', () => {
  /** inspect --json of `file` through a read-only loop device. */
  function inspectLoop(file: string) {
    const loop = execFileSync('losetup', ['--find', '--show', '--read-only', file], { encoding: 'utf8' }).trim();
    try {
      const r = spawnSync(process.execPath, [IOHELPER, 'inspect', '--json', loop], { encoding: 'utf8' });
      expect(r.stderr).toBe('');
      return { status: r.status, json: JSON.parse(r.stdout) };
    } finally {
      execFileSync('losetup', ['-d', loop]);
    }
  }

  test("inspect of a loop device holding an image reads the device's size, not fstat's 0", () => {
    const r = inspectLoop(image);
    expect(r.status).toBe(0);
    expect(r.json).toMatchObject({ kind: 'iohelper', committed: true, fileSize: fs.statSync(image).size });
    expect(r.json.invalid).toBeUndefined();
    expect(r.json.blocks).toEqual([expect.objectContaining({ name: 'a', size: 4 * M })]);
    // A device larger than the image has trailing bytes (FORMAT.md H22), and says how many.
    const padded = path.join(dir, 'padded.img');
    fs.copyFileSync(image, padded);
    fs.truncateSync(padded, fs.statSync(image).size + 512);
    const p = inspectLoop(padded);
    fs.rmSync(padded);
    expect(p.json.invalid.message).toBe(`file has ${fs.statSync(image).size + 512} bytes, more than the image's ${fs.statSync(image).size}`);
  });
});
