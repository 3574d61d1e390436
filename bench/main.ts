/**
 * npm run bench -- [stream parallel vm-e2e clone libvirt startup compress ttw incremental] [--profile real,dense,clustered,scattered] [--size 1G,4G] [--runs 3] [--jobs 1,2,4] [--throttle 200M] [--pct 1,5,25] [--dir PATH] [--quick] [--no-record]
 * Runs the chosen scenarios side by side, alternating methods, and appends a markdown table
 * (with the exact command, host and date) to bench/RESULTS.md and JSON to bench/results/.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { parseFlags, parseInteger, parseSize } from '../src/util/flags';
import { packageRoot } from '../src/package-root';
import { describeHost } from './lib/host';
import { chartSvg } from './lib/svg';
import { markdownTable, Row } from './lib/table';
import { benchClone } from './clone';
import { benchCompress } from './compress';
import { benchTtw } from './ttw';
import { benchIncremental } from './incremental';
import { DEFAULT_JOBS } from '../src/image/io/image-fd';
import { benchLibvirt } from './libvirt';
import { benchParallel } from './parallel';
import { benchRunning } from './running';
import { benchStream } from './stream';
import { benchStartup } from './startup';
import { Profile, PROFILES } from './lib/profiles';
import { withHugetlbfs } from './lib/hugetlbfs';

/** `compress`, `ttw` and `incremental` run only when named: the first reconfigures libvirtd, all throttle the disk. */
const SCENARIOS = ['stream', 'parallel', 'vm-e2e', 'clone', 'libvirt', 'startup', 'compress', 'ttw', 'incremental'] as const;
const ONLY_WHEN_NAMED: readonly string[] = ['compress', 'ttw', 'incremental'];
const DEFAULT_SCENARIOS = SCENARIOS.filter((s) => !ONLY_WHEN_NAMED.includes(s));

