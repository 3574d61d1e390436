/**
 * The RAM files a restore fills, planned and then staged so that a refused or failed restore
 * loses nothing, and so that a process that maps a target (a QEMU waiting with -incoming)
 * sees what was restored.
 *
 * Plan (no side effect): every target is checked against its block (regular file, not a
 * symlink, not hard-linked unless forced, absent or empty or exactly the block's size, on a
 * filesystem with room for the block's data, page size dividing the block) and no two of the
 * image and the targets are the same file. Each PATH target gets one of two ways:
 *
 * - fill in place, when it provably has nothing to lose: absent, empty, or the block's size
 *   with no data allocated (all holes, as QEMU leaves a RAM file it created: st_blocks 0 and
 *   SEEK_DATA finding nothing, see holdsNothing). A QEMU that already maps
 *   it sees every byte. A failure puts it back: the filled range punched back to holes, an
 *   empty file truncated back to empty, a file the restore created unlinked.
 * - replace, when it holds data: filled through a new temporary file beside it (same
 *   directory, so same filesystem and page size) and renamed over it only after every chunk of
 *   every block verified, so a failure leaves the old content. Renaming would leave a process
 *   that has the old file open or mapped on the old memory, so such a target is refused, in
 *   the plan and again just before the rename. The cost: while the restore runs, the old and
 *   the new content both occupy the filesystem (on tmpfs: memory).
 *
 * An `fd:K` target is written in place after every check; a corrupted chunk or a full
 * filesystem found during the copy leaves it partially written.
 */
import * as fs from 'fs';
import * as path from 'path';
import { isSystemError, systemError, withPath } from '../errors';
import { tempPathBeside } from '../fs/atomic-file';
import { otherUsers } from '../fs/file-users';
import { filesystemOf, FilesystemInfo } from '../fs/filesystem';
import { lstatIfExists } from '../fs/lstat';
import { refusedLink } from '../fs/open-file';
import { native } from '../native';
import { BlockEntry } from './format';
import { checkDistinct, FileId, idOfStats } from './identity';
import { RamSource } from './ram-files';


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
  existing?: { dev: bigint; ino: bigint; mode: number; uid: number; gid: number; size: bigint };
  /** PATH targets: filled in place (nothing to lose) or replaced through a temporary. */
  way?: 'in-place' | 'replace';
  /** Filled with pwrite() rather than through a mapping (every filesystem but hugetlbfs). */
  byWrite: boolean;
}

/** The target filesystem's page size and room, and its device (targets on one device share the room). */
function pageSizeOf(statfsPath: string): FilesystemInfo & { dev: string } {
  return { ...filesystemOf(statfsPath), dev: String(fs.statSync(statfsPath).dev) };
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
    throw systemError('EBADF', `RAM '${s.name}' (${label}) must be open read-write (it is written, and on hugetlbfs mapped shared)`, { path: label });
  }
  ids.push(idOfStats(st, label));
  checkDistinct(ids); // before the size check: "the same file" is the message that explains
  if (st.size !== 0n && st.size !== BigInt(e.size)) throw systemError('EINVAL', `RAM '${s.name}' (${label}) has ${st.size} bytes; the image's block has ${e.size}`, { path: label });
  const fsInfo = pageSizeOf(`/proc/self/fd/${s.fd}`);
  // pwrite() on an O_APPEND fd appends wherever it is told to write: fill those through the mapping.
  const byWrite = !fsInfo.huge && !(flags & native.constants.O_APPEND);
  return { name: s.name, label, size: e.size, dataBytes: e.dataBytes, pageSize: fsInfo.pageSize, byWrite, fd: s.fd };
}

