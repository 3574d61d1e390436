/** Entry point of the `iohelper` command: picks the form from argv and returns an exit code. */
import { UsageError } from '../errors';
import { parseBounded, parseFlags } from '../util/flags';
import { BUFFER_SIZE, FD, INFLIGHT } from '../util/limits';
import { helpText } from './help';
import { checkArgsAreUtf8 } from './raw-args';
import { commandName, endFinalLineWithNewline, finalLine, stderrLine, stdoutText } from './report';
import { describeFailure, progressTarget, runStreamCommand } from './stream-command';
import { DirectMode } from '../stream/copy';

async function fdForm(argv0: string, args: string[]): Promise<number> {
  const p = parseFlags(args, {
    booleans: ['direct', 'prefer-direct'],
    values: ['fd', 'name', 'buffer-size', 'inflight'],
    optionalValue: ['progress'],
  });
  if (p.positionals.length || p.rest.length) throw new UsageError(`unexpected argument '${[...p.positionals, ...p.rest][0]}'`);
  const fdText = p.flags.get('fd');
  if (typeof fdText !== 'string') throw new UsageError('--fd N is required');
  const fileFd = parseBounded(fdText, '--fd', FD);
  if (p.flags.get('direct') && p.flags.get('prefer-direct')) throw new UsageError('--direct and --prefer-direct exclude each other');
  const direct: DirectMode = p.flags.get('direct') ? 'require' : p.flags.get('prefer-direct') ? 'prefer' : 'as-is';
  const name = p.flags.get('name');
  const bufferSize = p.flags.get('buffer-size');
  const inflight = p.flags.get('inflight');
  return runStreamCommand({
    argv0,
    fileFd,
    fileName: typeof name === 'string' ? name : `fd ${fileFd}`,
    direct,
    bufferSize: typeof bufferSize === 'string' ? parseBounded(bufferSize, '--buffer-size', BUFFER_SIZE, 'size') : undefined,
    inflight: typeof inflight === 'string' ? parseBounded(inflight, '--inflight', INFLIGHT) : undefined,
    progress: progressTarget(p.flags.get('progress')),
  });
}


/**
 * libvirt_iohelper's FD argument as it reads it (virStrToLong_i: strtol in base 10, the whole
 * string used, the value an int): optional leading white space, an optional sign, decimal
 * digits. Undefined when it does not parse; a negative number parses (and is then no open fd).
 */
export function parseLibvirtFd(text: string): number | undefined {
  const m = /^[ \t\n\v\f\r]*([+-]?)(\d+)$/.exec(text);
  if (!m) return undefined;
  const n = Number(m[2]) * (m[1] === '-' ? -1 : 1);
  return n >= -(2 ** 31) && n < 2 ** 31 ? n + 0 : undefined; // + 0: -0 is fd 0
}

/** libvirt's form: exactly FILENAME FD. */
async function libvirtForm(argv0: string, fileName: string, fdText: string): Promise<number> {
  const fd = parseLibvirtFd(fdText);
  if (fd === undefined) {
    finalLine(`${argv0}: failure with ${fileName}: unable to parse FD number '${fdText}'`);
    return 1;
  }
  return runStreamCommand({ argv0, fileFd: fd, fileName, direct: 'as-is' });
}

const IMAGE_COMMANDS: Record<string, (args: string[]) => Promise<number> | number> = {
  save: (a) => import('./image-commands').then((m) => m.saveCommand(a)),
  restore: (a) => import('./image-commands').then((m) => m.restoreCommand(a)),
  inspect: (a) => import('./image-commands').then((m) => m.inspectCommand(a)),
  convert: (a) => import('./image-commands').then((m) => m.convertCommand(a)),
  vm: (a) => import('./vm-commands').then((m) => m.vmCommand(a)),
  'libvirt-install': (a) => import('./libvirt-install-command').then((m) => m.libvirtInstallCommand(a)),
};

export async function main(argv: string[] = process.argv): Promise<number> {
  const argv0 = commandName(argv);
  const args = argv.slice(2);
  try {
    const ownArgs = args.includes('--') ? args.slice(0, args.indexOf('--')) : args;
    if (ownArgs.includes('--help') || ownArgs.includes('-h')) {
      stdoutText(helpText(argv0));
      return 0;
    }
    const sub = IMAGE_COMMANDS[args[0]];
    if (sub) {
      endFinalLineWithNewline();
      // Their arguments name files: one Node could not decode would name another file.
      if (argv === process.argv) checkArgsAreUtf8(args);
      return await sub(args.slice(1));
    }
    if (args[0]?.startsWith('--')) return await fdForm(argv0, args);
    if (args.length === 2) return await libvirtForm(argv0, args[0], args[1]);
    finalLine(`${argv0}: try --help for more details`);
    return 1;
  } catch (e) {
    if (e instanceof UsageError) {
      finalLine(`${argv0}: ${e.message}; try --help for more details`);
      return 1;
    }
    finalLine(`${argv0}: ${describeFailure(e)}`);
    return 1;
  }
}

/** Used by bin/iohelper: runs main and exits with its code (worker threads must not keep us alive). */
export function run(): void {
  main().then(
    (code) => process.exit(code),
    (e) => {
      stderrLine(`iohelper: internal error: ${e instanceof Error ? e.stack : String(e)}`);
      process.exit(1);
    },
  );
}
