/** Small throwaway filesystems for fault tests (root only): a tiny tmpfs, a ramfs without O_DIRECT. */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { requireOrSkip } from './require-or-skip';

export const isRoot = process.getuid?.() === 0;

export interface Mount {
  dir: string;
  unmount(): void;
}

export function mountFs(type: 'tmpfs' | 'ramfs', options?: string): Mount {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `iohelper-${type}-`));
  execFileSync('mount', ['-t', type, ...(options ? ['-o', options] : []), type, dir]);
  return {
    dir,
    unmount() {
      execFileSync('umount', ['-l', dir]);
      fs.rmdirSync(dir);
    },
  };
}

/** describe() when root, else skipped saying why, or failing under REQUIRE_QEMU=1 (CI runs as root). */
export function describeAsRoot(name: string, fn: () => void): void {
  requireOrSkip(isRoot ? undefined : 'needs root to mount test filesystems')(name, fn);
}
