/**
 * Stream scenarios: a synthetic stream through a 1 MiB pipe into an O_DIRECT file (save) and
 * back out (restore), by our helper and by libvirt_iohelper, alternating, plus dd O_DIRECT
 * straight from/to the same bytes as the physical limit.
 */
import * as fs from 'fs';
import * as path from 'path';
import { native } from '../src/native';
import { packageRoot } from '../src/package-root';
import { commandExists, dropCaches } from './lib/host';
import { Measurement, measurePipeline, ProcSpec } from './lib/measure';
import { writePatternFile } from './lib/pattern';
import { alternatingOrder, summarize } from './lib/stats';
import { Row, summaryRows } from './lib/table';

export const LIBVIRT_IOHELPER = '/usr/lib/libvirt/libvirt_iohelper';
const PIPE_SIZE = 1 << 20;

export interface StreamBenchOptions {
  size: number;
  runs: number;
  dir: string;
  /** Where the source bytes live (tmpfs, so reading them costs no disk time). */
  srcDir: string;
}

interface Method {
  name: string;
  /** Builds the pipeline for one run. */
  save(src: string, dst: string): Promise<Measurement>;
  restore(src: string): Promise<Measurement>;
}

function pipePair(): [number, number] {
  const [r, w] = native.pipe();
  native.setPipeSize(w, PIPE_SIZE);
  return [r, w];
}

const O_DIRECT = fs.constants.O_DIRECT;
const openWriteDirect = (f: string) => fs.openSync(f, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | O_DIRECT, 0o600);

/** A helper in libvirt's form: feeder dd -> pipe -> helper -> O_DIRECT file, and back. */
function helperMethod(name: string, cmd: string, argsPrefix: string[]): Method {
  return {
    name,
    async save(src, dst) {
      const [r, w] = pipePair();
      const out = openWriteDirect(dst);
      const feeder: ProcSpec = { cmd: 'dd', args: [`if=${src}`, 'bs=1M', 'status=none'], stdio: ['ignore', w, 'pipe'] };
      const helper: ProcSpec = { cmd, args: [...argsPrefix, dst, '1'], stdio: [r, out, 'pipe'], measured: true };
      return measurePipeline([feeder, helper], [r, w, out]);
    },
    async restore(src) {
      const [r, w] = pipePair();
      const inp = fs.openSync(src, fs.constants.O_RDONLY | O_DIRECT);
      const helper: ProcSpec = { cmd, args: [...argsPrefix, src, '0'], stdio: [inp, w, 'pipe'], measured: true };
      const sink: ProcSpec = { cmd: 'dd', args: ['of=/dev/null', 'bs=1M', 'status=none'], stdio: [r, 'ignore', 'pipe'] };
      return measurePipeline([helper, sink], [r, w, inp]);
    },
  };
}

/** dd with O_DIRECT and 4 MiB blocks, no pipe: what the disk does on its own. */
const ddDirect: Method = {
  name: 'dd O_DIRECT (disk limit)',
  async save(src, dst) {
    return measurePipeline(
      [{ cmd: 'dd', args: [`if=${src}`, `of=${dst}`, 'bs=4M', 'oflag=direct', 'conv=fdatasync', 'status=none'], stdio: ['ignore', 'ignore', 'pipe'], measured: true }],
      [],
    );
  },
  async restore(src) {
    return measurePipeline(
      [{ cmd: 'dd', args: [`if=${src}`, 'of=/dev/null', 'bs=4M', 'iflag=direct', 'status=none'], stdio: ['ignore', 'ignore', 'pipe'], measured: true }],
      [],
    );
  },
};

function verifySameSize(a: string, b: string): void {
  const sa = fs.statSync(a).size;
  const sb = fs.statSync(b).size;
  if (sa !== sb) throw new Error(`bench: ${b} has ${sb} bytes, expected ${sa}`);
}

export async function benchStream(o: StreamBenchOptions): Promise<Row[]> {
  const ours = helperMethod('iohelper (ours)', process.execPath, [path.join(packageRoot(), 'bin', 'iohelper')]);
  const methods: Method[] = [ours];
  const rows: Row[] = [];
  if (commandExists(LIBVIRT_IOHELPER)) methods.push(helperMethod('libvirt_iohelper', LIBVIRT_IOHELPER, []));
  methods.push(ddDirect);

  const src = path.join(o.srcDir, `iohelper-bench-src-${process.pid}`);
  const dst = path.join(o.dir, `iohelper-bench-dst-${process.pid}`);
  writePatternFile(src, o.size);
  const save = new Map<string, Measurement[]>();
  const restore = new Map<string, Measurement[]>();
  try {
    for (const order of alternatingOrder(methods, o.runs)) {
      for (const m of order) {
        dropCaches();
        const s = await m.save(src, dst);
        verifySameSize(src, dst);
        dropCaches();
        const r = await m.restore(dst);
        save.set(m.name, [...(save.get(m.name) ?? []), s]);
        restore.set(m.name, [...(restore.get(m.name) ?? []), r]);
        fs.rmSync(dst, { force: true });
        console.error(`  ${m.name}: save ${s.wallS.toFixed(2)} s, restore ${r.wallS.toFixed(2)} s`);
      }
    }
  } finally {
    fs.rmSync(src, { force: true });
    fs.rmSync(dst, { force: true });
  }
  const names = methods.map((m) => m.name);
  const asRuns = (xs: Map<string, Measurement[]>) => new Map([...xs].map(([k, v]) => [k, v.map((x) => ({ wallS: x.wallS, cpuS: x.cpuS, memMiB: x.maxRssMiB }))]));
  const libvirt = { method: 'libvirt_iohelper', label: 'libvirt_iohelper' };
  for (const [scenario, data] of [
    ['stream-save', save],
    ['stream-restore', restore],
  ] as const) {
    rows.push(...summaryRows(scenario, o.size, names, asRuns(data), libvirt));
    if (!data.has(libvirt.method)) rows.push({ scenario, method: libvirt.method, bytes: o.size, wall: summarize([]), cpuS: summarize([]), maxRssMiB: summarize([]), note: `not installed (${LIBVIRT_IOHELPER})` });
  }
  return rows;
}
