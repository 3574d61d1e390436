/**
 * iohelper save | restore | inspect: the parallel RAM image (docs/FORMAT.md).
 *   save    --fd N | --image PATH [--direct] --ram NAME=PATH… [--jobs J] [--chunk SIZE]   device state on stdin
 *   restore --fd N [--direct] --ram NAME=PATH… [--jobs J] [--no-verify] [--base BASE]    device state to stdout
 *   inspect IMAGE [--json] [--base BASE]
 *   convert SOURCE TARGET [--compress[=zstd[:LEVEL]]] [--flatten] [--base BASE] [--jobs J] [--direct]
 */
import * as fs from 'fs';
import * as path from 'path';
import { UsageError } from '../errors';
import { createReplacement } from '../fs/atomic-file';
import { convert } from '../image/convert';
import { inspect, InspectResult } from '../image/inspect';
import { checkRoles, FileRole } from '../image/identity';
import { checkUniqueNames, RamSource } from '../image/ram-files';
import { parseCompress, parseRamSpec } from './image-args';
import { CHUNK_SIZE, FD, isRamReadMode, JOBS, RAM_READ_MODES } from '../util/limits';
import { restore } from '../image/restore';
import { openBase, save, stagedSaveInterrupted } from '../image/save';
import { formatBytes } from '../progress';
import { progressOf } from './progress-option';
import { parseBounded, parseFlags, parseSize, ParsedFlags } from '../util/flags';
import { openFile } from '../fs/open-file';
import { removeStaleTemporaries } from '../fs/stale-temporaries';
import { commandName, stderrLine, stdoutText } from './report';
import { checkPassedFd } from './passed-fds';
import { afterPendingSignals } from '../util/event-loop';
import { withInterrupts } from './signals';

/** --fd N, or (restore only: a save by path goes through createReplacement) --image PATH opened read-only. */
function imageFd(flags: Map<string, string | true>): { fd: number; name: string; owned: boolean } {
  const fdText = flags.get('fd');
  const image = flags.get('image');
  if (typeof fdText === 'string' && typeof image === 'string') throw new UsageError('give --fd or --image, not both');
  if (typeof fdText === 'string') {
    const fd = parseBounded(fdText, '--fd', FD);
    checkPassedFd(fd, '--fd');
    const name = flags.get('name');
    return { fd, name: typeof name === 'string' ? name : `fd ${fd}`, owned: false };
  }
  if (typeof image === 'string') {
    const fd = openFile(image, fs.constants.O_RDONLY);
    return { fd, name: image, owned: true };
  }
  throw new UsageError('--fd N (or --image PATH) is required');
}

/** The arguments save and restore share: --ram (checked), --direct, --jobs, --job-size. */
function copyArgs(p: ParsedFlags) {
  if (p.positionals.length) throw new UsageError(`unexpected argument '${p.positionals[0]}'`);
  const ram = (p.lists.get('ram') ?? []).map(parseRamSpec);
  if (!ram.length) throw new UsageError('at least one --ram NAME=PATH is required');
  checkUniqueNames(ram);
  for (const r of ram) if (r.fd !== undefined) checkPassedFd(r.fd, `--ram ${r.name}`);
  return {
    ram,
    direct: p.flags.has('direct'),
    jobs: p.flags.has('jobs') ? parseBounded(String(p.flags.get('jobs')), '--jobs', JOBS) : undefined,
    jobSize: p.flags.has('job-size') ? parseSize(String(p.flags.get('job-size')), '--job-size') : undefined,
  };
}

/** The roles save and restore share: the RAM files, and a --progress fd. */
function sharedRoles(ram: RamSource[], progress: string | true | undefined): FileRole[] {
  return [
    ...ram.map((r) => ({ role: `--ram ${r.name}=${r.fd !== undefined ? `fd:${r.fd}` : r.path}`, fd: r.fd, path: r.path })),
    ...(typeof progress === 'string' ? [{ role: `--progress=${progress}`, fd: Number(progress) }] : []),
  ];
}

const common = { booleans: ['direct'], values: ['fd', 'image', 'name', 'jobs', 'job-size'], repeated: ['ram'], optionalValue: ['progress'] };