function planPathTarget(s: RamSource, e: BlockEntry, ids: FileId[], force: boolean): TargetPlan {
  const p = path.resolve(s.path!);
  // Never block (and so never miss a signal) on a FIFO or device: lstat first, and open only a
  // regular file (holdsNothingAt, refuseIfInUse), O_NONBLOCK.
  let st: fs.BigIntStats | undefined;
  try {
    st = fs.lstatSync(p, { bigint: true });
  } catch (err) {
    if (!isSystemError(err) || err.code !== 'ENOENT') throw withPath(err, p);
  }
  const dir = path.dirname(p);
  let empty = true;
  if (st) {
    if (st.isSymbolicLink()) throw refusedLink(s.path!);
    ids.push(idOfStats(st, s.path!));
    checkDistinct(ids);
    if (!st.isFile()) throw systemError('EINVAL', `RAM '${s.name}' path ${s.path} is not a regular file`, { path: s.path });
    if (st.size !== 0n && st.size !== BigInt(e.size)) throw systemError('EINVAL', `RAM '${s.name}' (${s.path}) has ${st.size} bytes; the image's block has ${e.size}`, { path: s.path });
    empty = holdsNothingAt(p, st);
    if (st.nlink > 1n && !force) {
      const what = empty
        ? 'restoring fills it in place, so its other names get the restored block too'
        : 'it holds data, so the restore would put a new file under this name and leave the old content under the others';
      throw systemError('EMLINK', `RAM '${s.name}' path ${s.path} has ${st.nlink} hard links: ${what} (--force to allow)`, { path: s.path });
    }
    if (!empty) refuseIfInUse(p, s.name);
  }
  let dirSt: fs.Stats;
  try {
    dirSt = fs.statSync(dir);
    fs.accessSync(dir, fs.constants.W_OK);
  } catch (err) {
    throw withPath(err, dir);
  }
  if (!dirSt.isDirectory()) throw systemError('ENOTDIR', `RAM '${s.name}': ${dir} is not a directory`, { path: dir });
  const fsInfo = pageSizeOf(dir);
  return {
    name: s.name,
    label: s.path!,
    size: e.size,
    dataBytes: e.dataBytes,
    pageSize: fsInfo.pageSize,
    byWrite: !fsInfo.huge,
    path: p,
    existing: st && { dev: st.dev, ino: st.ino, mode: Number(st.mode & 0o7777n), uid: Number(st.uid), gid: Number(st.gid), size: st.size },
    way: empty ? 'in-place' : 'replace',
  };
}

/** Whether a restore would fill `p` in place: it is absent, empty or provably all holes (a regular file, not a symlink). */
export function fillsInPlace(p: string): boolean {
  const st = lstatIfExists(p);
  return !st || (st.isFile() && holdsNothingAt(p, st));
}

/**
 * Nothing to lose, provably, in the file open as `fd` with stats `st`: it is empty, or it has
 * no block allocated and SEEK_DATA finds no data in it. st_blocks alone is a filesystem's word,
 * and some give it for files full of data (a FUSE passthrough, ramfs: 0); SEEK_DATA alone is
 * no proof either (ramfs and hugetlbfs answer as if the whole file were data). hugetlbfs is the
 * one filesystem taken at st_blocks: the kernel counts each huge page it holds there, and no
 * FUSE filesystem can pass for it (statfs gives FUSE's type).
 */
export function holdsNothing(fd: number, st: fs.BigIntStats): boolean {
  if (st.size === 0n) return true;
  if (st.blocks !== 0n) return false;
  if (filesystemOf(`/proc/self/fd/${fd}`).huge) return true;
  try {
    return native.lseek(fd, 0, native.constants.SEEK_DATA) === -1; // ENXIO: no data at all
  } catch {
    return false; // a filesystem that cannot tell: not provably empty
  }
}

