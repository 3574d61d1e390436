/**
 * incremental scenario: delta images (issue 20) on a real guest that rewrites part of its
 * memory between saves. The test guest in rewrite mode (bench/lib/rewrite-guest.ts: the real
 * profile's workload, then PCT % of its RAM rewritten inside the guest in scattered 4 KiB-1 MiB
 * runs per request), TCG, RAM a shared file on /dev/shm.
 *
 * Saves, for PCT in 1, 5, 25, each run: a full base image (ours, not timed) -> the guest
 * rewrites PCT % -> pause -> side by side, alternating order, page cache dropped before each:
 * our full save, our incremental save against that base (saveVm `base`), QEMU's mapped-ram
 * (4 channels + direct-io, its best in the parallel scenario) -> cont. Bytes written (apparent
 * and allocated), wall time (the call, end to end) and CPU time (the helper, this process and
 * QEMU during the save).
 *
 * Restores: a chain of 4 deltas (each after a 5 % rewrite), then our end-to-end restore
 * (restoreVm into a fresh RAM file on /dev/shm, to a loaded, paused QEMU) of the depth-1 and
 * depth-4 chains against their flattened images (`iohelper convert --flatten`); the restored
 * RAM is compared with the guest's RAM at the time of the top save. Before each restore the
 * page cache is dropped and QEMU's own files read back (a host that restores VMs has QEMU
 * cached; a cold QEMU on the throttled disk misses its start deadline behind the restore's reads).
 *
 * Both on the local disk and throttled to `throttle` bytes/s each way (bench/lib/throttle.ts).
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { packageRoot } from '../src/package-root';
import { filesEqual } from './lib/ram-file';
import { restoreVm } from '../src/vm/manager';
import { cpuMeter, fileBytes, mappedRamSave, oursSave, pauseForSave, SaveSample } from './lib/guest-saves';
import { QemuInstance, qemuAvailable } from '../src/vm/qemu-launch';
import { copyExtents } from './lib/fill-ram';
import { dropCaches, warmQemu } from './lib/host';
import { RewriteGuest, rewriteGuestArgs, startRewriteGuest } from './lib/rewrite-guest';
import { GUEST_DIR } from './lib/test-guest';
import { alternatingOrder, summarize } from './lib/stats';
import { Row, RunSample, summaryRows } from './lib/table';
import { createThrottle, Throttle, throttleUnavailable } from './lib/throttle';
import { mappedRamName, synced } from './parallel';

export interface IncrementalBenchOptions {
  size: number;
  runs: number;
  dir: string;
  /** Bytes per second of the throttled disk, each way (0: local disk only). */
  throttle: number;
  /** Shares of RAM the guest rewrites before the saves (default 1, 5, 25). */
  pcts?: number[];
}

const M = 2 ** 20;
const CHAIN_DEPTH = 4;
const CHAIN_PCT = 5;
const QEMU_CHANNELS = 4;
const FULL = 'full save (ours)';
const INCR = 'incremental save --base (ours)';
const QEMU_MR = mappedRamName(QEMU_CHANNELS, true);
const IOHELPER = () => path.join(packageRoot(), 'bin', 'iohelper');

const secondsSince = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e9;

/** `iohelper convert --flatten` (O_DIRECT): one standalone image of a chain; seconds. */
function flatten(delta: string, out: string): number {
  fs.rmSync(out, { force: true });
  const t0 = process.hrtime.bigint();
  const r = spawnSync(process.execPath, [IOHELPER(), 'convert', '--flatten', '--direct', delta, out], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`iohelper convert --flatten ${delta} failed: ${(r.stderr || r.error?.message || '').trim()}`);
  return secondsSince(t0);
}

interface Storage {
  label: string;
  bps: number;
}

/** Runs `body` with this process (so every child it starts) and `pids` throttled to the storage's speed. */
async function onStorage<T>(st: Storage, dir: string, pids: number[], body: (throttle?: Throttle) => Promise<T>): Promise<T> {
  if (!st.bps) return body();
  const throttle = createThrottle(dir, st.bps);
  try {
    for (const p of [process.pid, ...pids]) throttle.add(p);
    return await body(throttle);
  } finally {
    throttle.close();
  }
}

