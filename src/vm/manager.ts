/**
 * The manager: save, restore and clone whole VMs, driving QEMU over QMP.
 *
 *   saveVm       stop the guest, check its RAM is shared files, x-ignore-shared save into an image
 *   restoreVm    fill fresh RAM files from the image, start QEMU (-incoming defer), load device state
 *   cloneVm      start N QEMUs that map the image's RAM copy-on-write (no RAM copy), load device state
 *
 * A clone's (and a lazy restore's) RAM is a private mapping of the image: it is not a shared
 * file, so saving such a VM again takes the classic stream path.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { isSystemError, systemError } from '../errors';
import { openFile } from '../fs/open-file';
import { native } from '../native';
import { QmpClient, waitForMigration } from '../qmp/client';
import { checkDeviceState, copyDeviceState } from '../image/io/device-state';
import { ImageMetadata, readImageMetadata } from '../image/io/read-image';
import { BlockEntry, hasChecksums, ImageFormatError, VERSION_COMPRESSED, VERSION_DELTA } from '../image/format';
import { checkDeltaPlan } from '../image/chain';
import { fillsInPlace } from '../image/restore-targets';
import { lstatIfExists } from '../fs/lstat';
import { planPrefetch, PrefetchPlan, PrefetchReport, runPrefetch } from './lazy/prefetch';
import { verifyMappedRam } from './lazy/verify';
import { DEFAULT_JOBS } from '../image/io/image-fd';
import { parseSize } from '../util/flags';
import { RamReadMode } from '../util/limits';
import { ProgressListener } from '../progress';
import { listMemoryBackends, sharedRamFiles } from './qemu-ram';
import { fileBackends, rewriteBackends } from './qemu-args';
import { refuseRamAsImage, saveThroughHelper } from './stream-migration';
import { QemuInstance, startQemu, whileRunning } from './qemu-launch';
import { enableIgnoreShared, finishImageRestore, ImageRestore } from './image-migration';
import { saveVmToImage } from './image-save';
import { startRestoreInProcess } from './in-process-restore';

export interface SaveVmOptions {
  image: string;
  onProgress?: ProgressListener;
  direct?: boolean;
  jobs?: number;
  timeoutMs?: number;
  /** zstd level: write a compressed image (restorable, not clonable). */
  compressLevel?: number;
  /** Write a delta: only what changed since this image (restorable, not clonable; docs/FORMAT.md version 3). */
  base?: string;
  /** How guest RAM is read (src/image/ram-read.ts; default auto: measured per save). */
  ramRead?: RamReadMode;
  /** Aborting it stops the save: the migration is cancelled, `image` left as it was, the guest as it was found. */
  signal?: AbortSignal;
}

/**
 * Saves the guest into `image` through the parallel path, save() running in this process.
 * Every check (the RAM files, the target, the base and its chain, the layout) comes before the
 * guest is stopped; a save that then fails or is aborted resumes a guest that was running. A
 * saved guest stays paused.
 */
export async function saveVm(qmp: QmpClient, o: SaveVmOptions): Promise<{ blocks: Array<{ name: string; path: string; size: number }> }> {
  const blocks = sharedRamFiles(await listMemoryBackends(qmp));
  await refuseRamAsImage(qmp, o.image);
  if (o.base !== undefined) checkDeltaPlan(o.image, o.base);
  await keepingRunStateOnFailure(qmp, (pause) =>
    saveVmToImage(qmp, { image: o.image, ram: blocks.map((b) => ({ name: b.name, path: b.path })), direct: o.direct, jobs: o.jobs, timeoutMs: o.timeoutMs, onProgress: o.onProgress, compressLevel: o.compressLevel, base: o.base, ramRead: o.ramRead, signal: o.signal, onPlanned: pause }),
  );
  return { blocks };
}

/**
 * The classic stream path (any RAM): the file is opened and the pipe handed to QEMU before the
 * guest is stopped; a failed or aborted save resumes a guest that was running (the file, written
 * in place, is then incomplete).
 */
export async function saveVmStream(qmp: QmpClient, o: { image: string; direct?: boolean; signal?: AbortSignal }): Promise<void> {
  await keepingRunStateOnFailure(qmp, (pause) => saveThroughHelper({ qmp, image: o.image, direct: !!o.direct, signal: o.signal, onReady: pause }));
}

