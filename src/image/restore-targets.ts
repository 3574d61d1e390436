/**
 * The RAM files a restore fills, planned and then staged so that a refused or failed restore
 * changes none of them.
 *
 * Plan (no side effect): every target is checked against its block (regular file, not a
 * symlink, not hard-linked unless forced, absent or empty or exactly the block's size, on a
 * filesystem with room for the block's data, page size dividing the block) and no two of the
 * image and the targets are the same file.
 *
 * Execute: a PATH target is filled through a new temporary file beside it (same directory, so
 * same filesystem and page size); only after every chunk of every block verified are the
 * temporaries renamed over their targets, each after checking the target is still the file
 * that was planned. Any failure before that unlinks the temporaries and leaves the targets as
 * they were. The cost: while a restore runs, a replaced target's old content and the new one
 * both occupy the filesystem (on tmpfs: memory) — none extra for an absent or empty target.
 * An `fd:K` target cannot be renamed: it is written in place, after every check, so a
 * corrupted chunk or a full filesystem found during the copy leaves it partially written.
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { isSystemError, systemError, withPath } from '../errors';
import { native } from '../native';
import { BlockEntry } from './format';
import { checkDistinct, FileId, idOfStats } from './identity';
import { RamSource } from './ram-files';

const HUGETLBFS_MAGIC = 0x958458f6;
const PAGE = 4096;

export interface TargetPlan {
  name: string;
  label: string;
  size: number;
  /** Bytes the block's data needs on the target's filesystem. */
  dataBytes: number;
  pageSize: number;
  fd?: number;
  path?: string;
  /** The target file as planned (undefined: the path did not exist). */
  existing?: { dev: bigint; ino: bigint; mode: number; uid: number; gid: number };
}

function pageSizeOf(statfsPath: string): { pageSize: number; dev: string; free: number } {
  const st = fs.statfsSync(statfsPath);
  const huge = st.type === HUGETLBFS_MAGIC;
  let free = st.bavail * st.bsize;
  // A filesystem that reports no blocks at all has no size of its own: hugetlbfs without size=
  // draws on the kernel's pool of free (unreserved) huge pages; anything else is not checked.
  if (st.blocks === 0) free = huge ? freeHugePages(st.bsize) : Infinity;
  return { pageSize: huge ? st.bsize : PAGE, dev: String(fs.statSync(statfsPath).dev), free };
}

function freeHugePages(pageSize: number): number {
  const dir = `/sys/kernel/mm/hugepages/hugepages-${pageSize / 1024}kB`;
  try {
    const n = (f: string) => Number(fs.readFileSync(`${dir}/${f}`, 'utf8'));
    return Math.max(0, n('free_hugepages') - n('resv_hugepages')) * pageSize;
  } catch {
    return Infinity;
  }
}

function planFdTarget(s: RamSource, e: BlockEntry, ids: FileId[]): TargetPlan {
  const label = `fd:${s.fd}`;
  let st: fs.BigIntStats;
  let flags: number;
  try {
    st = fs.fstatSync(s.fd!, { bigint: true });
    flags = native.getFlags(s.fd!);
  } catch (e) {
    throw withPath(e, label);
  }
  if (!st.isFile()) throw systemError('EINVAL', `RAM '${s.name}' (${label}) is not a regular file`, { path: label });
  if ((flags & native.constants.O_ACCMODE) !== native.constants.O_RDWR) {
    throw systemError('EBADF', `RAM '${s.name}' (${label}) must be open read-write (it is filled through a shared mapping)`, { path: label });
  }
  ids.push(idOfStats(st, label));
  checkDistinct(ids); // before the size check: "the same file" is the message that explains
  if (st.size !== 0n && st.size !== BigInt(e.size)) throw systemError('EINVAL', `RAM '${s.name}' (${label}) has ${st.size} bytes; the image's block has ${e.size}`, { path: label });
  return { name: s.name, label, size: e.size, dataBytes: e.dataBytes, pageSize: pageSizeOf(`/proc/self/fd/${s.fd}`).pageSize, fd: s.fd };
}

function planPathTarget(s: RamSource, e: BlockEntry, ids: FileId[], force: boolean): TargetPlan {
  const p = path.resolve(s.path!);
  // Never block (and so never miss a signal) on a FIFO or device: only lstat, never open, here.
  let st: fs.BigIntStats | undefined;
  try {
    st = fs.lstatSync(p, { bigint: true });
  } catch (err) {
    if (!isSystemError(err) || err.code !== 'ENOENT') throw withPath(err, p);
  }
  const dir = path.dirname(p);
  if (st) {
    if (st.isSymbolicLink()) throw systemError('ELOOP', `RAM '${s.name}' path ${s.path} is a symlink; refusing to follow it`, { path: s.path });
    ids.push(idOfStats(st, s.path!));
    checkDistinct(ids);
    if (!st.isFile()) throw systemError('EINVAL', `RAM '${s.name}' path ${s.path} is not a regular file`, { path: s.path });
    if (st.nlink > 1n && !force) {
      throw systemError('EMLINK', `RAM '${s.name}' path ${s.path} has ${st.nlink} hard links: restoring would change the file under its other names too (--force to allow)`, { path: s.path });
    }
    if (st.size !== 0n && st.size !== BigInt(e.size)) throw systemError('EINVAL', `RAM '${s.name}' (${s.path}) has ${st.size} bytes; the image's block has ${e.size}`, { path: s.path });
  }
  let dirSt: fs.Stats;
  try {
    dirSt = fs.statSync(dir);
    fs.accessSync(dir, fs.constants.W_OK);
  } catch (err) {
    throw withPath(err, dir);
  }
  if (!dirSt.isDirectory()) throw systemError('ENOTDIR', `RAM '${s.name}': ${dir} is not a directory`, { path: dir });
  return {
    name: s.name,
    label: s.path!,
    size: e.size,
    dataBytes: e.dataBytes,
    pageSize: pageSizeOf(dir).pageSize,
    path: p,
    existing: st && { dev: st.dev, ino: st.ino, mode: Number(st.mode & 0o7777n), uid: Number(st.uid), gid: Number(st.gid) },
  };
}

