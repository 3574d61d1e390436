/**
 * A dependency-free SVG chart of a benchmark run: one horizontal bar per method (throughput in
 * GiB/s from the median time), grouped by scenario, and the parallel jobs scaling as a line.
 */
import { Row } from './table';

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const COLORS: Array<[RegExp, string]> = [
  [/libvirt/, '#d9822b'],
  [/iohelper/, '#2b7bb9'],
  [/mapped-ram/, '#c0392b'],
  [/dd|fio/, '#7f8c8d'],
];

function color(method: string): string {
  return COLORS.find(([re]) => re.test(method))?.[1] ?? '#8e44ad';
}

export function chartSvg(rows: Row[], title: string): string {
  const bars = rows.filter((r) => !r.note && r.scenario !== 'clone' && Number.isFinite(r.wall.median));
  const gib = (r: Row) => r.bytes / 2 ** 30 / r.wall.median;
  const max = Math.max(0.1, ...bars.map(gib));
  const left = 330;
  const width = 900;
  const barH = 18;
  const plotW = width - left - 80;
  const parts: string[] = [];
  let y = 50;
  let scenario = '';
  for (const r of bars) {
    if (r.scenario !== scenario) {
      scenario = r.scenario;
      y += 10;
      parts.push(`<text x="10" y="${y + 12}" font-weight="bold">${esc(scenario)}</text>`);
      y += 20;
    }
    const w = (gib(r) / max) * plotW;
    parts.push(`<text x="${left - 8}" y="${y + 13}" text-anchor="end">${esc(r.method)}</text>`);
    parts.push(`<rect x="${left}" y="${y}" width="${w.toFixed(1)}" height="${barH}" fill="${color(r.method)}"/>`);
    parts.push(`<text x="${left + w + 6}" y="${y + 13}">${gib(r).toFixed(2)} GiB/s</text>`);
    y += barH + 6;
  }
  const scaling = rows.filter((r) => r.scenario === 'parallel-save' && /jobs (\d+)/.test(r.method));
  if (scaling.length > 1) {
    y += 30;
    parts.push(`<text x="10" y="${y}" font-weight="bold">parallel save: jobs scaling (GiB/s)</text>`);
    const h = 120;
    const top = y + 15;
    const jobs = scaling.map((r) => Number(/jobs (\d+)/.exec(r.method)![1]));
    const xs = jobs.map((_, i) => left + (i * plotW) / Math.max(1, jobs.length - 1));
    const ys = scaling.map((r) => top + h - (gib(r) / max) * h);
    parts.push(`<polyline fill="none" stroke="#2b7bb9" stroke-width="2" points="${xs.map((x, i) => `${x.toFixed(1)},${ys[i].toFixed(1)}`).join(' ')}"/>`);
    xs.forEach((x, i) => {
      parts.push(`<circle cx="${x.toFixed(1)}" cy="${ys[i].toFixed(1)}" r="4" fill="#2b7bb9"/>`);
      parts.push(`<text x="${x.toFixed(1)}" y="${(top + h + 16).toFixed(1)}" text-anchor="middle">${jobs[i]} job${jobs[i] > 1 ? 's' : ''}</text>`);
      parts.push(`<text x="${(x + 6).toFixed(1)}" y="${(ys[i] - 6).toFixed(1)}">${gib(scaling[i]).toFixed(2)}</text>`);
    });
    y = top + h + 30;
  }
  const height = y + 20;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="24" font-size="15" font-weight="bold">${esc(title)}</text>
${parts.join('\n')}
</svg>
`;
}