/**
 * Runs `fn`, which calls `pause` to stop the guest once its checks passed. When `fn` fails after
 * that, a guest that was running is resumed (fn has ended QEMU's migration by then, so `cont`
 * is accepted); when it succeeds the guest stays paused.
 */
async function keepingRunStateOnFailure<T>(qmp: QmpClient, fn: (pause: () => Promise<void>) => Promise<T>): Promise<T> {
  let stopped = false;
  const pause = async () => {
    const status = await qmp.execute('query-status');
    if (!status.running) return;
    await qmp.execute('stop');
    stopped = true;
  };
  try {
    return await fn(pause);
  } catch (e) {
    if (stopped) {
      await qmp.execute('cont').catch((c: unknown) => {
        if (e instanceof Error) e.message += `; the guest was left paused: cont failed: ${c instanceof Error ? c.message : c}`;
      });
    }
    throw e;
  }
}

export interface StartOptions {
  /** The VM's QEMU arguments: machine, devices and its memory-backend-file objects. */
  qemuArgs: string[];
  /** Leave QEMU running after we exit, logging to this directory. */
  detachedLogDir?: string;
  timeoutMs?: number;
}

function sizeProp(v: string | undefined, id: string): number | undefined {
  if (v === undefined) return undefined;
  try {
    return parseSize(v.replace(/B$/i, ''), `size of ${id}`);
  } catch {
    throw new Error(`memory backend ${id}: cannot read size=${v}`);
  }
}

/** Pairs the image's blocks with the QEMU arguments' memory-backend-file objects (by id). */
function matchBackends(entries: BlockEntry[], qemuArgs: string[]) {
  const backends = fileBackends(qemuArgs);
  const byId = new Map(backends.map((b) => [b.id, b]));
  const missing = entries.filter((e) => !byId.has(e.name)).map((e) => e.name);
  const extra = backends.filter((b) => !entries.some((e) => e.name === b.id)).map((b) => b.id);
  if (missing.length || extra.length) {
    throw new Error(
      `the QEMU arguments' memory-backend-file ids must be the image's blocks (${entries.map((e) => e.name).join(', ')})` +
        (missing.length ? `; missing: ${missing.join(', ')}` : '') +
        (extra.length ? `; not in the image: ${extra.join(', ')}` : ''),
    );
  }
  for (const e of entries) {
    const size = sizeProp(byId.get(e.name)!.props.get('size'), e.name);
    if (size !== undefined && size !== e.size) throw new Error(`memory backend ${e.name} has size ${size}, the image's block has ${e.size}`);
  }
  return byId;
}

/** Streams the image's device state into a QEMU waiting with -incoming defer. */
async function loadDeviceState(qmp: QmpClient, image: string, deviceStateOffset: number, timeoutMs?: number): Promise<void> {
  await enableIgnoreShared(qmp);
  const [r, w] = native.pipe();
  const fd = openFile(image, fs.constants.O_RDONLY);
  const progress = new BigUint64Array(2);
  let copy: Promise<number> | undefined;
  try {
    try {
      await qmp.executeWithFds('getfd', { fdname: 'iohelper-clone' }, [r]);
    } finally {
      fs.closeSync(r);
    }
    copy = copyDeviceState({ toImage: false, pipeFd: w, imageFd: fd, offset: deviceStateOffset, direct: false, align: 4096, progress });
    const copied = copy.then(() => undefined);
    copied.catch(() => undefined);
    await qmp.execute('migrate-incoming', { uri: 'fd:iohelper-clone' });
    await Promise.all([waitForMigration(qmp, { timeoutMs }), copied]);
  } finally {
    // The native copy is stopped and awaited before its fds are closed: its threads must never
    // write to a number that a later open reuses.
    if (copy) {
      progress[1] = 1n;
      await copy.catch(() => undefined);
    }
    fs.closeSync(w);
    fs.closeSync(fd);
  }
}

/** QEMU exits when an incoming migration fails: its own last words say why (the monitor just closes). */
function withQemuStderr(e: unknown, vm: QemuInstance | undefined): unknown {
  const said = vm?.stderr().trim().split('\n').slice(-3).join(' | ');
  if (said && e instanceof Error) e.message += `; QEMU said: ${said}`;
  return e;
}