const add = <K, T>(m: Map<K, T[]>, k: K, v: T) => m.set(k, [...(m.get(k) ?? []), v]);
const med = (xs: number[]) => summarize(xs).median;
const gb = (n: number) => `${(n / 1e9).toFixed(3)} GB`;

interface SaveResults {
  /** By PCT: method -> samples. */
  byPct: Map<number, Map<string, SaveSample[]>>;
  rewritten: Map<number, number[]>;
}

async function saveRuns(g: RewriteGuest, st: Storage, o: IncrementalBenchOptions, pcts: number[], files: { base: string; full: string; delta: string; mr: string }, seed: { n: number }, throttle?: Throttle): Promise<SaveResults> {
  const methods: Array<{ name: string; run: () => Promise<SaveSample> }> = [
    { name: FULL, run: () => oursSave(g.vm, files.full) },
    { name: INCR, run: () => oursSave(g.vm, files.delta, { base: files.base }) },
    { name: QEMU_MR, run: () => mappedRamSave(g.vm, files.mr, QEMU_CHANNELS, true) },
  ];
  const out: SaveResults = { byPct: new Map(), rewritten: new Map() };
  for (const pct of pcts) {
    const data = new Map<string, SaveSample[]>();
    out.byPct.set(pct, data);
    for (const order of alternatingOrder(methods, o.runs)) {
      // The base is not what is measured: written at the disk's full speed.
      if (throttle) throttle.remove(process.pid);
      await oursSave(g.vm, files.base);
      if (throttle) throttle.add(process.pid);
      await g.vm.qmp.execute('cont');
      const r = await g.rewrite(pct, seed.n++);
      add(out.rewritten, pct, r.bytes);
      const parts: string[] = [];
      for (const m of order) {
        await pauseForSave(g.vm);
        dropCaches();
        const s = await m.run();
        add(data, m.name, s);
        if (s.syncedWallS !== undefined) add(data, synced(m.name), { ...s, wallS: s.syncedWallS });
        parts.push(`${m.name} ${s.wallS.toFixed(2)} s ${gb(s.allocated)}`);
      }
      await g.vm.qmp.execute('cont');
      console.error(`  incremental ${st.label} ${pct} % (rewrote ${(r.bytes / M).toFixed(0)} MiB): ${parts.join(', ')}`);
    }
  }
  return out;
}

/** Saves a base and CHAIN_DEPTH deltas, each after a CHAIN_PCT rewrite; copies the guest's RAM at the depth-1 and top saves. */
async function buildChain(g: RewriteGuest, dir: string, seed: { n: number }): Promise<{ images: string[]; refs: Map<number, string> }> {
  const images = [path.join(dir, 'chain-0.img')];
  const refs = new Map<number, string>();
  await oursSave(g.vm, images[0]);
  for (let d = 1; d <= CHAIN_DEPTH; d++) {
    await g.vm.qmp.execute('cont');
    await g.rewrite(CHAIN_PCT, seed.n++);
    images.push(path.join(dir, `chain-${d}.img`));
    await oursSave(g.vm, images[d], { base: images[d - 1] });
    if (d === 1 || d === CHAIN_DEPTH) {
      const ref = `/dev/shm/iohelper-incr-ref${d}-${process.pid}`;
      fs.rmSync(ref, { force: true });
      copyExtents(g.ram, ref);
      refs.set(d, ref);
    }
  }
  return { images, refs };
}

/** Our end-to-end restore into a fresh RAM file: restoreVm to a loaded, paused QEMU. */
async function oursRestore(image: string, size: number, dst: string, dir: string): Promise<RunSample> {
  fs.rmSync(dst, { force: true });
  const sock = path.join(dir, `incr-restore-${process.pid}.sock`);
  let vm: QemuInstance | undefined;
  const cpu = cpuMeter(() => vm?.proc.pid);
  const t0 = process.hrtime.bigint();
  vm = await restoreVm({ image, qemuArgs: rewriteGuestArgs(size, dst, sock), direct: true });
  const wallS = secondsSince(t0);
  const cpuS = cpu();
  await vm.stop();
  fs.rmSync(sock, { force: true });
  return { wallS, cpuS, memMiB: NaN };
}