/** --base PATH, which needs `what`. */
function baseArg(p: ParsedFlags, what: string): string | undefined {
  const base = p.flags.get('base');
  if (base === true) throw new UsageError(`--base needs ${what}`);
  return base;
}

const OVERRIDDEN_BASE = "the path of the delta's base (where its chain now is)";

/** What a command did on the side, on stderr: it still succeeds. */
const warn = (m: string) => stderrLine(`${commandName()}: warning: ${m}`);

export async function saveCommand(args: string[]): Promise<number> {
  const p = parseFlags(args, {
    ...common,
    booleans: [...common.booleans, 'no-checksums', 'no-stream-check'],
    values: [...common.values, 'chunk', 'min-hole', 'base', 'ram-read'],
    optionalValue: [...common.optionalValue, 'compress'],
  });
  const basePath = baseArg(p, 'the path of the image the delta is saved against');
  const shared = copyArgs(p);
  const compressLevel = parseCompress(p.flags.get('compress'));
  if (compressLevel !== undefined && p.flags.has('no-checksums')) throw new UsageError('--compress: a compressed image always has chunk checksums; drop --no-checksums');
  const chunkSize = p.flags.has('chunk') ? parseBounded(String(p.flags.get('chunk')), '--chunk', CHUNK_SIZE, 'size') : undefined;
  const minHole = p.flags.has('min-hole') ? parseSize(String(p.flags.get('min-hole')), '--min-hole') : undefined;
  const ramRead = p.flags.get('ram-read');
  if (ramRead !== undefined && !isRamReadMode(ramRead)) throw new UsageError(`--ram-read: '${ramRead}' is not one of ${RAM_READ_MODES.join(', ')}`);
  checkPassedFd(0, 'the device state (stdin)');
  // --image PATH: a new file beside PATH, renamed over it only once committed and synced, so
  // the last good image survives any failure and a reader mapping it keeps its pages.
  // --fd N: the manager's file, written in place (truncated first).
  const target = p.flags.get('image');
  const img = typeof target === 'string' && !p.flags.has('fd') ? undefined : imageFd(p.flags);
  if (!img) for (const m of removeStaleTemporaries(path.dirname(path.resolve(String(target))))) warn(m);
  const staged = img ? undefined : createReplacement(String(target));
  const imageName = img?.name ?? String(target);
  let base: { fd: number; name: string; reference: string } | undefined;
  try {
    if (basePath !== undefined) base = openBase(basePath, imageName, img?.fd ?? staged!.fd);
    // The base's own checks (a delta never replaces its chain) are save()'s, which says it better.
    checkRoles([
      // By path, the file the new image replaces (if any): renamed over, it would be gone from its other role.
      img ? { role: `the image (--fd ${img.fd})`, fd: img.fd } : { role: `the image (--image ${imageName})`, id: staged!.replaced },
      { role: 'the device state (stdin)', fd: 0 },
      ...sharedRoles(shared.ram, p.flags.get('progress')),
    ]);
    await withInterrupts(commandName(), async (signal) => {
      await save({
        ...shared,
        imageFd: img?.fd ?? staged!.fd,
        imageName,
        chunkSize,
        checksums: !p.flags.has('no-checksums'),
        checkDeviceState: !p.flags.has('no-stream-check'),
        minHole,
        ramRead,
        compressLevel,
        base,
        staged: staged && { replaces: staged.replaced },
        onProgress: progressOf(p.flags.get('progress'), imageName),
        signal,
      });
      // The rename is the commit: an interrupt before it (one that came during save()'s last
      // writes is handled now) leaves the old image; nothing between the check and the rename yields.
      await afterPendingSignals();
      if (staged && signal.aborted) throw stagedSaveInterrupted(imageName);
      staged?.commit();
    });
  } catch (e) {
    staged?.discard();
    throw e;
  } finally {
    if (img?.owned) fs.closeSync(img.fd);
    if (base) fs.closeSync(base.fd);
  }
  return 0;
}

