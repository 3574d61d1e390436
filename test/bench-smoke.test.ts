/**
 * `npm run bench -- --quick` as a smoke test of the harness: every scenario runs, every method
 * present on this host produced timings, missing peers are reported, and the parallel scenario
 * verified restored RAM (it throws otherwise). Speed is not asserted here.
 */
import { execFile } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { describeQemu } from './support/qemu';

const MAIN = path.join(__dirname, '..', 'dist', 'bench', 'main.js');

describeQemu('bench --quick', () => {
  test('stream, parallel, vm-e2e, clone and startup scenarios produce complete rows', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-bench-smoke-'));
    const json = path.join(dir, 'out.json');
    try {
      await new Promise<void>((resolve, reject) =>
        execFile(process.execPath, [MAIN, 'stream', 'parallel', 'vm-e2e', 'clone', 'startup', '--quick', '--no-record', '--dir', dir, '--json', json], { maxBuffer: 1 << 24 }, (err, _out, stderr) =>
          err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(),
        ),
      );
      const { rows, notes } = JSON.parse(fs.readFileSync(json, 'utf8'));
      const scenarios = new Set(rows.map((r: { scenario: string }) => r.scenario));
      expect([...scenarios].sort()).toEqual(['clone', 'parallel-restore scattered', 'parallel-save scattered', 'startup', 'stream-restore', 'stream-save', 'vm-e2e-restore scattered', 'vm-e2e-save scattered']);
      const e2e = rows.filter((r: { scenario: string }) => r.scenario === 'vm-e2e-save scattered').map((r: { method: string }) => r.method);
      expect(e2e).toEqual(expect.arrayContaining(['classic stream through iohelper', 'iohelper image, jobs 2 (end to end)', 'QEMU mapped-ram + multifd(2)', 'QEMU mapped-ram + multifd(2) + direct-io']));
      for (const r of rows) {
        if (r.note) {
          expect(r.note).toMatch(/not installed/);
          continue;
        }
        expect(r.wall.n).toBeGreaterThanOrEqual(1);
        expect(r.wall.median).toBeGreaterThan(0);
        expect(Number.isFinite(r.wall.median)).toBe(true);
      }
      const methods = rows.filter((r: { scenario: string }) => r.scenario === 'parallel-save scattered').map((r: { method: string }) => r.method);
      const qemu = ['QEMU mapped-ram + multifd(2) + direct-io', 'QEMU mapped-ram + multifd(2)', 'QEMU mapped-ram + multifd(4) + direct-io', 'QEMU mapped-ram + multifd(4)'];
      expect(methods).toEqual(expect.arrayContaining(['iohelper image, jobs 1 (end to end)', 'iohelper image, jobs 2 (end to end)', ...qemu]));
      const restores = rows.filter((r: { scenario: string }) => r.scenario === 'parallel-restore scattered').map((r: { method: string }) => r.method);
      expect(restores).toEqual(expect.arrayContaining(['read into fresh RAM file (fill-ram, 2 threads, 8 MiB)', 'iohelper image, jobs 2, --no-verify (end to end)', 'iohelper restore alone (helper only, no QEMU), jobs 2', ...qemu]));
      // Every ratio is to the fastest QEMU variant of its direction: for a save, durable against durable.
      const baselineOf = (scenario: string) => (scenario.startsWith('parallel-save') ? 'QEMU best durable' : 'QEMU best');
      expect(rows.filter((r: { scenario: string; baseline?: string }) => r.scenario.startsWith('parallel-') && r.baseline !== baselineOf(r.scenario))).toEqual([]);
      expect(notes.join('\n')).toMatch(/Memory profile scattered: 100\.0 % of RAM touched, 2\d\.\d % touched but zero/);
      expect(notes.join('\n')).toMatch(/scattered restore, iohelper image, jobs 2 \(end to end\): [\d.]+ s; [\d.]+x the limit \(read into fresh RAM file.*QEMU best \(QEMU mapped-ram/);
      const startup = rows.filter((r: { scenario: string }) => r.scenario === 'startup').map((r: { method: string }) => r.method);
      expect(startup).toEqual(expect.arrayContaining(['node -e 0 (the floor for any Node program)', 'iohelper restore of a tiny image (4 MiB block, 1 MiB data)']));
      const stream = rows.filter((r: { scenario: string }) => r.scenario === 'stream-save').map((r: { method: string }) => r.method);
      expect(stream).toEqual(expect.arrayContaining(['iohelper (ours)', 'libvirt_iohelper']));
      expect(notes.join('\n')).toMatch(/4 clones of a 0\.3 GiB image/);
      expect(fs.readdirSync(dir).filter((f) => f !== 'out.json')).toEqual([]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 240000);
});
