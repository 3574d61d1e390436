/**
 * Which hash unit for incremental saves: how many bytes of guest RAM an incremental image must
 * hold, per unit size, when a real guest rewrote a share of its memory between two saves.
 *
 *   npm run build:ts && node dist/bench/unit-size.js [--size 2G] [--pct 5] [--runs 3] [--seed 1] [--units 4K,64K,256K,1M,4M] [--dir PATH] [--no-record]
 *
 * Boots the test guest in rewrite mode (bench/lib/rewrite-guest.ts: the real profile's workload,
 * then PCT % of its RAM rewritten inside the guest in scattered runs of 4 KiB to 1 MiB per
 * request), and for each run: pause (QMP stop), copy the RAM file, cont, rewrite PCT %, pause,
 * compare the copy with the paused guest's RAM file page by page, cont. A unit counts as changed
 * when any of its pages differs; its whole size is what a delta holds. Medians over the runs
 * (seeds SEED, SEED+1, …); appended to bench/RESULTS.md with the command unless --no-record.
 */
import * as fs from 'fs';
import * as path from 'path';
import { parseFlags, parseInteger, parseSize } from '../src/util/flags';
import { packageRoot } from '../src/package-root';
import { qemuAvailable } from '../src/vm/qemu-launch';
import { copyExtents } from './lib/fill-ram';
import { describeHost } from './lib/host';
import { startRewriteGuest } from './lib/rewrite-guest';
import { summarize } from './lib/stats';

const PAGE = 4096;
const M = 2 ** 20;
const CHUNK = 16 * M;

/** One bit a page: whether page i of `a` and `b` (files of `size` bytes) differ. */
export function changedPages(a: string, b: string, size: number): Uint8Array {
  const pages = new Uint8Array(Math.ceil(size / PAGE));
  const fa = fs.openSync(a, 'r');
  const fb = fs.openSync(b, 'r');
  const ba = Buffer.allocUnsafe(CHUNK);
  const bb = Buffer.allocUnsafe(CHUNK);
  try {
    for (let off = 0; off < size; off += CHUNK) {
      const n = Math.min(CHUNK, size - off);
      readFull(fa, ba, n, off);
      readFull(fb, bb, n, off);
      if (ba.compare(bb, 0, n, 0, n) === 0) continue;
      for (let p = 0; p < n; p += PAGE) {
        const e = Math.min(p + PAGE, n);
        if (ba.compare(bb, p, e, p, e) !== 0) pages[(off + p) / PAGE] = 1;
      }
    }
  } finally {
    fs.closeSync(fa);
    fs.closeSync(fb);
  }
  return pages;
}

/** Reads n bytes at off (a file shorter than that reads as zeros past its end, as RAM does). */
function readFull(fd: number, buf: Buffer, n: number, off: number): void {
  let got = 0;
  while (got < n) {
    const r = fs.readSync(fd, buf, got, n - got, off + got);
    if (r === 0) {
      buf.fill(0, got, n);
      return;
    }
    got += r;
  }
}

/** Changed units of `unit` bytes (a multiple of 4 KiB) and the bytes they cover. */
export function changedUnits(pages: Uint8Array, unit: number, size: number): { units: number; bytes: number } {
  const per = unit / PAGE;
  let units = 0;
  let bytes = 0;
  for (let first = 0; first < pages.length; first += per) {
    const last = Math.min(first + per, pages.length);
    for (let p = first; p < last; p++) {
      if (pages[p]) {
        units++;
        bytes += Math.min(unit, size - first * PAGE);
        break;
      }
    }
  }
  return { units, bytes };
}

/** Runs of consecutive changed pages in guest-physical order: how scattered the rewrite is in RAM. */
function physicalRuns(pages: Uint8Array): number {
  let runs = 0;
  for (let p = 0; p < pages.length; p++) if (pages[p] && (p === 0 || !pages[p - 1])) runs++;
  return runs;
}

const human = (n: number) => (n >= M ? `${n / M} MiB` : `${n / 1024} KiB`);
const mib = (n: number) => (n / M).toFixed(1);