export async function restoreCommand(args: string[]): Promise<number> {
  const p = parseFlags(args, { ...common, booleans: [...common.booleans, 'no-verify', 'force'], values: [...common.values, 'ready-fd', 'planned-fd', 'base'] });
  const base = baseArg(p, OVERRIDDEN_BASE);
  const signalFd = (flag: string) => {
    if (!p.flags.has(flag)) return undefined;
    const fd = parseBounded(String(p.flags.get(flag)), `--${flag}`, FD);
    checkPassedFd(fd, `--${flag}`);
    return fd;
  };
  const readyFd = signalFd('ready-fd');
  const plannedFd = signalFd('planned-fd');
  const shared = copyArgs(p);
  checkPassedFd(1, 'the device state (stdout)');
  const img = imageFd(p.flags);
  try {
    checkRoles([
      { role: img.owned ? `the image (--image ${img.name})` : `the image (--fd ${img.fd})`, fd: img.fd },
      { role: 'the device state (stdout)', fd: 1 },
      ...sharedRoles(shared.ram, p.flags.get('progress')),
      ...(readyFd !== undefined ? [{ role: `--ready-fd ${readyFd}`, fd: readyFd }] : []),
      ...(plannedFd !== undefined ? [{ role: `--planned-fd ${plannedFd}`, fd: plannedFd }] : []),
    ]);
    await withInterrupts(commandName(), (signal) =>
      restore({
        onWarning: warn,
        ...shared,
        imageFd: img.fd,
        imageName: img.name,
        base,
        noVerify: p.flags.has('no-verify'),
        force: p.flags.has('force'),
        onPlanned: plannedFd === undefined ? undefined : () => signalLine(plannedFd, 'planned'),
        onRamFilled: readyFd === undefined ? undefined : () => signalLine(readyFd, 'ready'),
        onProgress: progressOf(p.flags.get('progress'), img.name),
        signal,
      }),
    );
  } finally {
    if (img.owned) fs.closeSync(img.fd);
  }
  return 0;
}

/**
 * For a manager that runs us (src/vm/image-migration.ts), one line then the fd is closed:
 * --planned-fd says "planned" once every check passed and the targets are open (a QEMU may map
 * them from now on), --ready-fd says "ready" once the RAM files are filled and checked.
 */
function signalLine(fd: number, line: string): void {
  try {
    fs.writeSync(fd, `${line}\n`);
    fs.closeSync(fd);
  } catch {
    // nobody listening: not our problem
  }
}

export function inspectCommand(args: string[]): number {
  const p = parseFlags(args, { booleans: ['json'], values: ['base'] });
  if (p.positionals.length !== 1) throw new UsageError('inspect takes one IMAGE path');
  const r = inspect(p.positionals[0], { base: baseArg(p, OVERRIDDEN_BASE) });
  stdoutText(p.flags.has('json') ? JSON.stringify(r, null, 2) + '\n' : describe(r));
  return r.kind === 'iohelper' && (!r.committed || r.deviceStateCrc?.ok === false || r.chainError) ? 2 : 0;
}

