/** The QMP client and the QEMU test helpers against real QEMU 10 guests with file-backed RAM. */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { QmpClient, QmpError, QmpEvent, waitForMigration } from '../src/qmp/client';
import {
  createRamFile,
  describeQemu,
  fillPattern,
  filesEqual,
  QemuInstance,
  RamSpec,
  sha256File,
  shmPath,
  startQemu,
} from './support/qemu';

const MiB = 1024 * 1024;

/** Tracks RAM files and guests so every test's leftovers are removed even when it fails. */
function resources() {
  const files: string[] = [];
  const guests: QemuInstance[] = [];
  afterEach(async () => {
    await Promise.all(guests.splice(0).map((g) => g.stop()));
    for (const f of files.splice(0)) fs.rmSync(f, { force: true });
  });
  return {
    /** A RAM file on /dev/shm for block `id`, patterned when `seed` is given. */
    ramFile(id: string, size: number, seed?: number): RamSpec {
      const p = shmPath(id);
      files.push(p);
      createRamFile(p, size);
      if (seed !== undefined) fillPattern(p, seed);
      return { id, path: p, size };
    },
    track(p: string): string {
      files.push(p);
      return p;
    },
    async start(opts: Parameters<typeof startQemu>[0]): Promise<QemuInstance> {
      const g = await startQemu(opts);
      guests.push(g);
      return g;
    },
  };
}

describeQemu('QMP client against QEMU 10', () => {
  const res = resources();
  const start = (size = 256 * MiB) => res.start({ ram: [res.ramFile('ram0', size)] });

  it('reports a paused, not running guest', async () => {
    const { qmp } = await start();
    const status = await qmp.execute('query-status');
    expect(['prelaunch', 'paused']).toContain(status.status);
    expect(status.running).toBe(false);
  });

  it('matches concurrent replies to their commands', async () => {
    const { qmp } = await start();
    const [version, status, name, memdevs] = await Promise.all([
      qmp.execute('query-version'),
      qmp.execute('query-status'),
      qmp.execute('query-name'),
      qmp.execute('query-memdev'),
    ]);
    expect(version.qemu.major).toBeGreaterThanOrEqual(10);
    expect(status.running).toBe(false);
    expect(name).toEqual({});
    expect(memdevs.map((m: any) => m.id)).toEqual(['ram0']);
  });

  it('rejects an unknown command with a QmpError', async () => {
    const { qmp } = await start();
    const err = await qmp.execute('no-such-command').catch((e) => e);
    expect(err).toBeInstanceOf(QmpError);
    expect(err.qmpClass).toBe('CommandNotFound');
    expect(err.desc).toMatch(/no-such-command/);
    expect(err.message).toBe(`QMP no-such-command: CommandNotFound: ${err.desc}`);
  });

  it('delivers events (cont -> RESUME, stop -> STOP)', async () => {
    const { qmp } = await start();
    const seen: QmpEvent[] = [];
    qmp.on('event', (ev) => seen.push(ev));

    const resumed = qmp.waitEvent('RESUME', 10_000);
    await qmp.execute('cont');
    await resumed;
    const stopped = qmp.waitEvent('STOP', 10_000);
    await qmp.execute('stop');
    await stopped;

    expect(seen.map((ev) => ev.event)).toEqual(expect.arrayContaining(['RESUME', 'STOP']));
    expect(seen[0].timestamp).toHaveProperty('seconds');
    expect((await qmp.execute('query-status')).status).toBe('paused');
    await expect(qmp.waitEvent('NEVER', 50)).rejects.toThrow(/NEVER: timed out after 50 ms/);
  });

  it('waitForMigration resolves on completion and rejects with the error description on failure', async () => {
    const { qmp, dir } = await start(64 * MiB);
    await qmp.execute('migrate', { uri: 'exec:false' });
    await expect(waitForMigration(qmp, { timeoutMs: 10_000, pollMs: 20 })).rejects.toThrow(/migration failed: .+/);

    await qmp.execute('migrate', { uri: `file:${path.join(dir, 'state')}` });
    const done = await waitForMigration(qmp, { timeoutMs: 60_000, pollMs: 20 });
    expect(done.status).toBe('completed');
    expect(done.ram.total).toBeGreaterThanOrEqual(64 * MiB);
  });

  it('rejects new commands after quit', async () => {
    const { qmp, proc } = await start();
    const shutdown = qmp.waitEvent('SHUTDOWN', 10_000);
    await qmp.execute('quit');
    expect(await shutdown).toMatchObject({ guest: false });
    await qmp.closed;
    await expect(qmp.execute('query-status')).rejects.toThrow('QMP query-status: the QEMU monitor closed the connection');
    await expect(qmp.waitEvent('STOP', 1000)).rejects.toThrow(/monitor closed/);
    await new Promise((resolve) => (proc.exitCode === null ? proc.once('exit', resolve) : resolve(null)));
    expect(proc.exitCode).toBe(0);
  });

  it('rejects pending commands when QEMU dies', async () => {
    const { qmp, proc } = await start();
    proc.kill('SIGSTOP'); // QEMU cannot answer: the command stays pending
    const pending = qmp.execute('query-status');
    proc.kill('SIGKILL');
    await expect(pending).rejects.toThrow(/^QMP query-status: the QEMU monitor closed the connection/);
  });

  it('rejects commands after close() and times out unanswered ones', async () => {
    const { qmp, proc } = await start();
    proc.kill('SIGSTOP');
    try {
      await expect(qmp.execute('query-status', undefined, { timeoutMs: 100 })).rejects.toThrow(
        'QMP query-status: no reply within 100 ms',
      );
    } finally {
      proc.kill('SIGCONT');
    }
    qmp.close();
    await expect(qmp.execute('query-status')).rejects.toThrow('QMP query-status: the QMP client was closed');
  });

  it('gives up connecting when nothing listens', async () => {
    const missing = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-qmp-')), 'none.sock');
    try {
      await expect(QmpClient.connect(missing, { retryUntilMs: 200 })).rejects.toThrow(/QMP connect .*ENOENT/);
    } finally {
      fs.rmSync(path.dirname(missing), { recursive: true, force: true });
    }
  });
});

