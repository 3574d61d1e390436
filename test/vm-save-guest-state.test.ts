/**
 * `iohelper vm save` owns its signals and its guest (issue 25 items 5 and 6), with real QEMU 10:
 * the save runs in the command's own process; SIGTERM or SIGINT during the copy ends it with one
 * line and exit 1, no helper process, no temporary, the old image intact and a guest that was
 * running running again; a save refused by its checks never pauses the guest.
 */
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as readline from 'readline';
import { QemuInstance } from '../src/vm/qemu-launch';
import { QmpClient } from '../src/qmp/client';
import { restoreVm } from '../src/vm/manager';
import { IOHELPER, lastLine, runHelper } from './support/cli';
import { createRamFile, describeQemu, fillPattern, machineArgs, sha256File, shmPath, startQemu } from './support/qemu';

const M = 1024 * 1024;

describeQemu('vm save: signals and the guest it found', () => {
  let dir: string;
  const running: QemuInstance[] = [];
  const ram = shmPath('vss-ram');
  const SIZE = 512 * M;

  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-vss-'));
    createRamFile(ram, SIZE);
    fillPattern(ram, 77, 0.1); // mostly random: zstd works for seconds on it
  });
  afterEach(async () => {
    await Promise.all(running.splice(0).map((v) => v.stop()));
  });
  afterAll(() => {
    fs.rmSync(dir, { recursive: true, force: true });
    for (const f of [ram, shmPath('vss-other-0'), shmPath('vss-other-1'), shmPath('vss-small')]) fs.rmSync(f, { force: true });
  });

  /** A running guest whose QMP socket is free for the command (QEMU serves one client at a time). */
  async function runningGuest(): Promise<string> {
    const vm = await startQemu({ ram: [{ id: 'ram0', path: ram, size: SIZE }], paused: false });
    running.push(vm);
    expect((await vm.qmp.execute('query-status')).status).toBe('running');
    return vm.release();
  }

  /** One QMP command on a fresh connection, closed again. */
  async function ask(sock: string, command: string): Promise<{ status: string }> {
    const q = await QmpClient.connect(sock);
    try {
      return await q.execute(command);
    } finally {
      q.close();
    }
  }

  const temporaries = (image: string) => fs.readdirSync(path.dirname(image)).filter((f) => f.startsWith(`.${path.basename(image)}.iohelper-`));
  /** Processes whose command line names the image (pgrep, not through a shell whose own line would match). */
  const processesNaming = (image: string) => spawnSync('pgrep', ['-f', '--', image], { encoding: 'utf8' }).stdout.trim();

  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    test(`${sig} during the copy: exit 1, one line, no helper or temporary left, the old image intact, the guest running again`, async () => {
      const sock = await runningGuest();
      const image = path.join(dir, `old-${sig}.img`);
      fs.writeFileSync(image, `the last good image (${sig})\n`.repeat(1000));
      const before = await sha256File(image);
      // Progress on fd 3: the signal goes once the copy has moved bytes (and is far from done:
      // zstd level 9 on this RAM takes seconds).
      const child = spawn(process.execPath, [IOHELPER, 'vm', 'save', '--qmp', sock, '--out', image, '--compress=zstd:9', '--jobs', '2', '--progress=3'], { stdio: ['ignore', 'pipe', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
      const lines = readline.createInterface({ input: child.stdio[3] as NodeJS.ReadableStream });
      let saw: { bytes: number; done: boolean } | undefined;
      for await (const l of lines) {
        const p = JSON.parse(l) as { bytes: number; done: boolean };
        if (p.bytes > 0) {
          saw = p;
          break;
        }
      }
      expect(saw).toMatchObject({ done: false });
      expect(temporaries(image)).toHaveLength(1);
      child.kill(sig);
      const end = await exited;
      expect({ ...end, stderr: stderr.split('\n').filter(Boolean) }).toEqual({ code: 1, signal: null, stderr: [expect.stringMatching(/save interrupted; .*old-SIG(TERM|INT)\.img is left as it was \(ECANCELED\)$/)] });
      expect(processesNaming(image)).toBe('');
      expect(temporaries(image)).toEqual([]);
      expect(await sha256File(image)).toBe(before);
      expect((await ask(sock, 'query-migrate')).status).toBe('cancelled');
      expect((await ask(sock, 'query-status')).status).toBe('running');
    });
  }

  test('SIGTERM during a --stream save: exit 1, one line, the helper ended, the guest running again', async () => {
    const sock = await runningGuest();
    const image = path.join(dir, 'stream.img');
    const child = spawn(process.execPath, [IOHELPER, 'vm', 'save', '--qmp', sock, '--out', image, '--stream'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
    // The stream has started once the file holds data (the helper writes it as QEMU sends it).
    for (const deadline = Date.now() + 60000; !(fs.existsSync(image) && fs.statSync(image).size > M); await new Promise((r) => setTimeout(r, 5))) {
      if (Date.now() > deadline) throw new Error(`the stream did not start within 60 s: ${stderr}`);
    }
    child.kill('SIGTERM');
    const end = await exited;
    expect({ ...end, stderr: stderr.split('\n').filter(Boolean) }).toEqual({ code: 1, signal: null, stderr: [expect.stringMatching(/save interrupted; .*stream\.img is incomplete \(the stream path writes in place\) \(ECANCELED\)$/)] });
    expect(processesNaming(image)).toBe('');
    expect((await ask(sock, 'query-status')).status).toBe('running');
  });

  test('a save refused by its checks leaves a running guest running: missing directory, missing base, another VM\'s base, the lazy VM\'s own image', async () => {
    const sock = await runningGuest();
    // Another VM's image: other RAM blocks (two of 16 MiB).
    const other = [shmPath('vss-other-0'), shmPath('vss-other-1')];
    other.forEach((p) => createRamFile(p, 16 * M));
    const otherImage = path.join(dir, 'other.img');
    const vm2 = await startQemu({ ram: other.map((p, i) => ({ id: `ram${i}`, path: p, size: 16 * M })) });
    running.push(vm2);
    expect((await runHelper(['vm', 'save', '--qmp', vm2.release(), '--out', otherImage], ['ignore', 'pipe'])).code).toBe(0);
    other.forEach((p) => fs.rmSync(p, { force: true }));
    const refusals: Array<[string[], RegExp]> = [
      [['--out', '/nonexistent-dir/x.img'], /nonexistent-dir/],
      [['--out', path.join(dir, 'd1.img'), '--base', '/nonexistent.img'], /nonexistent\.img.*ENOENT/],
      [['--out', path.join(dir, 'd2.img'), '--base', otherImage], /not those of the base/],
    ];
    for (const [args, why] of refusals) {
      const r = await runHelper(['vm', 'save', '--qmp', sock, ...args], ['ignore', 'pipe']);
      expect({ args, code: r.code, line: lastLine(r.stderr) }).toEqual({ args, code: 1, line: expect.stringMatching(why) });
      expect({ args, status: (await ask(sock, 'query-status')).status }).toEqual({ args, status: 'running' });
    }

    // A lazy VM maps its image: --stream --out at that image would destroy the RAM it runs on.
    const small = shmPath('vss-small');
    createRamFile(small, 64 * M);
    fillPattern(small, 5, 0.25);
    const lazyImage = path.join(dir, 'lazy.img');
    const src = await startQemu({ ram: [{ id: 'ram0', path: small, size: 64 * M }] });
    running.push(src);
    expect((await runHelper(['vm', 'save', '--qmp', src.release(), '--out', lazyImage], ['ignore', 'pipe'])).code).toBe(0);
    fs.rmSync(small, { force: true });
    const lazy = await restoreVm({ image: lazyImage, lazy: true, qemuArgs: machineArgs([{ id: 'ram0', path: shmPath('vss-lazy'), size: 64 * M }]) });
    running.push(lazy);
    await lazy.qmp.execute('cont');
    const lazySock = lazy.release();
    const imageBefore = await sha256File(lazyImage);
    const r = await runHelper(['vm', 'save', '--qmp', lazySock, '--out', lazyImage, '--stream'], ['ignore', 'pipe']);
    expect({ code: r.code, line: lastLine(r.stderr) }).toEqual({ code: 1, line: expect.stringMatching(/is the guest's RAM file/) });
    expect((await ask(lazySock, 'query-status')).status).toBe('running');
    expect(await sha256File(lazyImage)).toBe(imageBefore);
  });
});
