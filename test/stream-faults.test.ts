/** The stream helper on filesystems that fail: full disk, O_DIRECT refused. */
import * as fs from 'fs';
import { lastLine, runHelper } from './support/cli';
import { describeAsRoot, Mount, mountFs } from './support/mounts';

const M = 1024 * 1024;

describeAsRoot('disk full', () => {
  let mnt: Mount;
  beforeAll(() => {
    mnt = mountFs('tmpfs', 'size=8m');
  });
  afterAll(() => mnt.unmount());

  test.each([
    ['O_DIRECT', fs.constants.O_DIRECT],
    ['buffered', 0],
  ])('%s: ENOSPC is one failure line naming the file, exit 1', async (_n, direct) => {
    const file = `${mnt.dir}/save.img`;
    const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | direct, 0o600);
    const r = await runHelper([file, '1'], [Buffer.alloc(20 * M, 7), fd]);
    fs.closeSync(fd);
    expect(r.code).toBe(1);
    expect(r.signal).toBeNull();
    expect(r.stderr.split('\n')).toHaveLength(1);
    expect(lastLine(r.stderr)).toMatch(new RegExp(`failure with ${file}: Unable to write ${file}: No space left on device \\(ENOSPC\\)$`));
    fs.unlinkSync(file);
  });
});

describeAsRoot('O_DIRECT refused by the filesystem (ramfs)', () => {
  let mnt: Mount;
  beforeAll(() => {
    mnt = mountFs('ramfs');
  });
  afterAll(() => mnt.unmount());

  test('--direct demands it: clear error, exit 1, nothing written', async () => {
    const file = `${mnt.dir}/a.img`;
    const fd = fs.openSync(file, 'w');
    const r = await runHelper(['--fd', '3', '--direct', '--name', file], [Buffer.alloc(M, 1), 'ignore', 'pipe', fd] as never);
    fs.closeSync(fd);
    expect(r.code).toBe(1);
    expect(lastLine(r.stderr)).toBe(`${r.stderr.split(':')[0]}: failure with ${file}: O_DIRECT refused by the filesystem of ${file} (EINVAL)`);
    expect(fs.statSync(file).size).toBe(0);
  });

  test('--prefer-direct falls back to buffered I/O with one warning line and copies exactly', async () => {
    const file = `${mnt.dir}/b.img`;
    const fd = fs.openSync(file, 'w');
    const data = Buffer.alloc(3 * M + 5, 9);
    const r = await runHelper(['--fd', '3', '--prefer-direct', '--name', file], [data, 'ignore', 'pipe', fd] as never);
    fs.closeSync(fd);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/^.*: warning: O_DIRECT refused by the filesystem of .*b\.img; using buffered I\/O.*\n$/);
    expect(fs.readFileSync(file).equals(data)).toBe(true);
  });
});