describeQemu('QEMU test guests', () => {
  const res = resources();

  it('runs two RAM files as two NUMA nodes', async () => {
    const ram = [
      res.ramFile('ram0', 128 * MiB),
      res.ramFile('ram1', 256 * MiB),
    ];
    const { qmp } = await res.start({ ram });

    const memdevs = await qmp.execute('query-memdev');
    const byId = Object.fromEntries(memdevs.map((m: any) => [m.id, m]));
    expect(byId.ram0).toMatchObject({ size: 128 * MiB, share: true });
    expect(byId.ram1).toMatchObject({ size: 256 * MiB, share: true });
    expect((await qmp.execute('query-memory-size-summary'))['base-memory']).toBe(384 * MiB);
    const cpus = await qmp.execute('query-cpus-fast');
    expect(cpus.map((c: any) => c.props['node-id']).sort()).toEqual([0, 1]);
  });

  it('leaves a patterned RAM file unchanged across a paused start and quit', async () => {
    const ram = res.ramFile('pattern', 256 * MiB, 42);
    const copy = res.track(shmPath('pattern-copy'));
    fs.copyFileSync(ram.path, copy);
    const before = await sha256File(ram.path);

    const guest = await res.start({ ram: [ram] });
    expect((await guest.qmp.execute('query-status')).running).toBe(false);
    await guest.stop();

    expect(await sha256File(ram.path)).toBe(before);
    expect(await filesEqual(ram.path, copy)).toEqual({ equal: true });
  });

  it('rejects with QEMU stderr when QEMU cannot start', async () => {
    const ram = res.ramFile('short', 4 * MiB);
    await expect(res.start({ ram: [{ ...ram, size: 2 * MiB }], offsets: [4 * MiB] })).rejects.toThrow(
      /QEMU failed to start[\s\S]*too small/,
    );
  });
});

