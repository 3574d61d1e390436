/**
 * The leftover cleanup beside a world-writable directory: root removes dead runs' temporaries
 * where any user can create entries with our names. An unprivileged user (nobody) plants
 * directories, links and files of its own under those names, and swaps a directory for a link
 * while the cleanup runs; only root's own regular files are ever removed, nothing is followed
 * or entered. (Run as root: the tests switch to nobody with setpriv.)
 */
import { spawn, spawnSync } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { createRamFile, fillPattern } from '../bench/lib/ram-file';
import { native } from '../src/native';
import { runHelper } from './support/cli';

const M = 1024 * 1024;
const asNobody = ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups', '--'];
const root = process.getuid?.() === 0;
const testRoot = root ? test : test.skip;

let dir: string;
let image: string;
/** World-writable and sticky, like /dev/shm. */
let shared: string;
let victim: string;
const victimNames = Array.from({ length: 50 }, (_, i) => `precious-${i}`);

function nobody(script: string): void {
  const r = spawnSync(asNobody[0], [...asNobody.slice(1), 'sh', '-c', script], { cwd: shared, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`as nobody: ${script}: ${r.stderr}`);
}

/** A PID that is no process's: a child that has exited (and been reaped). */
function deadPid(): number {
  return Number(spawnSync('sh', ['-c', 'echo $$']).stdout.toString().trim());
}

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-hostile-'));
  const src = path.join(dir, 'src');
  createRamFile(src, 8 * M);
  fillPattern(src, 4, 0.25);
  image = path.join(dir, 'good.img');
  const r = await runHelper(['save', '--no-stream-check', '--image', image, '--ram', `a=${src}`], [crypto.randomBytes(100), 'ignore']);
  expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
  victim = path.join(dir, 'victim');
  fs.mkdirSync(victim);
  for (const n of victimNames) fs.writeFileSync(path.join(victim, n), n);
});
beforeEach(() => {
  shared = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-shared-'));
  fs.chmodSync(shared, 0o1777);
});
afterEach(() => fs.rmSync(shared, { recursive: true, force: true }));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const restoreInto = (target: string) => runHelper(['restore', '--image', image, '--ram', `a=${target}`], ['ignore', 'ignore']);

testRoot("entries with our name that are not root's own regular files are left alone, with a warning; root's own is removed", async () => {
  const pid = deadPid();
  nobody(`mkdir .t.iohelper-${pid}-d1 && echo x > .t.iohelper-${pid}-d1/inside && ln -s ${victim}/precious-0 .t.iohelper-${pid}-l1 && echo x > .t.iohelper-${pid}-f1`);
  const mine = path.join(shared, `.t.iohelper-${pid}-f2`);
  fs.writeFileSync(mine, 'x');
  // A name that is not UTF-8 is matched and removed as the bytes it is.
  const raw = Buffer.concat([Buffer.from(shared + '/.x'), Buffer.from([0xfe]), Buffer.from(`.iohelper-${pid}-f3`)]);
  fs.writeFileSync(raw, 'x');
  const r = await restoreInto(path.join(shared, 't'));
  expect(r.code).toBe(0);
  expect(fs.readFileSync(path.join(shared, `.t.iohelper-${pid}-d1`, 'inside'), 'utf8')).toBe('x\n');
  expect(fs.lstatSync(path.join(shared, `.t.iohelper-${pid}-l1`)).isSymbolicLink()).toBe(true);
  expect(fs.readFileSync(path.join(victim, 'precious-0'), 'utf8')).toBe('precious-0');
  expect(fs.readFileSync(path.join(shared, `.t.iohelper-${pid}-f1`), 'utf8')).toBe('x\n');
  expect(fs.existsSync(mine)).toBe(false);
  expect(fs.existsSync(raw)).toBe(false);
  expect(r.stderr).toContain(`left ${shared}/.t.iohelper-${pid}-d1 alone: named like a temporary of iohelper process ${pid}, which is gone, but it is a directory`);
  expect(r.stderr).toContain(`left ${shared}/.t.iohelper-${pid}-l1 alone: named like a temporary of iohelper process ${pid}, which is gone, but it is a symbolic link`);
  expect(r.stderr).toContain(`left ${shared}/.t.iohelper-${pid}-f1 alone: named like a temporary of iohelper process ${pid}, which is gone, but it belongs to user 65534`);
  expect(r.stderr).toContain(`removed ${shared}/.x\\xfe.iohelper-${pid}-f3, left by iohelper process ${pid} which is gone`);
});