export async function benchIncremental(o: IncrementalBenchOptions): Promise<{ rows: Row[]; notes: string[] }> {
  const q = qemuAvailable();
  if (!q.ok) throw new Error(`the incremental scenario needs QEMU 10 (${q.why}); sudo bash scripts/install-qemu.sh --bench`);
  const pcts = o.pcts ?? [1, 5, 25];
  // The guest's RAM, two reference copies and a restored copy at once (sparse: less in practice).
  const shm = fs.statfsSync('/dev/shm');
  if (shm.bavail * shm.bsize < 4 * o.size) throw new Error(`the incremental scenario needs 4 x ${o.size / M} MiB free on /dev/shm (${Math.floor((shm.bavail * shm.bsize) / M)} MiB free)`);
  const dir = fs.mkdtempSync(path.join(o.dir, 'incremental-'));
  const files = { base: path.join(dir, 'base.img'), full: path.join(dir, 'full.img'), delta: path.join(dir, 'delta.img'), mr: path.join(dir, 'mapped-ram.img') };
  const dst = `/dev/shm/iohelper-incr-restored-${process.pid}`;
  const rows: Row[] = [];
  const notes: string[] = [];
  const storages: Storage[] = [{ label: 'local disk', bps: 0 }];
  const why = throttleUnavailable();
  if (o.throttle && why) notes.push(`incremental: throttled storage not run: ${why}`);
  else if (o.throttle) storages.push({ label: `${o.throttle / 1e6} MB/s`, bps: o.throttle });
  const seed = { n: 1 };
  const saves = new Map<string, SaveResults>();
  let chain: { images: string[]; refs: Map<number, string> } | undefined;
  const flat = new Map<number, { image: string; seconds: number }>();
  try {
    const g = await startRewriteGuest(o.size, dir, 'incr');
    try {
      for (const st of storages) saves.set(st.label, await onStorage(st, o.dir, [g.vm.proc.pid!], (t) => saveRuns(g, st, o, pcts, files, seed, t)));
      for (const f of [files.full, files.delta, files.mr, files.base]) fs.rmSync(f, { force: true });
      chain = await buildChain(g, dir, seed);
    } finally {
      await g.stop();
    }
    for (const d of [1, CHAIN_DEPTH]) {
      const image = path.join(dir, `flat-${d}.img`);
      dropCaches();
      flat.set(d, { image, seconds: flatten(chain.images[d], image) });
    }
    const c = chain;
    const restoreMethods = [1, CHAIN_DEPTH].flatMap((d) => [
      { name: `chain of depth ${d} (base + ${d} delta${d > 1 ? 's' : ''})`, image: c.images[d], ref: c.refs.get(d)! },
      { name: `flattened depth-${d} chain (convert --flatten)`, image: flat.get(d)!.image, ref: c.refs.get(d)! },
    ]);
    for (const st of storages) {
      const data = new Map<string, RunSample[]>();
      await onStorage(st, o.dir, [], async () => {
        for (const [run, order] of alternatingOrder(restoreMethods, o.runs).entries()) {
          for (const m of order) {
            dropCaches();
            warmQemu(['vmlinuz', 'initrd.gz'].map((f) => path.join(GUEST_DIR(), f)));
            const s = await oursRestore(m.image, o.size, dst, dir);
            add(data, m.name, s);
            if (run === 0) {
              const eq = await filesEqual(dst, m.ref);
              if (!eq.equal) throw new Error(`${m.name}: the restored RAM differs from the guest's at the top save (first difference at byte ${eq.firstDiff})`);
            }
            console.error(`  incremental restore ${st.label} ${m.name}: ${s.wallS.toFixed(2)} s`);
          }
        }
      });
      const names = restoreMethods.map((m) => m.name);
      rows.push(...summaryRows(`incremental-restore ${st.label}`, o.size, names, data));
      const wall = (n: string) => med((data.get(n) ?? []).map((x) => x.wallS));
      notes.push(
        `incremental restore, ${st.label}: ` +
          [1, CHAIN_DEPTH].map((d) => `depth ${d} chain ${wall(names[d === 1 ? 0 : 2]).toFixed(2)} s / flattened ${wall(names[d === 1 ? 1 : 3]).toFixed(2)} s = ${(wall(names[d === 1 ? 0 : 2]) / wall(names[d === 1 ? 1 : 3])).toFixed(2)}`).join('; ') +
          ' (chain restore ÷ flat restore; restored RAM compared with the guest\'s at the top save: equal).',
      );
    }
    const sizes = chain.images.map((f, d) => `${d === 0 ? 'base' : `delta ${d}`} ${gb(fileBytes(f).allocated)}`).join(', ');
    notes.push(`incremental chain: ${sizes} allocated (each delta after a ${CHAIN_PCT} % rewrite); convert --flatten took ${[...flat].map(([d, f]) => `${f.seconds.toFixed(2)} s at depth ${d}`).join(', ')}.`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(dst, { force: true });
    for (const r of chain?.refs.values() ?? []) fs.rmSync(r, { force: true });
  }

  // Save rows and ratios.
  const byteLines = ['| storage | rewritten | method | image size (apparent) | allocated (written) | CPU s |', '|---|---|---|---|---|---|'];
  for (const st of storages) {
    const s = saves.get(st.label)!;
    for (const pct of pcts) {
      const data = s.byPct.get(pct)!;
      const names = [FULL, INCR, QEMU_MR, synced(QEMU_MR)];
      const asRuns = new Map(names.map((n) => [n, data.get(n)!.map((x): RunSample => ({ wallS: x.wallS, cpuS: x.cpuS, memMiB: x.memMiB }))]));
      rows.push(...summaryRows(`incremental-save ${st.label} ${pct} %`, o.size, names, asRuns, { method: FULL, label: 'full save (ours)' }));
      const wall = (n: string) => med(data.get(n)!.map((x) => x.wallS));
      const alloc = (n: string) => med(data.get(n)!.map((x) => x.allocated));
      const rewritten = med(s.rewritten.get(pct)!);
      for (const n of names) byteLines.push(`| ${st.label} | ${pct} % (${(rewritten / M).toFixed(0)} MiB) | ${n} | ${gb(med(data.get(n)!.map((x) => x.size)))} | ${gb(alloc(n))} | ${med(data.get(n)!.map((x) => x.cpuS)).toFixed(2)} |`);
      notes.push(
        `incremental save, ${st.label}, ${pct} % rewritten (${(rewritten / M).toFixed(0)} MiB): delta ${gb(alloc(INCR))} = ${(alloc(INCR) / rewritten).toFixed(2)}x the rewritten bytes; ` +
          `full ${wall(FULL).toFixed(2)} s / incremental ${wall(INCR).toFixed(2)} s = ${(wall(FULL) / wall(INCR)).toFixed(2)}; QEMU mapped-ram ${wall(QEMU_MR).toFixed(2)} s = ${(wall(QEMU_MR) / wall(INCR)).toFixed(2)}x the incremental, ${wall(synced(QEMU_MR)).toFixed(2)} s with the fdatasync of its file = ${(wall(synced(QEMU_MR)) / wall(INCR)).toFixed(2)}x.`,
      );
    }
  }
  notes.unshift(
    `incremental: ${o.size / M} MiB TCG guest (2 vCPUs) after the real profile's workload, rewriting PCT % of its RAM inside the guest between a full base save and the measured saves (scattered 4 KiB-1 MiB runs, new bytes); ` +
      `our saves are saveVm to an O_DIRECT image (the delta with \`base\`), QEMU's is mapped-ram + multifd(${QEMU_CHANNELS}) + direct-io from the same paused guest; CPU is the helper's, this process's and QEMU's during the call. Medians of ${o.runs} runs.\n\n${byteLines.join('\n')}`,
  );
  return { rows, notes };
}