function logFile(o: StartOptions, name: string): { logFile: string } | undefined {
  if (!o.detachedLogDir) return undefined;
  fs.mkdirSync(o.detachedLogDir, { recursive: true, mode: 0o700 });
  // The default lies in /tmp under a name anyone can guess: a directory someone else made
  // there first (or a link to one) would let them rename or replace our logs.
  const st = fs.lstatSync(o.detachedLogDir);
  // One that others may write (say /tmp itself) would let them plant files under the logs' names.
  if (!st.isDirectory() || st.uid !== process.geteuid?.() || st.mode & 0o022) {
    const what = st.isSymbolicLink() ? 'a symbolic link' : !st.isDirectory() ? 'not a directory' : st.uid !== process.geteuid?.() ? `owned by uid ${st.uid}, not by us` : 'writable by others';
    throw systemError('EPERM', `the log directory ${o.detachedLogDir} is ${what}: name one of ours with --log-dir`, { path: o.detachedLogDir });
  }
  return { logFile: path.join(o.detachedLogDir, `${name}.log`) };
}

/** How clones and lazy restores use the image's recorded working set (IMAGE.ws). */
export interface PrefetchOptions {
  /** Read the recorded working set into the page cache while QEMU starts (default true). */
  prefetch?: boolean;
  /** Worker threads of the prefetch (default: the copy default). */
  jobs?: number;
  /** Why a working-set file was ignored. */
  onWarning?: (message: string) => void;
  /** Called with the running prefetch, which goes on after the QEMUs are handed back. */
  onPrefetch?: (done: Promise<PrefetchReport>, plan: PrefetchPlan) => void;
}

/**
 * Starts `count` clones of the image: each QEMU maps the image's RAM blocks privately
 * (copy-on-write, the image opened read-only) and loads the device state. No RAM is copied;
 * all clones share the image's page cache. When the image has a recorded working set, it is
 * read into the page cache from before the first QEMU starts, in first-touch order, while the
 * QEMUs start and run (see src/vm/lazy/prefetch.ts). Resolves with the loaded, paused QEMUs.
 */
export async function cloneVm(o: StartOptions & PrefetchOptions & CheckOptions & { image: string; count: number }): Promise<QemuInstance[]> {
  const imageFd = openFile(o.image, fs.constants.O_RDONLY);
  let meta;
  try {
    // The checksum tables are read when the RAM is verified (bounded by the format: 64 MiB).
    meta = readImageMetadata(imageFd, o.image, { skipChecksums: !!o.noVerify });
    // Each clone streams the device state straight from the image into QEMU (loadDeviceState),
    // which loads whatever it gets: it is checked against its CRC before any QEMU starts.
    checkDeviceState(imageFd, meta.header, o.image);
  } finally {
    fs.closeSync(imageFd);
  }
  if (meta.header.version === VERSION_COMPRESSED) {
    throw new ImageFormatError(
      'EIMG_COMPRESSED',
      `${o.image} is a compressed image: clones and lazy restores map RAM straight from a mappable image; make one with 'iohelper convert ${o.image} OUT' or restore it eagerly`,
    );
  }
  if (meta.header.version === VERSION_DELTA) {
    throw new ImageFormatError(
      'EIMG_COMPRESSED',
      `${o.image} is a delta (only what changed since its base): clones and lazy restores map RAM straight from one standalone image; make one with 'iohelper convert --flatten ${o.image} OUT' or restore it eagerly`,
    );
  }
  const byName = new Map(meta.entries.map((e) => [e.name, e]));
  matchBackends(meta.entries, o.qemuArgs);
  if (o.prefetch ?? true) {
    const plan = planPrefetch(o.image, meta, o.onWarning ?? (() => undefined));
    if (plan) {
      const done = runPrefetch(o.image, plan, o.jobs ?? DEFAULT_JOBS);
      // Never a reason to fail the restore: the guest reads what it needs itself.
      done.catch((e) => o.onWarning?.(`prefetch of ${plan.file} failed: ${e instanceof Error ? e.message : e}`));
      o.onPrefetch?.(done, plan);
    }
  }
  // Every chunk's CRC, checked while the QEMUs start and before the first loads its device state.
  const stopCheck = new AbortController();
  const onAbort = () => stopCheck.abort();
  if (o.signal?.aborted) stopCheck.abort();
  o.signal?.addEventListener('abort', onAbort, { once: true });
  const verified = verifyBeforeLoad({ ...o, signal: stopCheck.signal }, meta);
  const args = rewriteBackends(o.qemuArgs, (b) => {
    const props = new Map(b.props);
    props.set('mem-path', path.resolve(o.image));
    props.set('offset', String(byName.get(b.id)!.offset));
    props.set('size', String(byName.get(b.id)!.size));
    props.set('share', 'off');
    props.set('readonly', 'on');
    props.set('rom', 'off');
    props.delete('prealloc');
    return props;
  });
  const clones: QemuInstance[] = [];
  let vm: QemuInstance | undefined;
  try {
    for (let i = 0; i < o.count; i++) {
      vm = await startQemu({ args, incoming: true, detached: logFile(o, `clone-${i}`) });
      clones.push(vm);
      await whileRunning(vm, verified);
      await whileRunning(vm, loadDeviceState(vm.qmp, o.image, meta.header.deviceStateOffset, o.timeoutMs));
    }
  } catch (e) {
    stopCheck.abort();
    await verified.catch(() => undefined); // its pool threads read the image: never left running
    await Promise.all(clones.map((c) => c.stop()));
    // QEMU's own last words say why it failed; a refused image or an interrupt is our own.
    throw e instanceof ImageFormatError || (isSystemError(e) && e.code === 'ECANCELED') ? e : withQemuStderr(e, vm);
  } finally {
    o.signal?.removeEventListener('abort', onAbort);
  }
  return clones;
}

