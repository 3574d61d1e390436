/** Markdown rendering of benchmark rows. */
import { Summary } from './stats';

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
    if (r.scenario === 'clone') return `| ${r.scenario} | ${size} | ${r.method} | ${fmt(r.wall.median, 3)} (${fmt(r.wall.min, 3)}–${fmt(r.wall.max, 3)}) | — | — | — | — |`;
    return `| ${r.scenario} | ${size} | ${r.method} | ${fmt(r.wall.median)} (${fmt(r.wall.min)}–${fmt(r.wall.max)}) | ${fmt(gib / r.wall.median)} | ${fmt(r.cpuS.median / gib)} | ${fmt(r.maxRssMiB.median, 0)} | ${speed} |`;
  });
  return [head, ...lines].join('\n');
}