testRoot("a directory swapped for a link to a victim while the cleanup runs: the victim stays whole (the directory is never entered)", async () => {
  const pid = deadPid();
  const planted = `.x.iohelper-convert-${pid}-abc`;
  // 20,000 files, the victim's names among them: a cleanup that recursed would list them, then
  // remove each through `sub` once it points at the victim.
  nobody(`mkdir -p ${planted}/sub && cd ${planted}/sub && seq 20000 | xargs touch && ${victimNames.map((n) => `touch ${n}`).join(' && ')}`);
  // The swap: as soon as anything in sub is removed (the cleanup has listed it), sub becomes a
  // link to the victim; it gives up after the restore ended (the stop file).
  const swapper = spawn(asNobody[0], [...asNobody.slice(1), 'sh', '-c', `cd ${planted} && n=$(ls -f sub | wc -l); echo ready; while [ ! -e ../stop ] && [ "$(ls -f sub | wc -l)" -ge "$n" ]; do :; done; [ -e ../stop ] || { mv sub sub.away && ln -s ${victim} sub; }; echo done`], { cwd: shared, stdio: ['ignore', 'pipe', 'inherit'] });
  const closed = new Promise((resolve) => swapper.on('close', resolve));
  const out: string[] = [];
  await new Promise<void>((resolve) => swapper.stdout!.on('data', (d: Buffer) => (out.push(d.toString()), out.join('').includes('ready') && resolve())));
  const r = await restoreInto(path.join(shared, 'ram'));
  fs.writeFileSync(path.join(shared, 'stop'), '');
  await closed;
  expect(r.code).toBe(0);
  expect(fs.readdirSync(victim).sort()).toEqual([...victimNames].sort());
  // Never entered: all 20,050 entries are still there.
  expect(fs.readdirSync(path.join(shared, planted, 'sub')).length).toBe(20000 + victimNames.length);
  expect(r.stderr).toContain(`left ${shared}/${planted} alone`);
});

test('the addon\'s directory-fd calls: a link is reported and removed as itself, a directory is never removed, a name is one component', () => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-dirfd-'));
  try {
    fs.writeFileSync(path.join(d, 'target'), 'kept');
    fs.symlinkSync(path.join(d, 'target'), path.join(d, 'link'));
    fs.mkdirSync(path.join(d, 'sub'));
    fs.writeFileSync(path.join(d, 'sub', 'inside'), 'kept');
    const fd = fs.openSync(d, fs.constants.O_RDONLY | native.constants.O_DIRECTORY);
    try {
      expect(native.readDirectory(fd).map(String).sort()).toEqual(['link', 'sub', 'target']);
      expect(native.statAt(fd, Buffer.from('link')).mode & fs.constants.S_IFMT).toBe(fs.constants.S_IFLNK);
      native.unlinkAt(fd, Buffer.from('link'));
      expect(fs.readFileSync(path.join(d, 'target'), 'utf8')).toBe('kept');
      expect(() => native.unlinkAt(fd, Buffer.from('sub'))).toThrow(expect.objectContaining({ code: 'EISDIR', syscall: 'unlinkat' }));
      expect(() => native.unlinkAt(fd, Buffer.from('sub/inside'))).toThrow(expect.objectContaining({ code: 'EINVAL' }));
      expect(() => native.statAt(fd, Buffer.from('..'))).toThrow(expect.objectContaining({ code: 'EINVAL' }));
      expect(fs.readFileSync(path.join(d, 'sub', 'inside'), 'utf8')).toBe('kept');
    } finally {
      fs.closeSync(fd);
    }
  } finally {
    fs.rmSync(d, { recursive: true, force: true });
  }
});

test('entries with our names left alone are reported in at most 10 lines (anyone can create thousands)', async () => {
  const pid = deadPid();
  for (let i = 0; i < 15; i++) fs.mkdirSync(path.join(shared, `.t.iohelper-${pid}-d${i}`));
  const r = await restoreInto(path.join(shared, 't'));
  expect(r.code).toBe(0);
  expect(r.stderr.match(/warning: left \S+ alone: named like a temporary/g)).toHaveLength(10);
  expect(r.stderr).toContain(`warning: left 5 more entries of ${shared} named like iohelper temporaries alone`);
  expect(fs.readdirSync(shared).filter((n) => n.includes('.iohelper-'))).toHaveLength(15);
});