/** What a lazy restore or clone checks of the image's RAM. */
export interface CheckOptions {
  /** Trust the image: skip the CRC check of every chunk (the device state's CRC is still checked). */
  noVerify?: boolean;
  /** Progress of the check (bytes of RAM read and checked). */
  onProgress?: ProgressListener;
  /** Aborting it stops the check, and the restore or clone with it. */
  signal?: AbortSignal;
}

/** verifyMappedRam, or a resolved promise when there is nothing to check (said through onWarning). */
function verifyBeforeLoad(o: CheckOptions & PrefetchOptions & { image: string }, meta: ImageMetadata): Promise<void> {
  if (o.noVerify) return Promise.resolve();
  if (!hasChecksums(meta.header)) {
    o.onWarning?.(`${o.image} has no chunk checksums (saved with --no-checksums): its RAM is mapped unverified`);
    return Promise.resolve();
  }
  const done = verifyMappedRam({ image: o.image, meta, jobs: o.jobs ?? DEFAULT_JOBS, onProgress: o.onProgress, signal: o.signal });
  done.catch(() => undefined); // awaited by the caller; a QEMU that fails to start first must not make it unhandled
  return done;
}

/**
 * Restores one VM. Eager (default): restore() fills, in this process, the RAM files named by the arguments'
 * memory-backend-file objects (share=on), then QEMU loads the device state; the VM can be
 * saved again the fast way. When every RAM file is fresh (absent, empty or all holes) it is
 * filled in place and QEMU starts at the same time, mapping the files from the start;
 * `migrate-incoming` waits until every chunk verified. A RAM file that holds data is replaced
 * through a temporary, so QEMU starts only after the helper renamed it (it must map the new
 * file). Lazy: a clone of one: ready at once, pages come from the image on demand, but its RAM
 * is private afterwards (its next save takes the stream path).
 */