describe('QMP stream parsing', () => {
  it('reassembles messages split across chunks, including inside a UTF-8 character', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-qmp-'));
    const socketPath = path.join(dir, 'qmp.sock');
    // A scripted monitor that dribbles its output in awkward pieces.
    const server = net.createServer((conn) => {
      const greeting = Buffer.from('{"QMP": {"version": {}, "capabilities": []}}\n');
      for (let i = 0; i < greeting.length; i++) conn.write(greeting.subarray(i, i + 1));
      let input = '';
      conn.on('data', (d) => {
        input += d;
        for (let nl; (nl = input.indexOf('\n')) >= 0; input = input.slice(nl + 1)) {
          const { execute, id } = JSON.parse(input.slice(0, nl));
          if (execute === 'qmp_capabilities') {
            conn.write(JSON.stringify({ return: {}, id }) + '\n');
            continue;
          }
          const event = JSON.stringify({ event: 'X', data: {}, timestamp: { seconds: 1, microseconds: 2 } });
          const reply = Buffer.from(`${event}\n${JSON.stringify({ return: { name: 'vm-ü' }, id })}\n`);
          const cut = reply.indexOf(0xc3) + 1; // between the two bytes of 'ü'
          conn.write(reply.subarray(0, cut));
          setTimeout(() => conn.write(reply.subarray(cut)), 20);
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
    const qmp = await QmpClient.connect(socketPath);
    try {
      const event = qmp.waitEvent('X', 5000);
      expect(await qmp.execute('query-name')).toEqual({ name: 'vm-ü' });
      expect(await event).toEqual({});
    } finally {
      qmp.close();
      await new Promise((resolve) => server.close(resolve));
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('RAM file helpers', () => {
  const files: string[] = [];
  afterEach(() => files.splice(0).forEach((f) => fs.rmSync(f, { force: true })));
  const file = (label: string, size: number) => {
    const p = shmPath(label);
    files.push(p);
    createRamFile(p, size);
    return p;
  };

  it('fills a deterministic pattern with about the requested share of zero pages', async () => {
    const a = file('fill-a', 16 * MiB);
    const b = file('fill-b', 16 * MiB);
    const stats = fillPattern(a, 7, 0.25);
    fillPattern(b, 7, 0.25);
    expect(stats.pages).toBe(4096);
    expect(stats.zeroPages / stats.pages).toBeGreaterThan(0.2);
    expect(stats.zeroPages / stats.pages).toBeLessThan(0.3);
    expect(await filesEqual(a, b)).toEqual({ equal: true });

    const data = fs.readFileSync(a);
    const pages = new Set<string>();
    let zero = 0;
    for (let off = 0; off < data.length; off += 4096) {
      const page = data.subarray(off, off + 4096);
      if (page.every((x) => x === 0)) zero++;
      else pages.add(page.toString('base64'));
    }
    expect(zero).toBe(stats.zeroPages);
    expect(pages.size).toBe(stats.pages - stats.zeroPages);

    fillPattern(b, 8, 0.25);
    expect((await filesEqual(a, b)).equal).toBe(false);
  });

  it('reports the first differing offset', async () => {
    const a = file('diff-a', 8 * MiB + 4096);
    const b = file('diff-b', 8 * MiB + 4096);
    fillPattern(a, 1);
    fs.copyFileSync(a, b);
    const fd = fs.openSync(b, 'r+');
    fs.writeSync(fd, Buffer.from([0xff ^ fs.readFileSync(a)[5 * MiB + 3]]), 0, 1, 5 * MiB + 3);
    fs.closeSync(fd);
    expect(await filesEqual(a, b)).toEqual({ equal: false, firstDiff: 5 * MiB + 3 });

    fs.truncateSync(b, 4 * MiB);
    expect(await filesEqual(a, b)).toEqual({ equal: false, firstDiff: 4 * MiB });
    expect(await sha256File(a)).not.toBe(await sha256File(b));
  });
});
