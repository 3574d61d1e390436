/**
 * bench/ref/fill-ram.c, compiled on first use into .cache/bench/: the read-into-fresh-RAM
 * reference (the restore limit) and the extent-preserving copier that moves cached RAM
 * profiles between disk and tmpfs.
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { packageRoot } from '../../src/package-root';

export function fillRamTool(): string {
  const source = path.join(packageRoot(), 'bench', 'ref', 'fill-ram.c');
  const binary = path.join(packageRoot(), '.cache', 'bench', 'fill-ram');
  const stale = !fs.existsSync(binary) || fs.statSync(binary).mtimeMs < fs.statSync(source).mtimeMs;
  if (stale) {
    fs.mkdirSync(path.dirname(binary), { recursive: true });
    execFileSync('cc', ['-O2', '-Wall', '-pthread', '-o', binary, source], { stdio: ['ignore', 'inherit', 'inherit'] });
  }
  return binary;
}

export interface FillRamOptions {
  direct?: boolean;
  /** Read into a shared mapping of the destination (hugetlbfs has no write()). */
  mapped?: boolean;
  threads?: number;
  ioSize?: number;
  /** Copy only [base, base + length) of the source, to offset 0 of the destination. */
  base?: number;
  length?: number;
}

export function fillRamArgs(src: string, dst: string, o: FillRamOptions = {}): string[] {
  return [
    ...(o.direct ? ['-d'] : []),
    ...(o.mapped ? ['-m'] : []),
    '-t', String(o.threads ?? 2),
    '-s', String(o.ioSize ?? 8 << 20),
    ...(o.base !== undefined ? ['-b', String(o.base)] : []),
    ...(o.length !== undefined ? ['-l', String(o.length)] : []),
    src,
    dst,
  ];
}

/**
 * Copies src's data extents into dst (holes stay holes, written zeros stay written); returns
 * the bytes copied and how many of their 4 KiB pages were all zero.
 */
export function copyExtents(src: string, dst: string, o: FillRamOptions = {}): { bytes: number; zeroPages: number } {
  const [bytes, zeroPages] = execFileSync(fillRamTool(), ['-z', ...fillRamArgs(src, dst, o)], { encoding: 'utf8' }).trim().split(/\s+/).map(Number);
  return { bytes, zeroPages };
}
