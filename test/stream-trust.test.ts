/**
 * The stream forms tell the truth: fd numbers the caller did not pass are refused, signals are
 * handled even while the helper waits on a silent producer, a broken progress fd never fails a
 * copy, and memory asked for by flags is bounded. Each failed before the fix.
 */
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { native } from '../src/native';
import { IOHELPER, lastLine, runHelper, waitForPipeWait } from './support/cli';

let dir: string;
beforeAll(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-stream-trust-'))));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

test("fd numbers the caller did not pass (Node's own epoll, eventfd and pipes) are EBADF, never used", async () => {
  for (let fd = 3; fd <= 18; fd++) {
    const r = await runHelper([path.join(dir, 'never'), String(fd)], [Buffer.from('data'), 'ignore']);
    expect({ fd, code: r.code }).toEqual({ fd, code: 1 });
    expect(lastLine(r.stderr)).toMatch(/\(EBADF\)$/);
  }
});

test('SIGTERM while the helper waits for a silent producer (unaligned O_DIRECT head) ends it in one line, exit 1', async () => {
  const file = path.join(dir, 'silent');
  const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC, 0o600);
  fs.writeSync(fd, Buffer.alloc(92, 1)); // a manager's header: the stream starts unaligned
  native.setFlags(fd, native.getFlags(fd) | fs.constants.O_DIRECT);
  const [r, w] = native.pipe(); // nobody writes: the head read waits
  const child = spawn(process.execPath, [IOHELPER, file, '3'], { stdio: [r, 'ignore', 'pipe', fd] });
  fs.closeSync(r);
  fs.closeSync(fd);
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  await waitForPipeWait(child.pid!, 0, 30000); // the head read, which never returns
  const t0 = Date.now();
  child.kill('SIGTERM');
  const code = await new Promise((res) => child.on('close', res));
  fs.closeSync(w);
  expect(code).toBe(1);
  expect(Date.now() - t0).toBeLessThan(10000);
  expect(lastLine(stderr)).toMatch(/interrupted.*\(ECANCELED\)$/);
});

test('a --progress fd whose reader is gone stops progress with one warning; the copy still succeeds', async () => {
  const file = path.join(dir, 'progress');
  const fd = fs.openSync(file, 'w');
  const [pr, pw] = native.pipe();
  fs.closeSync(pr); // writes to pw now fail with EPIPE
  const data = Buffer.alloc(3 << 20, 5);
  const r = await runHelper(['--fd', '3', '--progress=4'], [data, 'ignore', 'pipe', fd, pw] as never);
  fs.closeSync(fd);
  fs.closeSync(pw);
  expect(r.code).toBe(0);
  expect(r.stderr).toMatch(/warning: progress output stopped: .*broken pipe/i);
  expect(r.stderr.trim().split('\n')).toHaveLength(1);
  expect(fs.readFileSync(file).equals(data)).toBe(true);
});

test('--inflight 64 --buffer-size 256M is refused (GBs of buffers), nothing written', async () => {
  const file = path.join(dir, 'huge');
  const fd = fs.openSync(file, 'w');
  const r = await runHelper(['--fd', '3', '--inflight', '64', '--buffer-size', '256M'], [Buffer.from('x'), 'ignore', 'pipe', fd] as never);
  fs.closeSync(fd);
  expect(r.code).toBe(1);
  expect(lastLine(r.stderr)).toMatch(/over the 256 MiB.*\(EINVAL\)$/);
  expect(fs.statSync(file).size).toBe(0);
});
