/**
 * Puts iohelper where libvirtd runs its I/O helper, and takes it away again.
 *
 * libvirtd execs a fixed path (/usr/lib/libvirt/libvirt_iohelper on Debian/Ubuntu,
 * /usr/libexec/libvirt_iohelper on RHEL). We never copy our files there: a copy of bin/iohelper
 * cannot find its package. Instead a small sh wrapper with absolute paths to this Node and this
 * package takes the helper's place, and libvirt's own helper is kept aside:
 *   - where dpkg-divert exists, as a local diversion (TARGET.distrib): package upgrades of
 *     libvirt then land beside our wrapper instead of overwriting it;
 *   - elsewhere, renamed to TARGET.iohelper-orig.
 * Uninstall removes the wrapper and renames the original back, so it is restored byte for byte.
 *
 * Each operation is planned first (every check, no side effect), then carried out.
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { systemError } from '../errors';
import { writeFileAtomic } from '../fs/atomic-file';
import { packageRoot } from '../package-root';

export const DEFAULT_LIBVIRT_HELPER = '/usr/lib/libvirt/libvirt_iohelper';
/** The first lines of every wrapper we write: how status and uninstall recognise ours. */
const MARKER = '# iohelper libvirt-install wrapper';

type KeepMethod = 'dpkg-divert' | 'side-copy';

export interface HelperStatus {
  target: string;
  /** Our wrapper is at the target. */
  installed: boolean;
  /** Where libvirt's own helper is now (the target itself when not installed), if it exists. */
  original?: string;
  keptBy?: KeepMethod;
  /** From an installed wrapper: the package and Node it runs. */
  packageDir?: string;
  node?: string;
  /** The wrapper's package or Node is gone: libvirt's saves would fail. */
  broken?: boolean;
}

interface Paths {
  target: string;
  diverted: string;
  sideCopy: string;
}

function pathsFor(target: string): Paths {
  return { target, diverted: `${target}.distrib`, sideCopy: `${target}.iohelper-orig` };
}