async function main(): Promise<void> {
  const p = parseFlags(process.argv.slice(2), { booleans: ['quick', 'no-record', 'help'], values: ['size', 'runs', 'dir', 'jobs', 'json', 'profile', 'ram-fs', 'throttle', 'pct'] });
  if (p.flags.get('help')) {
    console.log(
      `usage: npm run bench -- [${SCENARIOS.join(' ')}] [--profile ${PROFILES.join(',')}] [--ram-fs tmpfs,hugetlbfs] [--size 4G|1G,4G,16G] [--runs 3] [--jobs 1,2,4] [--dir PATH] [--quick] [--json FILE] [--no-record]\n` +
        '  --profile: guest RAM for parallel and vm-e2e (default real: a real Linux guest after a memory workload, built once into .cache/bench; running (parallel only): that guest booted once and saved from the QEMU it ran in, paused just before each save)\n' +
        '  --ram-fs: where parallel keeps guest RAM (default tmpfs; hugetlbfs: 2 MiB pages, root, reserves 2 x size of huge pages)\n' +
        '  --quick: 256 MiB, 1 run, jobs 1,2, scattered profile (a smoke test)\n' +
        '  ttw: time from a restore command to the guest having read its working set (eager, mapped-ram, lazy, lazy + prefetch, 4 at once), local, 200 MB/s and 500 read IOPS\n' +
        '  incremental: the test guest rewriting --pct % of its RAM (default 1,5,25) between a full base save and our full save, our delta (--base) and QEMU mapped-ram; restore of depth-1 and depth-4 chains vs their flattened images; local and --throttle; default --size 4G\n' +
        '  compress: the real profile, ours uncompressed vs compressed vs libvirt zstd vs zstd -T0, on the local disk and throttled to --throttle bytes/s each way (default 200M = 200 MB/s; 0: local only); jobs: the last --jobs value (default ' + DEFAULT_JOBS + ')',
    );
    return;
  }
  const quick = p.flags.has('quick');
  const sizes = String(p.flags.get('size') ?? (quick ? '256M' : '4G')).split(',').map((x) => parseSize(x, '--size'));
  const runs = parseInteger(String(p.flags.get('runs') ?? (quick ? '1' : '3')), '--runs', 1, 100);
  const jobs = String(p.flags.get('jobs') ?? (quick ? '1,2' : '1,2,4')).split(',').map((j) => parseInteger(j, '--jobs', 1, 256));
  const dir = String(p.flags.get('dir') ?? path.join(packageRoot(), 'bench', 'data'));
  fs.mkdirSync(dir, { recursive: true });
  const profiles = String(p.flags.get('profile') ?? (quick ? 'scattered' : 'real')).split(',') as Profile[];
  for (const pr of profiles) if (!PROFILES.includes(pr)) throw new Error(`unknown profile '${pr}' (known: ${PROFILES.join(', ')})`);
  const ramFs = String(p.flags.get('ram-fs') ?? 'tmpfs').split(',');
  for (const f of ramFs) if (f !== 'tmpfs' && f !== 'hugetlbfs') throw new Error(`unknown --ram-fs '${f}' (tmpfs, hugetlbfs)`);
  const scenarios = p.positionals.length ? p.positionals : [...DEFAULT_SCENARIOS];
  const throttle = p.flags.has('throttle') ? parseThrottle(String(p.flags.get('throttle'))) : 200e6;
  const rows: Row[] = [];
  const notes: string[] = [];
  for (const s of scenarios) if (!(SCENARIOS as readonly string[]).includes(s)) throw new Error(`unknown scenario '${s}' (known: ${SCENARIOS.join(', ')})`);
  for (const size of sizes) {
    for (const s of scenarios) {
      console.error(`bench: ${s}, ${size} bytes, ${runs} runs, in ${dir}`);
      if (s === 'startup') rows.push(...benchStartup({ runs, dir }));
      else if (s === 'stream') rows.push(...(await benchStream({ size, runs, dir, srcDir: '/dev/shm' })));
      else if (s === 'clone') {
        const r = await benchClone({ size, runs, dir, count: 4 });
        rows.push(...r.rows);
        notes.push(...r.notes);
      } else if (s === 'ttw') {
        const r = await benchTtw({ size, runs, dir });
        rows.push(...r.rows);
        notes.push(...r.notes);
      } else if (s === 'incremental') {
        const pcts = p.flags.has('pct') ? String(p.flags.get('pct')).split(',').map(Number) : undefined;
        for (const x of pcts ?? []) if (!(x > 0 && x <= 30)) throw new Error(`--pct: shares of RAM from 0 to 30 (the guest rewrites inside a 40 % file), not ${x}`);
        const r = await benchIncremental({ size, runs, dir, throttle, pcts });
        rows.push(...r.rows);
        notes.push(...r.notes);
      } else if (s === 'compress') {
        const r = await benchCompress({ size, runs, dir, jobs: p.flags.has('jobs') ? jobs[jobs.length - 1] : DEFAULT_JOBS, throttle });
        rows.push(...r.rows);
        notes.push(...r.notes);
      } else if (s === 'libvirt') {
        const r = await benchLibvirt({ size, runs, dir });
        rows.push(...r.rows);
        notes.push(...r.notes);
      } else {
        for (const f of s === 'parallel' ? ramFs : ['tmpfs']) {
          for (const profile of profiles) {
            if (profile === 'running' && s !== 'parallel') {
              notes.push(`${s}: the running profile runs in the parallel scenario only`);
              continue;
            }
            const run = (ramDir?: string) =>
              profile === 'running'
                ? benchRunning({ size, runs, dir, hugetlbfsDir: ramDir })
                : benchParallel({ set: s as 'parallel' | 'vm-e2e', profile, size, runs, dir, jobs, verify: true, ramDir, hugetlbfs: !!ramDir });
            // Source and restored copy, and a restore's temporary file beside them (running: the guest's RAM alone).
            const r = f === 'hugetlbfs' ? await withHugetlbfs(profile === 'running' ? size + (64 << 20) : 2 * size + (64 << 20), run) : await run();
            rows.push(...r.rows);
            notes.push(...r.notes);
          }
        }
      }
    }
  }
  notes.push(...scalingNotes(rows));
  const size = sizes[sizes.length - 1];
  const table = markdownTable(rows) + notes.map((n) => `\n\n${n}`).join('');
  console.log(table);
  const json = p.flags.get('json');
  if (typeof json === 'string') fs.writeFileSync(json, JSON.stringify({ sizes, runs, rows, notes }, null, 2));
  if (p.flags.has('no-record')) return;
  const command = `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim();
  const stamp = new Date().toISOString();
  const md = `\n## ${stamp.slice(0, 16).replace('T', ' ')} UTC — \`${command}\`\n\nHost: ${describeHost(dir)}. Medians of ${runs} alternating runs, page cache dropped before each run.\n\n${table}\n`;
  fs.appendFileSync(path.join(packageRoot(), 'bench', 'RESULTS.md'), md);
  // The chart is the paused profiles' headline; a running-only bench leaves it as it was.
  if (scenarios.includes('stream') || (scenarios.includes('parallel') && profiles.some((pr) => pr !== 'running'))) {
    fs.writeFileSync(path.join(packageRoot(), 'bench', 'chart.svg'), chartSvg(chartRows(rows, size), `iohelper vs peers, ${(size / 2 ** 30).toFixed(1)} GiB, medians of ${runs} (${stamp.slice(0, 10)})`));
  }
  const jsonDir = path.join(packageRoot(), 'bench', 'results');
  fs.mkdirSync(jsonDir, { recursive: true });
  fs.writeFileSync(path.join(jsonDir, `${stamp.replace(/[:.]/g, '-')}.json`), JSON.stringify({ command, host: describeHost(dir), os: os.release(), rows }, null, 2));
}