/** Names and creator strings come from the image: control characters are shown escaped, never sent to the terminal. */
function printable(text: string | undefined): string {
  return (text ?? '').replace(/[\x00-\x1f\x7f-\x9f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

function describe(r: InspectResult): string {
  const lines = [`${printable(r.path)}: ${formatBytes(r.fileSize)} (${formatBytes(r.allocatedBytes)} allocated)`];
  if (r.kind === 'libvirt' && r.libvirt) {
    const l = r.libvirt;
    lines.push(`libvirt save image, ${l.complete ? 'complete (LibvirtQemudSave)' : 'INCOMPLETE (LibvirtQemudPart)'}, version ${l.version}, XML ${l.xmlLength} bytes, format ${l.format}, was ${l.wasRunning ? 'running' : 'paused'}`);
  } else if (r.kind === 'qemu-stream') {
    lines.push(`raw QEMU migration stream (QEVM), version ${r.qemuStreamVersion}`);
  } else if (r.kind === 'iohelper') {
    if (r.invalid) lines.push(`iohelper image, REFUSED: ${printable(r.invalid.message)} (${r.invalid.code})`);
    else {
      lines.push(`iohelper image v${r.version}, ${r.committed ? 'committed' : 'INCOMPLETE (the save never finished)'}, page ${formatBytes(r.pageSize!)}, alignment ${formatBytes(r.alignment!)}, checksums ${r.checksums ? 'CRC-32C per chunk' : 'none'}, by ${printable(r.creator)} at ${r.createdAt}`);
      if (r.version === 3) {
        lines.push(`  delta (version 3) at depth ${r.depth}, hash unit ${formatBytes(r.hashUnit!)}: restore reads the chain; clones and --lazy need a standalone copy (iohelper convert --flatten)`);
        if (r.chainError) lines.push(`  chain REFUSED: ${printable(r.chainError.message)} (${r.chainError.code})`);
        for (const l of r.chain ?? []) lines.push(`  layer ${printable(l.path)} (v${l.version}, depth ${l.depth}): supplies ${l.units} units, ${formatBytes(l.bytes)} stored`);
      } else if (r.compressed) lines.push('  compressed (version 2): restore reads it; clones and --lazy need a mappable copy (iohelper convert)');
      if (r.imageId) lines.push(`  id ${r.imageId}, AES-128-GMAC per ${formatBytes(r.hashUnit!)} unit`);
      for (const b of r.blocks ?? []) {
        const c = b.chunks;
        lines.push(
          c
            ? `  block ${printable(b.name)}: ${formatBytes(b.size)} stored in ${formatBytes(b.dataBytes)}, ratio ${Number.isFinite(c.ratio) ? c.ratio.toFixed(2) : 'all zero'}; ${b.checksumCount} chunks of ${formatBytes(b.chunkSize)}: ${c.zstd} zstd, ${c.raw} raw, ${c.zero} zero${r.version === 3 ? `, ${c.base} base` : ''}`
            : `  block ${printable(b.name)}: ${formatBytes(b.size)} at offset ${b.offset}, ${formatBytes(b.dataBytes)} data (${((100 * b.dataBytes) / b.size).toFixed(0)}%), ${b.checksumCount} chunks of ${formatBytes(b.chunkSize)}`,
        );
      }
      if (r.deviceStateBytes !== undefined) lines.push(`  device state: ${r.deviceStateBytes} bytes, ${deviceStateCrcText(r.deviceStateCrc)}`);
    }
  } else lines.push('not an iohelper image, libvirt save image or QEMU stream');
  return lines.join('\n') + '\n';
}

function deviceStateCrcText(c: InspectResult['deviceStateCrc']): string {
  if (!c) return 'no device-state checksum (saved by an older iohelper): not verified';
  if (c.ok) return `CRC-32C ${c.recorded} verified`;
  return `CORRUPTED: CRC-32C ${c.computed}, the image recorded ${c.recorded} (restore refuses it)`;
}

export async function convertCommand(args: string[]): Promise<number> {
  const p = parseFlags(args, { booleans: ['direct', 'flatten'], values: ['jobs', 'base'], optionalValue: ['compress', 'progress'] });
  const base = baseArg(p, OVERRIDDEN_BASE);
  if (p.positionals.length !== 2) throw new UsageError('convert takes SOURCE and TARGET image paths');
  const [source, target] = p.positionals;
  const compressLevel = parseCompress(p.flags.get('compress'));
  const jobs = p.flags.has('jobs') ? parseBounded(String(p.flags.get('jobs')), '--jobs', JOBS) : undefined;
  const r = await withInterrupts(commandName(), (signal) =>
    convert({ source, target, compressLevel, jobs, direct: p.flags.has('direct'), flatten: p.flags.has('flatten'), base, onWarning: warn, onProgress: progressOf(p.flags.get('progress'), source), signal }),
  );
  stderrLine(`${commandName()}: ${target}: ${r.version === 1 ? 'mappable (version 1)' : 'compressed (version 2)'}, ${formatBytes(r.targetBytes)} from ${formatBytes(r.sourceBytes)} in ${(r.elapsedMs / 1000).toFixed(2)} s`);
  return 0;
}
