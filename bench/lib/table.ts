/** Markdown rendering of benchmark rows. */
import { summarize, Summary } from './stats';

export interface Row {
  scenario: string;
  method: string;
  bytes: number;
  wall: Summary;
  cpuS: Summary;
  maxRssMiB: Summary;
  /** Median wall time of the baseline divided by this median (higher = faster). */
  speedup?: number;
  baseline?: string;
  note?: string;
}

const fmt = (n: number, d = 2) => (Number.isFinite(n) ? n.toFixed(d) : 'n/a');

export function markdownTable(rows: Row[]): string {
  const head = '| scenario | size | method | median s (min–max) | GiB/s | CPU s/GiB | peak RSS/anon MiB | vs baseline |\n|---|---|---|---|---|---|---|---|';
  const lines = rows.map((r) => {
    const gib = r.bytes / 2 ** 30;
    const size = `${+gib.toFixed(2)} GiB`;
    if (r.note) return `| ${r.scenario} | ${size} | ${r.method} | ${r.note} | | | | |`;
    const speed = r.speedup !== undefined ? `${fmt(r.speedup)}× ${r.baseline}` : '—';
    if (r.scenario === 'clone' || r.scenario === 'startup') return `| ${r.scenario} | ${size} | ${r.method} | ${fmt(r.wall.median, 3)} (${fmt(r.wall.min, 3)}–${fmt(r.wall.max, 3)}) | — | — | — | — |`;
    return `| ${r.scenario} | ${size} | ${r.method} | ${fmt(r.wall.median)} (${fmt(r.wall.min)}–${fmt(r.wall.max)}) | ${fmt(gib / r.wall.median)} | ${fmt(r.cpuS.median / gib)} | ${fmt(r.maxRssMiB.median, 0)} | ${speed} |`;
  });
  return [head, ...lines].join('\n');
}

/** One timed run of a method: wall and CPU seconds, and the memory figure the scenario reports. */
export interface RunSample {
  wallS: number;
  cpuS: number;
  memMiB: number;
}

/**
 * Summary rows of one scenario, in `methods` order, with the ratio to `baseline` (the median
 * wall time of that method over each method's) when the baseline ran.
 */
export function summaryRows(scenario: string, bytes: number, methods: string[], data: Map<string, RunSample[]>, baseline?: { method: string; label: string }): Row[] {
  const base = baseline && data.get(baseline.method);
  const baseMedian = base ? summarize(base.map((x) => x.wallS)).median : undefined;
  return methods.map((method) => {
    const xs = data.get(method)!;
    const wall = summarize(xs.map((x) => x.wallS));
    return {
      scenario,
      method,
      bytes,
      wall,
      cpuS: summarize(xs.map((x) => x.cpuS)),
      maxRssMiB: summarize(xs.map((x) => x.memMiB)),
      ...(baseMedian !== undefined ? { speedup: baseMedian / wall.median, baseline: baseline!.label } : {}),
    };
  });
}