/** Every check of every target; changes nothing. `imageId` is the image being read. */
export function planTargets(entries: BlockEntry[], sources: RamSource[], imageId: FileId, force: boolean): TargetPlan[] {
  const byName = new Map(sources.map((s) => [s.name, s]));
  const ids: FileId[] = [imageId];
  const plans = entries.map((e) => {
    const s = byName.get(e.name)!;
    const t = s.fd !== undefined ? planFdTarget(s, e, ids) : planPathTarget(s, e, ids, force);
    if (e.size % t.pageSize !== 0) throw systemError('EINVAL', `block '${e.name}' (${e.size} bytes) is not a multiple of ${t.label}'s page size ${t.pageSize}`, { path: t.label });
    return t;
  });
  const staged = plans.filter((t) => t.path);
  // Absent targets have no inode yet: compare their real paths.
  const real = staged.map((t) => path.join(fs.realpathSync(path.dirname(t.path!)), path.basename(t.path!)));
  const dup = real.findIndex((p, i) => real.indexOf(p) !== i);
  if (dup >= 0) throw systemError('EINVAL', `${staged[real.indexOf(real[dup])].label} and ${staged[dup].label} are the same file; each RAM block needs a file of its own`, { path: staged[dup].label });
  checkRoom(staged);
  return plans;
}

/** The new blocks' data must fit beside whatever is there now (old targets stay until the end). */
function checkRoom(staged: TargetPlan[]): void {
  const need = new Map<string, { bytes: number; free: number; labels: string[] }>();
  for (const t of staged) {
    const fsInfo = pageSizeOf(path.dirname(t.path!));
    const n = need.get(fsInfo.dev) ?? { bytes: 0, free: fsInfo.free, labels: [] };
    n.bytes += Math.ceil(t.dataBytes / t.pageSize) * t.pageSize;
    n.labels.push(t.label);
    need.set(fsInfo.dev, n);
  }
  for (const n of need.values()) {
    if (n.bytes > n.free) {
      throw systemError('ENOSPC', `no space left for the RAM of ${n.labels.join(', ')}: the blocks hold ${n.bytes} bytes of data, the filesystem has ${n.free} free`, { path: n.labels[0] });
    }
  }
}

export interface StagedTarget {
  plan: TargetPlan;
  /** What the workers fill: the temporary file, or the fd target itself. */
  fd: number;
  label: string;
  temp?: string;
}

/** Creates the temporaries (or empties fd targets) at the block sizes. Undo with discard(). */
export function stageTargets(plans: TargetPlan[]): StagedTarget[] {
  const staged: StagedTarget[] = [];
  try {
    for (const t of plans) {
      if (t.fd !== undefined) {
        native.ftruncate(t.fd, 0);
        native.ftruncate(t.fd, t.size);
        staged.push({ plan: t, fd: t.fd, label: t.label });
        continue;
      }
      const temp = path.join(path.dirname(t.path!), `.${path.basename(t.path!)}.iohelper-${process.pid}-${crypto.randomBytes(4).toString('hex')}`);
      const fd = fs.openSync(temp, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, t.existing?.mode ?? 0o600);
      staged.push({ plan: t, fd, label: t.label, temp });
      if (t.existing) {
        fs.fchmodSync(fd, t.existing.mode);
        if (process.getuid?.() === 0) fs.fchownSync(fd, t.existing.uid, t.existing.gid);
      }
      native.ftruncate(fd, t.size);
    }
  } catch (e) {
    discard(staged);
    throw e;
  }
  return staged;
}

/** Unlinks the temporaries and closes their fds; fd targets are the caller's. */
export function discard(staged: StagedTarget[]): void {
  for (const s of staged) {
    if (!s.temp) continue;
    try {
      fs.closeSync(s.fd);
    } catch {
      // already closed
    }
    fs.rmSync(s.temp, { force: true });
  }
}

/**
 * Renames every temporary over its target, each after checking the target is still the file
 * (or the absence) that was planned; closes the temporaries' fds.
 */
export function commit(staged: StagedTarget[]): void {
  for (const s of staged) {
    if (!s.temp) continue;
    let now: fs.BigIntStats | undefined;
    try {
      now = fs.lstatSync(s.plan.path!, { bigint: true });
    } catch {
      now = undefined;
    }
    const was = s.plan.existing;
    if (was ? !now || now.dev !== was.dev || now.ino !== was.ino : now) {
      throw systemError('EEXIST', `RAM '${s.plan.name}' path ${s.plan.path} changed while restoring; left as it is`, { path: s.plan.path });
    }
  }
  for (const s of staged) {
    if (!s.temp) continue;
    fs.renameSync(s.temp, s.plan.path!);
    s.temp = undefined;
    fs.closeSync(s.fd);
  }
}
