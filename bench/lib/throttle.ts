/**
 * A disk throttled the way network storage is slow: a child cgroup of the cgroup v1 blkio
 * hierarchy with blkio.throttle.{read,write}_bps_device set for the disk under the bench
 * directory. Processes moved into it (the bench itself, so every child it starts; libvirtd, so
 * the helpers and compressors it spawns) see the limit on their O_DIRECT I/O (cgroup v1 does
 * not throttle buffered writeback: every method here uses O_DIRECT). Root only.
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

const BLKIO = '/sys/fs/cgroup/blkio';

export interface Throttle {
  /** "MAJ:MIN" of the throttled disk. */
  device: string;
  /** Each way; 0: not limited. */
  bytesPerSecond: number;
  /** Read requests per second; 0: not limited. */
  readIops: number;
  /** Moves a process (and the children it starts afterwards) into the throttled group. */
  add(pid: number): void;
  /** Moves it back to the root group. */
  remove(pid: number): void;
  /** Removes the group (moving anything left in it back first). */
  close(): void;
}

/** Why a throttle cannot be had here, or undefined. */
export function throttleUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (cgroup blkio)';
  if (!fs.existsSync(path.join(BLKIO, 'blkio.throttle.write_bps_device'))) return `no cgroup v1 blkio hierarchy at ${BLKIO}`;
  return undefined;
}

/** The whole disk (not a partition: cgroup v1 takes rules for disks) holding `dir`. */
function diskOf(dir: string): string {
  const dev = execFileSync('stat', ['-c', '%d', dir], { encoding: 'utf8' }).trim();
  const n = Number(dev);
  // st_dev of a device-backed filesystem: major = bits 8..19 (and above 31), minor = low 8 bits + bits 20..31.
  const major = ((n >>> 8) & 0xfff) | Math.floor(n / 2 ** 32) & ~0xfff;
  const minor = (n & 0xff) | ((n >>> 12) & ~0xff);
  const sys = `/sys/dev/block/${major}:${minor}`;
  if (!fs.existsSync(sys)) throw new Error(`${dir} is not on a block device (${major}:${minor}); give --dir on a disk`);
  // A partition's directory has a "partition" file; its parent directory is the disk.
  if (fs.existsSync(path.join(sys, 'partition'))) return fs.readFileSync(path.join(fs.realpathSync(sys), '..', 'dev'), 'utf8').trim();
  return `${major}:${minor}`;
}

export function createThrottle(dir: string, bytesPerSecond: number, readIops = 0): Throttle {
  const device = diskOf(dir);
  const group = path.join(BLKIO, `iohelper-bench-${process.pid}`);
  fs.mkdirSync(group, { recursive: true });
  if (bytesPerSecond) {
    fs.writeFileSync(path.join(group, 'blkio.throttle.write_bps_device'), `${device} ${bytesPerSecond}`);
    fs.writeFileSync(path.join(group, 'blkio.throttle.read_bps_device'), `${device} ${bytesPerSecond}`);
  }
  if (readIops) fs.writeFileSync(path.join(group, 'blkio.throttle.read_iops_device'), `${device} ${readIops}`);
  const root = path.join(BLKIO, 'cgroup.procs');
  return {
    device,
    bytesPerSecond,
    readIops,
    add: (pid) => fs.writeFileSync(path.join(group, 'cgroup.procs'), String(pid)),
    remove: (pid) => {
      try {
        fs.writeFileSync(root, String(pid));
      } catch {
        // gone already
      }
    },
    close() {
      for (const pid of fs.readFileSync(path.join(group, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) {
        try {
          fs.writeFileSync(root, pid);
        } catch {
          // exited meanwhile
        }
      }
      fs.rmdirSync(group);
    },
  };
}