export async function restoreVm(o: StartOptions & PrefetchOptions & { image: string; direct?: boolean; jobs?: number; lazy?: boolean; noVerify?: boolean; onProgress?: ProgressListener; signal?: AbortSignal }): Promise<QemuInstance> {
  if (o.lazy) return (await cloneVm({ ...o, count: 1 }))[0];
  const backends = fileBackends(o.qemuArgs);
  const notShared = backends.filter((b) => b.props.get('share') !== 'on' || !b.props.get('mem-path'));
  if (!backends.length || notShared.length) {
    throw new Error(
      `an eager restore needs RAM as shared files: give each block as -object memory-backend-file,id=NAME,size=SIZE,mem-path=/dev/shm/FILE,share=on` +
        (notShared.length ? ` (not so: ${notShared.map((b) => b.id).join(', ')})` : ''),
    );
  }
  const ram = backends.map((b) => ({ name: b.id, path: b.props.get('mem-path')! }));
  const created = createFreshRamFiles(o.image, o.qemuArgs, ram);
  let started: ImageRestore;
  try {
    started = startRestoreInProcess({ image: o.image, ram, direct: o.direct, jobs: o.jobs, onProgress: o.onProgress, noVerify: o.noVerify, onWarning: o.onWarning, signal: o.signal });
  } catch (e) {
    removeCreated(created.files);
    throw e;
  }
  let vm: QemuInstance | undefined;
  try {
    if (created.way === 'together') {
      // Every RAM file exists at its block's size with nothing in it: the helper fills them in
      // place while QEMU starts and maps them; migrate-incoming waits for the last chunk.
      // A QEMU that exits meanwhile ends the fill at once (whileRunning): it would fill for nobody.
      const qemu = startQemu({ args: o.qemuArgs, incoming: true, detached: logFile(o, 'restore') });
      qemu.then((v) => (vm = v), () => undefined);
      try {
        await Promise.all([qemu.then((v) => whileRunning(v, started.ramFilled)), started.ramFilled]);
      } catch (e) {
        await qemu.catch(() => undefined); // a QEMU still starting is stopped below, not left behind
        throw e;
      }
      vm = await qemu;
    } else if (created.way === 'after-plan') {
      // An empty RAM file: the helper sizes it before filling; QEMU must not race it.
      await started.planned;
      vm = await startQemu({ args: o.qemuArgs, incoming: true, detached: logFile(o, 'restore') });
      await whileRunning(vm, started.ramFilled);
    } else {
      // A RAM file holding data is replaced: QEMU must map the new file, not the old one.
      await started.ramFilled;
      vm = await startQemu({ args: o.qemuArgs, incoming: true, detached: logFile(o, 'restore') });
    }
    await whileRunning(vm, finishImageRestore(vm.qmp, started, o.timeoutMs));
    return vm;
  } catch (e) {
    // One cleanup path: the restore is stopped and awaited (a filled-in-place file is put back as
    // it was), the pipe end closed once, the QEMU we started stopped; none of it may hide the
    // error that brought us here.
    await started.stop();
    started.closeReadFd();
    await vm?.stop().catch(() => undefined);
    removeCreated(created.files);
    throw withQemuStderr(e, vm);
  }
}

/**
 * How QEMU and the helper can overlap, and the RAM files this restore created. Absent files
 * are created here at their block's size (sparse, the image's sizes), so the helper fills them
 * in place and a failed restore can remove them whatever stage it reached. Then: all fresh
 * (all holes at the block's size), QEMU starts at once; an empty file, QEMU after the helper's
 * plan (the helper sizes it); a file holding data, QEMU after the fill (it must map the new file).
 */
function createFreshRamFiles(image: string, qemuArgs: string[], ram: Array<{ name: string; path: string }>): { way: 'together' | 'after-plan' | 'serial'; files: Array<{ path: string; ino: bigint; dev: bigint }> } {
  const fd = openFile(image, fs.constants.O_RDONLY);
  let entries: BlockEntry[];
  try {
    entries = readImageMetadata(fd, image, { skipChecksums: true }).entries;
  } finally {
    fs.closeSync(fd);
  }
  matchBackends(entries, qemuArgs);
  const size = new Map(entries.map((e) => [e.name, e.size]));
  const states = ram.map((r) => ({ ...r, st: lstatIfExists(r.path) }));
  const files: Array<{ path: string; ino: bigint; dev: bigint }> = [];
  try {
    for (const r of states.filter((x) => !x.st)) {
      const f = fs.openSync(r.path, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
      try {
        const st = fs.fstatSync(f, { bigint: true });
        files.push({ path: r.path, ino: st.ino, dev: st.dev });
        fs.fchmodSync(f, 0o600); // whatever the umask made of the open's mode
        native.ftruncate(f, size.get(r.name)!);
      } finally {
        fs.closeSync(f);
      }
    }
  } catch (e) {
    removeCreated(files);
    throw e;
  }
  const existing = states.filter((r) => r.st);
  const way =
    existing.some((r) => !fillsInPlace(r.path) || (r.st!.size !== 0n && r.st!.size !== BigInt(size.get(r.name)!))) ? 'serial'
    : existing.some((r) => r.st!.size === 0n) ? 'after-plan'
    : 'together';
  return { way, files };
}

/** Unlinks the RAM files a failed restore created (when they are still the files it made). */
function removeCreated(files: Array<{ path: string; ino: bigint; dev: bigint }>): void {
  for (const f of files) {
    const st = lstatIfExists(f.path);
    if (st && st.ino === f.ino && st.dev === f.dev) fs.rmSync(f.path, { force: true });
  }
}