/** --throttle: bytes per second in decimal units (200M = 200 MB/s, the unit disks and networks are sold in); 0 turns it off. */
function parseThrottle(text: string): number {
  const m = /^(\d+(?:\.\d+)?)([KMG]?)$/i.exec(text);
  if (!m) throw new Error(`--throttle '${text}': expected bytes per second such as 200M`);
  return Math.round(Number(m[1]) * { '': 1, K: 1e3, M: 1e6, G: 1e9 }[m[2].toUpperCase() as '' | 'K' | 'M' | 'G']);
}

/**
 * The chart shows the headline: the `real` profile on tmpfs where it ran (else every profile),
 * and the stream scenarios, at the largest size.
 */
function chartRows(rows: Row[], size: number): Row[] {
  const atSize = rows.filter((r) => r.bytes === size && r.scenario !== 'startup' && r.scenario !== 'clone');
  const profiled = (r: Row) => /^(parallel|vm-e2e)-/.test(r.scenario);
  const real = atSize.filter((r) => profiled(r) && / real$/.test(r.scenario));
  return real.length ? atSize.filter((r) => !profiled(r) || real.includes(r)) : atSize;
}

/** With several sizes: seconds per extra GiB (least-squares slope) of each method that ran at all of them. */
function scalingNotes(rows: Row[]): string[] {
  const byMethod = new Map<string, Array<[number, number]>>();
  for (const r of rows) {
    if (r.note || !Number.isFinite(r.wall.median) || r.scenario === 'clone') continue;
    const key = `${r.scenario}: ${r.method}`;
    byMethod.set(key, [...(byMethod.get(key) ?? []), [r.bytes / 2 ** 30, r.wall.median]]);
  }
  const out: string[] = [];
  for (const [key, pts] of byMethod) {
    if (pts.length < 2) continue;
    const mx = pts.reduce((a, p) => a + p[0], 0) / pts.length;
    const my = pts.reduce((a, p) => a + p[1], 0) / pts.length;
    const slope = pts.reduce((a, p) => a + (p[0] - mx) * (p[1] - my), 0) / pts.reduce((a, p) => a + (p[0] - mx) ** 2, 0);
    out.push(`${key}: ${slope.toFixed(2)} s per GiB (${pts.map((p) => `${p[0].toFixed(1)} GiB ${p[1].toFixed(2)} s`).join(', ')})`);
  }
  return out.length ? [`Scaling with RAM size:\n${out.map((l) => `- ${l}`).join('\n')}`] : [];
}

main().catch((e) => {
  console.error(`bench: ${e instanceof Error ? e.message : e}`);
  process.exit(1);
});
