/**
 * Progress reporting: a sampler that turns a byte counter into {bytes, total, rate} events,
 * and the two outputs the CLI offers (JSON lines on an fd, a bar on a TTY).
 */
import * as fs from 'fs';

export interface Progress {
  bytes: number;
  /** Expected bytes, when known. */
  total?: number;
  /** Bytes per second since the start. */
  rate: number;
  elapsedMs: number;
  done: boolean;
  /** save: how guest RAM is read ("pread", "mmap", or both joined by "+"), once a job said. */
  ramRead?: string;
}

export type ProgressListener = (p: Progress) => void;

/** Calls `listener` every `intervalMs` with what `read()` reports, and once more at stop(). */
export class ProgressSampler {
  private readonly start = process.hrtime.bigint();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly read: () => number,
    private readonly listener: ProgressListener,
    private readonly total?: number,
    intervalMs = 500,
  ) {
    this.timer = setInterval(() => this.emit(false), intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (!this.timer) return;
    clearInterval(this.timer);
    this.timer = undefined;
    this.emit(true);
  }

  private emit(done: boolean): void {
    const elapsedMs = Number(process.hrtime.bigint() - this.start) / 1e6;
    const bytes = this.read();
    const p: Progress = { bytes, rate: elapsedMs > 0 ? (bytes * 1000) / elapsedMs : 0, elapsedMs, done };
    if (this.total !== undefined) p.total = this.total;
    this.listener(p);
  }
}

/**
 * Writes progress text to `fd`. Progress is a courtesy: a reader that went away (EPIPE), a
 * closed fd (EBADF) or any other failure turns progress off after one call of `onError`, and
 * never fails or crashes the copy it reports on.
 */
function progressWriter(fd: number, onError?: (e: unknown) => void): (text: string) => void {
  let broken = false;
  return (text) => {
    if (broken) return;
    try {
      fs.writeSync(fd, text);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EAGAIN') return; // a full non-blocking pipe: skip this line
      broken = true;
      onError?.(e);
    }
  };
}

/** One JSON object per line on `fd`: {"bytes":…,"total":…,"rate":…,"elapsedMs":…,"done":…}. */
export function jsonLinesProgress(fd: number, onError?: (e: unknown) => void): ProgressListener {
  const write = progressWriter(fd, onError);
  return (p) => {
    const o: Record<string, unknown> = { bytes: p.bytes, rate: Math.round(p.rate), elapsedMs: Math.round(p.elapsedMs), done: p.done };
    if (p.total !== undefined) o.total = p.total;
    if (p.ramRead !== undefined) o.ramRead = p.ramRead;
    write(JSON.stringify(o) + '\n');
  };
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

/** A one-line bar redrawn in place on a terminal fd. */
export function ttyBarProgress(fd: number, label: string, onError?: (e: unknown) => void): ProgressListener {
  const write = progressWriter(fd, onError);
  return (p) => {
    const rate = `${formatBytes(p.rate)}/s`;
    let line: string;
    if (p.total) {
      const frac = Math.min(1, p.bytes / p.total);
      const width = 30;
      const filled = Math.round(frac * width);
      line = `${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(frac * 100).toFixed(0)}% ${formatBytes(p.bytes)} ${rate}`;
    } else {
      line = `${label} ${formatBytes(p.bytes)} ${rate}`;
    }
    if (p.done && p.ramRead) line += ` (RAM read by ${p.ramRead})`;
    write(`\r\x1b[K${line}${p.done ? '\n' : ''}`);
  };
}
