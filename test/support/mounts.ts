/** Small throwaway filesystems for fault tests (root only): a tiny tmpfs, a ramfs without O_DIRECT. */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { requireOrSkip } from './require-or-skip';

const isRoot = process.getuid?.() === 0;

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

export interface FreezableMount extends Mount {
  /** fsfreeze -f: every write to the filesystem blocks (in the kernel, uninterruptibly) until thaw(). */
  freeze(): void;
  thaw(): void;
}

/** A small ext4 on a loop device, its backing file in /dev/shm (root only): a filesystem a test can freeze. */
export function mountLoopExt4(sizeBytes: number): FreezableMount {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-ext4-'));
  const backing = `/dev/shm/iohelper-ext4-${process.pid}-${path.basename(dir)}`;
  fs.writeFileSync(backing, '');
  fs.truncateSync(backing, sizeBytes);
  execFileSync('mkfs.ext4', ['-q', '-F', backing]);
  execFileSync('mount', ['-o', 'loop', backing, dir]);
  let frozen = false;
  const thaw = () => {
    if (frozen) execFileSync('fsfreeze', ['-u', dir]);
    frozen = false;
  };
  return {
    dir,
    freeze() {
      execFileSync('fsfreeze', ['-f', dir]);
      frozen = true;
    },
    thaw,
    unmount() {
      thaw();
      execFileSync('umount', [dir]);
      fs.rmdirSync(dir);
      fs.rmSync(backing, { force: true });
    },
  };
}