/** holdsNothing for the file at `p` (lstat as `st`); a file that cannot be opened, or another file there now, is not empty. */
function holdsNothingAt(p: string, st: fs.BigIntStats): boolean {
  if (st.size === 0n) return true;
  if (st.blocks !== 0n) return false;
  let fd: number;
  try {
    // O_NONBLOCK: never block on a FIFO put in its place since the lstat.
    fd = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch {
    return false;
  }
  try {
    const now = fs.fstatSync(fd, { bigint: true });
    return now.isFile() && now.dev === st.dev && now.ino === st.ino && holdsNothing(fd, now);
  } finally {
    fs.closeSync(fd);
  }
}

/** A target that would be replaced must not be open or mapped by anyone: they would keep the old memory. */
function refuseIfInUse(p: string, name: string): void {
  let fd: number;
  try {
    fd = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch (e) {
    throw withPath(e, p);
  }
  let users: number[] | 'some';
  try {
    users = otherUsers(fd, fs.fstatSync(fd, { bigint: true }));
  } finally {
    fs.closeSync(fd);
  }
  if (users === 'some' || users.length) {
    const who = users === 'some' ? 'another process' : `process ${users.join(', ')}`;
    throw systemError(
      'EBUSY',
      `RAM '${name}' path ${p} holds data and ${who} has it open or mapped (a QEMU started on it?): replacing it would leave that process on the old memory. ` +
        `Stop that process and restore again, remove or empty the file first (it is then filled in place), or pass it as fd:K to fill it in place`,
      { path: p },
    );
  }
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

/**
 * The new blocks' data must fit beside whatever is there now (replaced targets stay until the
 * end). Not counted: an existing in-place target on hugetlbfs, whose pages a QEMU that maps it
 * has already reserved (the free count no longer includes them); if the pool cannot supply
 * them after all, the fill fails with ENOSPC and the file is punched back to holes.
 */
function checkRoom(staged: TargetPlan[]): void {
  const need = new Map<string, { bytes: number; free: number; labels: string[] }>();
  for (const t of staged) {
    const fsInfo = pageSizeOf(path.dirname(t.path!));
    if (fsInfo.huge && t.way === 'in-place' && t.existing) continue;
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
  /** What the workers fill: the target itself (in place, fd), or the temporary file. */
  fd: number;
  label: string;
  /** Replace: the temporary renamed over the target at commit. */
  temp?: string;
  /** In place: the file this restore created (unlinked on failure). */
  created?: { dev: bigint; ino: bigint };
  /** Replace: the temporary is now the target (commit got that far). */
  renamed?: boolean;
}

/** Opens every target (in place), temporary (replace) or fd target at its block size. Undo with discard(). */
export function stageTargets(plans: TargetPlan[]): StagedTarget[] {
  const staged: StagedTarget[] = [];
  try {
    // PATH targets first: one that cannot be staged must not cost an fd target its content.
    for (const t of plans.filter((p) => p.fd === undefined)) {
      if (t.way === 'in-place') {
        staged.push(openInPlace(t));
      } else {
        const temp = tempPathBeside(t.path!);
        const fd = fs.openSync(temp, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
        staged.push({ plan: t, fd, label: t.label, temp });
        // 0600 until the commit gives it the target's mode and owner: a killed run's temporary
        // stays ours, which the next run's cleanup removes (it removes only its own user's files).
        fs.fchmodSync(fd, 0o600);
        native.ftruncate(fd, t.size);
      }
    }
    for (const t of plans.filter((p) => p.fd !== undefined)) {
      native.ftruncate(t.fd!, 0);
      native.ftruncate(t.fd!, t.size);
      staged.push({ plan: t, fd: t.fd!, label: t.label });
    }
  } catch (e) {
    discard(staged);
    throw e;
  }
  // In the plan's order: the workers index targets by block.
  return plans.map((t) => staged.find((s) => s.plan === t)!);
}

/** The planned absence or empty/all-holes file, opened for filling; anything else changed meanwhile. */
function openInPlace(t: TargetPlan): StagedTarget {
  const changed = () => systemError('EEXIST', `RAM '${t.name}' path ${t.path} changed since it was checked; left as it is`, { path: t.path });
  const flags = fs.constants.O_RDWR | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK;
  if (!t.existing) {
    let fd: number;
    try {
      fd = fs.openSync(t.path!, flags | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
    } catch (e) {
      if (isSystemError(e) && e.code === 'EEXIST') throw changed();
      throw withPath(e, t.path!);
    }
    const st = fs.fstatSync(fd, { bigint: true });
    const s: StagedTarget = { plan: t, fd, label: t.label, created: { dev: st.dev, ino: st.ino } };
    try {
      fs.fchmodSync(fd, 0o600); // whatever the umask made of the open's mode
      native.ftruncate(fd, t.size);
    } catch (e) {
      discard([s]);
      throw withPath(e, t.path!);
    }
    return s;
  }
  let fd: number;
  try {
    fd = fs.openSync(t.path!, flags);
  } catch (e) {
    throw isSystemError(e) && (e.code === 'ENOENT' || e.code === 'ELOOP') ? changed() : withPath(e, t.path!);
  }
  const st = fs.fstatSync(fd, { bigint: true });
  if (st.dev !== t.existing.dev || st.ino !== t.existing.ino || !st.isFile() || st.size !== t.existing.size || !holdsNothing(fd, st)) {
    fs.closeSync(fd);
    throw changed();
  }
  if (st.size === 0n) {
    try {
      native.ftruncate(fd, t.size);
    } catch (e) {
      fs.closeSync(fd);
      throw withPath(e, t.path!);
    }
  }
  return { plan: t, fd, label: t.label };
}

/**
 * Undoes stageTargets and any filling since: temporaries unlinked; in-place targets put back
 * as they were (a created file unlinked, an empty one truncated back to empty, an all-holes one
 * punched back to holes); fds closed. fd targets are the caller's.
 */
export function discard(staged: StagedTarget[]): void {
  for (const s of staged) {
    if (s.plan.fd !== undefined) continue;
    try {
      if (s.renamed) {
        // final already: a later target's rename failed
      } else if (s.temp) {
        fs.rmSync(s.temp, { force: true });
      } else if (s.created) {
        const now = lstatIfExists(s.plan.path!);
        if (now && now.dev === s.created.dev && now.ino === s.created.ino) fs.unlinkSync(s.plan.path!);
      } else if (s.plan.existing!.size === 0n) {
        native.ftruncate(s.fd, 0);
      } else {
        native.punchHole(s.fd, 0, s.plan.size);
      }
    } catch {
      // best effort: the error that brought us here is the one to report
    }
    try {
      fs.closeSync(s.fd);
    } catch {
      // already closed
    }
  }
}

/**
 * Makes the restore final: in-place targets are done (their fds closed); each temporary is
 * renamed over its target after checking the target is still the planned file and that no
 * other process has opened or mapped it meanwhile.
 */
export function commit(staged: StagedTarget[]): void {
  for (const s of staged) {
    if (!s.temp) continue;
    const now = lstatIfExists(s.plan.path!);
    const was = s.plan.existing!;
    if (!now || now.dev !== was.dev || now.ino !== was.ino) {
      throw systemError('EEXIST', `RAM '${s.plan.name}' path ${s.plan.path} changed while restoring; left as it is`, { path: s.plan.path });
    }
    refuseIfInUse(s.plan.path!, s.plan.name);
    // The temporary takes the target's place, so it gets its mode and (root) owner now.
    fs.fchmodSync(s.fd, was.mode);
    if (process.getuid?.() === 0) fs.fchownSync(s.fd, was.uid, was.gid);
  }
  // Every rename first, then the fds: were a rename to fail, discard() still finds every
  // in-place target open (and puts it back) and every temporary not yet renamed.
  for (const s of staged) {
    if (!s.temp) continue;
    fs.renameSync(s.temp, s.plan.path!);
    s.temp = undefined;
    s.renamed = true;
  }
  for (const s of staged) {
    if (s.plan.fd !== undefined) continue;
    fs.closeSync(s.fd);
    s.fd = -1;
  }
}
