/**
 * A copy thread the kernel will not create (the pids cgroup limit, RLIMIT_NPROC) is an error
 * (EAGAIN from pthread_create), never an abort: the addon is built without C++ exceptions, so
 * a std::thread that cannot start used to end the process with SIGABRT. This test failed so.
 *
 * The child starts Node (its own threads and libuv's pool) first; only then is it moved into a
 * pids cgroup whose limit is what it already runs, so the copy's threads are the ones refused.
 */
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { requireOrSkip } from './support/require-or-skip';

/** Where a pids cgroup can be made: cgroup v1's pids hierarchy, or v2's root with the pids controller. */
function pidsRoot(): string | undefined {
  if (process.getuid?.() !== 0) return undefined;
  if (fs.existsSync('/sys/fs/cgroup/pids/cgroup.procs')) return '/sys/fs/cgroup/pids';
  try {
    if (fs.readFileSync('/sys/fs/cgroup/cgroup.subtree_control', 'utf8').split(/\s+/).includes('pids')) return '/sys/fs/cgroup';
  } catch {
    // no cgroup v2 hierarchy here
  }
  return undefined;
}

const root = pidsRoot();

const CHILD = `
const fs = require('fs');
// The addon as the package loads it (src/native.ts also gives it Node's errno names).
const { native } = require(require('path').join(process.argv[1], 'dist', 'src', 'native.js'));
fs.promises.stat('/').then(() => {
  fs.writeSync(1, 'ready\\n');
  process.stdin.once('data', () => {
    const [r, w] = native.pipe();
    const fileFd = fs.openSync(process.argv[2], 'w');
    native.streamCopy({ toFile: true, pipeFd: r, fileFd, offset: 0, bufferSize: 65536, align: 4096, threads: 4, slots: 6, padTail: false, dropCache: false }, new BigUint64Array(2)).then(
      () => fs.writeSync(1, 'resolved\\n'),
      (e) => fs.writeSync(1, JSON.stringify({ code: e.code, syscall: e.syscall }) + '\\n'),
    ).finally(() => process.exit(0));
    fs.closeSync(w);
  });
});
`;

requireOrSkip(root ? undefined : 'needs root and a pids cgroup controller (v1 or v2)')('a copy thread the kernel refuses', () => {
  test('streamCopy under a pids limit rejects with EAGAIN (pthread_create) instead of aborting', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-threads-'));
    const group = path.join(root!, `iohelper-test-${process.pid}`);
    fs.mkdirSync(group);
    try {
      const child = spawn(process.execPath, ['-e', CHILD, path.join(__dirname, '..'), path.join(dir, 'target')], { stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes('ready\n')) resolve();
        });
        child.on('close', () => reject(new Error(`child ended before it was ready: ${err}`)));
      });
      fs.writeFileSync(path.join(group, 'cgroup.procs'), String(child.pid));
      // One task more than the child already runs: the copy's first thread starts, the next is
      // refused, and the one started must be ended and joined before the copy reports.
      fs.writeFileSync(path.join(group, 'pids.max'), String(Number(fs.readFileSync(path.join(group, 'pids.current'), 'utf8')) + 1));
      child.stdin.write('go\n');
      const end = await exited;
      expect({ ...end, err }).toEqual({ code: 0, signal: null, err: '' });
      expect(JSON.parse(out.split('\n')[1])).toEqual({ code: 'EAGAIN', syscall: 'pthread_create' });
    } finally {
      fs.rmdirSync(group);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
