/**
 * Samples a running process from /proc: peak anonymous RSS (RssAnon, what the helper itself
 * allocates; mapped guest RAM is shared file memory and not counted) and CPU seconds.
 */
import * as fs from 'fs';

const TICKS = 100; // USER_HZ on Linux

export interface ProcUsage {
  peakAnonMiB: number;
  cpuS: number;
}

function cpuOf(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / TICKS;
  } catch {
    return undefined;
  }
}

function anonKiB(pid: number): number | undefined {
  try {
    const m = /RssAnon:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Polls every `ms` until stop(); the CPU figure is the last sample (a long-lived process is exact). */
export function sampleProcess(pid: number, ms = 20): { stop(): ProcUsage } {
  let peak = 0;
  const cpu0 = cpuOf(pid) ?? 0;
  let cpu = cpu0;
  const tick = () => {
    const a = anonKiB(pid);
    if (a !== undefined) peak = Math.max(peak, a);
    const c = cpuOf(pid);
    if (c !== undefined) cpu = c;
  };
  tick();
  const timer = setInterval(tick, ms);
  return {
    stop() {
      tick();
      clearInterval(timer);
      return { peakAnonMiB: peak / 1024, cpuS: cpu - cpu0 };
    },
  };
}