async function main(): Promise<void> {
  const p = parseFlags(process.argv.slice(2), { booleans: ['no-record', 'help'], values: ['size', 'pct', 'runs', 'seed', 'units', 'dir'] });
  if (p.flags.get('help')) {
    console.log('usage: node dist/bench/unit-size.js [--size 2G] [--pct 5] [--runs 3] [--seed 1] [--units 4K,64K,256K,1M,4M] [--dir PATH] [--no-record]');
    return;
  }
  const size = parseSize(String(p.flags.get('size') ?? '2G'), '--size');
  const pct = Number(p.flags.get('pct') ?? 5);
  if (!(pct > 0 && pct <= 40)) throw new Error('--pct: a share of RAM from 0 to 40 (the guest rewrites inside a 40 % file)');
  const runs = parseInteger(String(p.flags.get('runs') ?? '3'), '--runs', 1, 100);
  const seed = parseInteger(String(p.flags.get('seed') ?? '1'), '--seed', 0, 2 ** 31);
  const units = String(p.flags.get('units') ?? '4K,64K,256K,1M,4M').split(',').map((u) => parseSize(u, '--units'));
  for (const u of units) if (u % PAGE || size % u) throw new Error(`--units: ${u} is not a multiple of 4 KiB dividing the RAM size`);
  const dir = String(p.flags.get('dir') ?? path.join(packageRoot(), 'bench', 'data'));
  fs.mkdirSync(dir, { recursive: true });
  const q = qemuAvailable();
  if (!q.ok) throw new Error(`needs QEMU 10 (${q.why})`);

  const guest = await startRewriteGuest(size, dir, 'unit');
  const before = `/dev/shm/iohelper-unit-before-${process.pid}`;
  const samples: Array<{ rewritten: number; runs: number; physRuns: number; perUnit: Array<{ units: number; bytes: number }> }> = [];
  try {
    for (let i = 0; i < runs; i++) {
      await guest.vm.qmp.execute('stop');
      fs.rmSync(before, { force: true });
      copyExtents(guest.ram, before);
      await guest.vm.qmp.execute('cont');
      const r = await guest.rewrite(pct, seed + i);
      await guest.vm.qmp.execute('stop');
      const pages = changedPages(before, guest.ram, size);
      await guest.vm.qmp.execute('cont');
      const perUnit = units.map((u) => changedUnits(pages, u, size));
      samples.push({ rewritten: r.bytes, runs: r.runs, physRuns: physicalRuns(pages), perUnit });
      console.error(`  run ${i + 1}: rewrote ${mib(r.bytes)} MiB in ${r.runs} runs (${r.seconds.toFixed(1)} s); changed: ${units.map((u, k) => `${human(u)} ${mib(perUnit[k].bytes)} MiB`).join(', ')}`);
    }
  } finally {
    await guest.stop();
    fs.rmSync(before, { force: true });
  }

  const med = (xs: number[]) => summarize(xs).median;
  const rewritten = med(samples.map((s) => s.rewritten));
  const lines = [
    `| unit | changed units (median, min–max) | changed bytes (MiB) | ÷ rewritten | ÷ changed 4 KiB pages | SHA-256 table of the whole RAM (32 B/unit) |`,
    '|---|---|---|---|---|---|',
  ];
  units.forEach((u, k) => {
    const us = summarize(samples.map((s) => s.perUnit[k].units));
    const bytes = med(samples.map((s) => s.perUnit[k].bytes));
    const page = med(samples.map((s) => s.perUnit[k].bytes / s.perUnit[0].bytes));
    const table = (size / u) * 32;
    lines.push(`| ${human(u)} | ${us.median} (${us.min}–${us.max}) of ${size / u} | ${mib(bytes)} | ${(bytes / rewritten).toFixed(2)} | ${units[0] === PAGE ? page.toFixed(2) : 'n/a'} | ${table >= M ? `${(table / M).toFixed(1)} MiB` : `${(table / 1024).toFixed(0)} KiB`} |`);
  });
  const note =
    `${size / M} MiB TCG guest (2 vCPUs) after the real profile's workload; each run rewrote ${pct} % of its RAM inside the guest ` +
    `(median ${mib(rewritten)} MiB in ${med(samples.map((s) => s.runs))} file runs of 4 KiB to 1 MiB, scattered over a 40 % tmpfs file), ` +
    `which changed ${med(samples.map((s) => s.physRuns))} runs of consecutive guest-physical pages (median); medians of ${runs} runs (seeds ${seed}–${seed + runs - 1}). ` +
    `Changed bytes count whole units; the rest of the changed 4 KiB pages beyond the rewritten bytes is the guest's own activity between the two pauses.`;
  const table = `${lines.join('\n')}\n\n${note}`;
  console.log(table);
  if (p.flags.has('no-record')) return;
  const command = `npm run build:ts && node dist/bench/unit-size.js ${process.argv.slice(2).join(' ')}`.trim();
  const stamp = new Date().toISOString();
  const md = `\n## ${stamp.slice(0, 16).replace('T', ' ')} UTC — hash unit for incremental saves: \`${command}\`\n\nHost: ${describeHost(dir)}.\n\n${table}\n`;
  fs.appendFileSync(path.join(packageRoot(), 'bench', 'RESULTS.md'), md);
}

main().catch((e) => {
  console.error(`unit-size: ${e instanceof Error ? e.message : e}`);
  process.exit(1);
});
