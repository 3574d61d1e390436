/**
 * A hugetlbfs (2 MiB pages) for the huge-page variant of the parallel benchmark: reserves the
 * pages, mounts a private hugetlbfs, and gives both back afterwards. Root only.
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const NR = '/proc/sys/vm/nr_hugepages';
const HUGE = 2 << 20;

export async function withHugetlbfs<T>(bytes: number, fn: (dir: string) => Promise<T>): Promise<T> {
  const pages = Math.ceil(bytes / HUGE);
  const before = Number(fs.readFileSync(NR, 'utf8'));
  fs.writeFileSync(NR, String(before + pages));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-bench-huge-'));
  try {
    const got = Number(fs.readFileSync(NR, 'utf8'));
    if (got < before + pages) throw new Error(`hugetlbfs: could reserve only ${got - before} of ${pages} huge pages (${bytes >> 20} MiB); free memory or use a smaller --size`);
    execFileSync('mount', ['-t', 'hugetlbfs', '-o', 'pagesize=2M', 'none', dir]);
    try {
      // Touch every reserved page once and free it. In a VM the first use of a page the host
      // has not backed yet costs far more than later ones (here a restore into fresh huge
      // pages took 1.3 s, the same restore again 0.45 s): without this, whichever method runs
      // first would pay it for all the others.
      const warm = path.join(dir, 'warm');
      execFileSync('fallocate', ['-l', String(pages * HUGE), warm]);
      fs.rmSync(warm);
      return await fn(dir);
    } finally {
      execFileSync('umount', ['-l', dir]);
    }
  } finally {
    fs.rmdirSync(dir);
    fs.writeFileSync(NR, String(before));
  }
}
