/**
 * iohelper libvirt-install [--uninstall | --status] [--target PATH]
 * Makes libvirtd run iohelper as its I/O helper (src/install/libvirt-helper.ts).
 */
import * as fs from 'fs';
import { UsageError } from '../errors';
import { DEFAULT_LIBVIRT_HELPER, helperStatus, install, planInstall, planUninstall, uninstall } from '../install/libvirt-helper';
import { parseFlags } from '../util/flags';
import { stdoutText } from './report';

export function libvirtInstallCommand(args: string[]): number {
  const p = parseFlags(args, { booleans: ['uninstall', 'status'], values: ['target'] });
  if (p.positionals.length || p.rest.length) throw new UsageError(`unexpected argument '${[...p.positionals, ...p.rest][0]}'`);
  if (p.flags.has('uninstall') && p.flags.has('status')) throw new UsageError('--uninstall and --status exclude each other');
  const targetFlag = p.flags.get('target');
  if (targetFlag === true) throw new UsageError('--target needs a path');
  const target = targetFlag ?? DEFAULT_LIBVIRT_HELPER;
  if (!target.startsWith('/')) throw new UsageError(`--target ${target}: must be an absolute path`);

  if (p.flags.has('status')) {
    const s = helperStatus(target);
    if (!s.installed) {
      stdoutText(`${target}: ${notInstalled(target)}\n`);
      return 0;
    }
    stdoutText(
      `${target}: iohelper, running ${s.packageDir}/bin/iohelper with ${s.node}${s.broken ? ' (BROKEN: that package or Node is gone)' : ''}\n` +
        `libvirt's helper kept at ${s.original ?? '(missing!)'} (${s.keptBy})\n`,
    );
    return s.broken || !s.original ? 1 : 0;
  }
  if (p.flags.has('uninstall')) {
    const plan = planUninstall(target);
    uninstall(plan);
    stdoutText(`${target}: libvirt's own helper restored\n`);
    return 0;
  }
  const plan = planInstall(target);
  install(plan);
  stdoutText(`${target}: now runs iohelper; libvirt's helper kept at ${plan.keepAs} (${plan.keptBy}); undo with 'iohelper libvirt-install --uninstall'\n`);
  return 0;
}

/**
 * What is at `target` when our wrapper is not: that it is libvirt's own helper cannot be told
 * from the file, so only what can is said.
 */
function notInstalled(target: string): string {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(target);
  } catch {
    return 'absent (is libvirt installed?)';
  }
  const what = st.isFile()
    ? 'a file that is not an iohelper wrapper'
    : st.isSymbolicLink()
      ? 'a symbolic link, not an iohelper wrapper'
      : st.isDirectory()
        ? 'a directory, not a helper program'
        : 'not a regular file, nor an iohelper wrapper';
  return `${what} (iohelper is not installed there)`;
}