function haveDpkgDivert(): boolean {
  try {
    execFileSync('dpkg-divert', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** The path dpkg diverts `target` to, or undefined when it is not diverted. */
function dpkgDiversion(target: string): string | undefined {
  if (!haveDpkgDivert()) return undefined;
  const out = execFileSync('dpkg-divert', ['--truename', target], { encoding: 'utf8' }).trim();
  return out && out !== target ? out : undefined;
}

function exists(p: string): boolean {
  try {
    fs.lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

/** Reads our wrapper's fields, or undefined when the file is not one of ours. */
function readWrapper(file: string): { packageDir: string; node: string } | undefined {
  let text: string;
  try {
    const st = fs.lstatSync(file);
    if (!st.isFile() || st.size > 64 * 1024) return undefined;
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  if (!text.split('\n').slice(0, 3).includes(MARKER)) return undefined;
  // Values are written by shQuote: '...' with each ' as '\''.
  const field = (name: string) => {
    const line = text.split('\n').find((l) => l.startsWith(`${name}='`) && l.endsWith("'"));
    return line ? line.slice(name.length + 2, -1).replace(/'\\''/g, "'") : '';
  };
  return { packageDir: field('IOHELPER_PKG'), node: field('IOHELPER_NODE') };
}

export function helperStatus(target = DEFAULT_LIBVIRT_HELPER): HelperStatus {
  const p = pathsFor(target);
  const wrapper = readWrapper(target);
  const diversion = dpkgDiversion(target);
  if (!wrapper) return { target, installed: false, original: exists(target) ? target : undefined };
  const original = diversion && exists(diversion) ? diversion : exists(p.sideCopy) ? p.sideCopy : undefined;
  const broken = !fs.existsSync(path.join(wrapper.packageDir, 'bin', 'iohelper')) || !fs.existsSync(wrapper.node);
  return { target, installed: true, original, keptBy: diversion ? 'dpkg-divert' : 'side-copy', ...wrapper, broken };
}

/**
 * Paths that go into the wrapper script must not hold control characters: a newline would end
 * a line of the script (even a comment's) and start a command of the path's choosing.
 */
function checkScriptPath(value: string, what: string): string {
  if (/[\x00-\x1f\x7f]/.test(value)) throw systemError('EINVAL', `${what} ${JSON.stringify(value)} contains a control character`, { path: value });
  return value;
}

/** Single-quotes a path for sh (each ' as '\''), after checkScriptPath. */
function shQuote(value: string, what: string): string {
  return `'${checkScriptPath(value, what).replace(/'/g, "'\\''")}'`;
}

/** The sh script that stands in for libvirt_iohelper: same argv, fds and exit status, passed straight through by exec. */
export function wrapperScript(packageDir: string, node: string, original: string): string {
  return [
    '#!/bin/sh',
    MARKER,
    `# Runs iohelper (${shQuote(packageDir, 'package path')}) in place of libvirt's helper, kept at ${shQuote(original, 'kept path')}.`,
    "# Undo with: iohelper libvirt-install --uninstall",
    `IOHELPER_PKG=${shQuote(packageDir, 'package path')}`,
    `IOHELPER_NODE=${shQuote(node, 'node path')}`,
    'if [ ! -x "$IOHELPER_NODE" ] || [ ! -f "$IOHELPER_PKG/bin/iohelper" ]; then',
    // One line, no trailing newline: libvirt shows the helper's last stderr line as the error.
    `  printf '%s: failure: iohelper is gone from %s (or node from %s); run iohelper libvirt-install again, or --uninstall' "$0" "$IOHELPER_PKG" "$IOHELPER_NODE" >&2`,
    '  exit 1',
    'fi',
    // Messages keep libvirt's helper name, as libvirt_iohelper's own do. Through bin/iohelper's
    // sh part, which sees a closed stdin or stdout before Node would reopen it as /dev/null.
    'IOHELPER_ARGV0="$0" IOHELPER_NODE="$IOHELPER_NODE" exec /bin/sh "$IOHELPER_PKG/bin/iohelper" "$@"',
    '',
  ].join('\n');
}

export interface InstallPlan {
  target: string;
  keepAs: string;
  keptBy: KeepMethod;
  script: string;
}

function requireRoot(verb: string): void {
  if (process.getuid?.() !== 0) throw systemError('EPERM', `${verb} libvirt's helper needs root (it replaces a file libvirtd runs)`);
}

/** Every check for install, nothing changed. */
export function planInstall(target = DEFAULT_LIBVIRT_HELPER, packageDir = packageRoot(), node = process.execPath): InstallPlan {
  requireRoot('installing as');
  checkScriptPath(target, 'target');
  const status = helperStatus(target);
  if (status.installed) {
    if (status.packageDir === packageDir && status.node === node && !status.broken) {
      throw systemError('EEXIST', `iohelper is already installed at ${target} (this package, ${packageDir})`, { path: target });
    }
    throw systemError('EEXIST', `${target} is already an iohelper wrapper (for ${status.packageDir}); run --uninstall first`, { path: target });
  }
  if (!status.original) {
    throw systemError('ENOENT', `${target} does not exist: is libvirt installed? (libvirt-daemon on Debian; --target PATH for another location)`, { path: target });
  }
  const st = fs.statSync(target);
  if (!st.isFile()) throw systemError('EINVAL', `${target} is not a regular file`, { path: target });
  if (!fs.existsSync(path.join(packageDir, 'dist', 'src', 'cli', 'main.js'))) {
    throw systemError('ENOENT', `${packageDir} has no dist/: build the package first (npm run build:ts)`, { path: packageDir });
  }
  const p = pathsFor(target);
  const keptBy: KeepMethod = haveDpkgDivert() ? 'dpkg-divert' : 'side-copy';
  const keepAs = keptBy === 'dpkg-divert' ? p.diverted : p.sideCopy;
  if (exists(keepAs)) throw systemError('EEXIST', `${keepAs} already exists; refusing to overwrite it`, { path: keepAs });
  return { target, keepAs, keptBy, script: wrapperScript(packageDir, node, keepAs) };
}

/** Writes `text` as an executable file at `file`, atomically (a temp file beside it, renamed). */
function writeExecutable(file: string, text: string): void {
  writeFileAtomic(file, text, 0o755);
}

export function install(plan: InstallPlan): void {
  if (plan.keptBy === 'dpkg-divert') {
    execFileSync('dpkg-divert', ['--local', '--rename', '--divert', plan.keepAs, '--add', plan.target], { stdio: ['ignore', 'ignore', 'pipe'] });
  } else {
    fs.renameSync(plan.target, plan.keepAs);
  }
  try {
    writeExecutable(plan.target, plan.script);
  } catch (e) {
    undoKeep(plan.target, plan.keepAs, plan.keptBy);
    throw e;
  }
}

function undoKeep(target: string, keepAs: string, keptBy: KeepMethod): void {
  if (keptBy === 'dpkg-divert') execFileSync('dpkg-divert', ['--local', '--rename', '--remove', target], { stdio: ['ignore', 'ignore', 'pipe'] });
  else fs.renameSync(keepAs, target);
}

export interface UninstallPlan {
  target: string;
  original: string;
  keptBy: KeepMethod;
}

/** Every check for uninstall, nothing changed. */
export function planUninstall(target = DEFAULT_LIBVIRT_HELPER): UninstallPlan {
  requireRoot('restoring');
  const status = helperStatus(target);
  if (!status.installed) throw systemError('ENOENT', `iohelper is not installed at ${target} (it holds ${status.original ? "libvirt's own helper" : 'nothing'})`, { path: target });
  if (!status.original || !status.keptBy) {
    throw systemError('ENOENT', `libvirt's original helper is not where iohelper kept it (${pathsFor(target).diverted} or ${pathsFor(target).sideCopy}); reinstall libvirt's package`, { path: target });
  }
  return { target, original: status.original, keptBy: status.keptBy };
}

export function uninstall(plan: UninstallPlan): void {
  fs.unlinkSync(plan.target);
  undoKeep(plan.target, plan.original, plan.keptBy);
}
