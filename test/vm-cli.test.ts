/** `iohelper vm save | clone | restore` end to end with real QEMU 10. */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { QmpClient } from '../src/qmp/client';
import { lastLine, runHelper } from './support/cli';
import { createRamFile, describeQemu, fillPattern, machineArgs, shmPath, startQemu } from './support/qemu';

const M = 1024 * 1024;

describeQemu('iohelper vm CLI', () => {
  let dir: string;
  const pids: number[] = [];
  const ram = shmPath('vmcli');
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-vmcli-'));
    createRamFile(ram, 128 * M);
    fillPattern(ram, 5, 0.25);
  });
  afterAll(() => {
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(ram, { force: true });
    fs.rmSync(shmPath('vmcli-restored'), { force: true });
  });

  function started(stdout: string): Array<{ pid: number; sock: string }> {
    return [...stdout.matchAll(/pid (\d+), QMP (\S+), (paused|running)/g)].map((m) => ({ pid: Number(m[1]), sock: m[2] }));
  }

  test('save a running QEMU by its QMP socket, clone it twice, restore it', async () => {
    const vm = await startQemu({ ram: [{ id: 'ram0', path: ram, size: 128 * M }] });
    const sock = vm.release();
    const image = path.join(dir, 'vm.img');
    const saved = await runHelper(['vm', 'save', '--qmp', sock, '--out', image, '--direct'], ['ignore', 'pipe']);
    await vm.stop();
    expect({ code: saved.code, stderr: saved.stderr }).toEqual({ code: 0, stderr: '' });
    expect(saved.stdout.toString()).toMatch(/^saved ram0 to .*vm\.img in \d+\.\d+ s/);

    const args = machineArgs([{ id: 'ram0', path: shmPath('vmcli-restored'), size: 128 * M }]);
    const clones = await runHelper(['vm', 'clone', '--image', image, '--count', '2', '--log-dir', dir, '--', ...args], ['ignore', 'pipe']);
    expect(clones.code).toBe(0);
    const restored = await runHelper(['vm', 'restore', '--image', image, '--cont', '--log-dir', dir, '--', ...args], ['ignore', 'pipe']);
    expect(restored.code).toBe(0);
    const all = [...started(clones.stdout.toString()), ...started(restored.stdout.toString())];
    pids.push(...all.map((a) => a.pid));
    expect(all).toHaveLength(3);
    const states = [];
    for (const a of all) {
      const q = await QmpClient.connect(a.sock);
      states.push([(await q.execute('query-migrate')).status, (await q.execute('query-status')).status]);
      await q.execute('quit').catch(() => undefined);
      q.close();
    }
    expect(states[0]).toEqual(['completed', 'prelaunch']);
    expect(states[1]).toEqual(['completed', 'prelaunch']);
    expect(states[2]).toEqual(['completed', 'running']);
  });

  test('vm save and vm restore --progress: JSON lines on stderr, the last one done with every byte', async () => {
    const vm = await startQemu({ ram: [{ id: 'ram0', path: ram, size: 128 * M }] });
    const image = path.join(dir, 'progress.img');
    const saved = await runHelper(['vm', 'save', '--qmp', vm.release(), '--out', image, '--progress'], ['ignore', 'pipe']);
    await vm.stop();
    const restoredRam = shmPath('vmcli-progress');
    const restored = await runHelper(['vm', 'restore', '--image', image, '--log-dir', dir, '--progress', '--', ...machineArgs([{ id: 'ram0', path: restoredRam, size: 128 * M }])], ['ignore', 'pipe']);
    pids.push(...started(restored.stdout.toString()).map((a) => a.pid));
    fs.rmSync(restoredRam, { force: true });
    for (const r of [saved, restored]) {
      expect(r.code).toBe(0);
      const lines = r.stderr.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { bytes: number; total: number; done: boolean });
      expect(lines[lines.length - 1]).toMatchObject({ done: true, total: expect.any(Number) });
      expect(lines[lines.length - 1].bytes).toBeGreaterThanOrEqual(128 * M);
    }
  });

  test('clone with QEMU arguments whose backend ids do not match the image: clear error', async () => {
    const image = path.join(dir, 'vm.img');
    const r = await runHelper(['vm', 'clone', '--image', image, '--count', '1', '--', ...machineArgs([{ id: 'other', path: '/x', size: 128 * M }])], ['ignore', 'pipe']);
    expect(r.code).toBe(1);
    expect(lastLine(r.stderr)).toMatch(/memory-backend-file ids must be the image's blocks \(ram0\); missing: ram0; not in the image: other/);
  });
});
