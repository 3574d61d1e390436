/**
 * The two stream forms of the CLI:
 *   iohelper FILENAME FD                      libvirt_iohelper's contract
 *   iohelper --fd N [--direct] [--name L] …   the design card's form
 * Both copy between fd N (the file) and the other std stream: stdin when N is write-only
 * (save), stdout when N is read-only (restore).
 */
import { errorText, UsageError } from '../errors';
import { describeFd } from '../fs/fd-info';
import { checkPassedFd } from './passed-fds';
import { withInterrupts } from './signals';
import { DirectMode, streamCopy } from '../stream/copy';
import { jsonLinesProgress, ProgressListener, ttyBarProgress } from '../progress';
import { finalLine, stderrLine } from './report';
import * as tty from 'tty';

export interface StreamCommand {
  fileFd: number;
  fileName: string;
  direct: DirectMode;
  bufferSize?: number;
  inflight?: number;
  /** JSON progress to this fd; 'tty' draws a bar on stderr. */
  progress?: number | 'tty';
  argv0: string;
}

function progressListener(cmd: StreamCommand): ProgressListener | undefined {
  if (cmd.progress === undefined) return undefined;
  const off = (e: unknown) => stderrLine(`${cmd.argv0}: warning: progress output stopped: ${errorText(e)}`);
  if (cmd.progress === 'tty') return ttyBarProgress(2, cmd.fileName, off);
  checkPassedFd(cmd.progress, '--progress');
  return jsonLinesProgress(cmd.progress, off);
}

/** Runs the copy; returns the exit code after printing libvirt's one-line failure message. */
export async function runStreamCommand(cmd: StreamCommand): Promise<number> {
  try {
    // Only fds our caller passed: a number it did not pass may be one of Node's own.
    checkPassedFd(cmd.fileFd, cmd.fileName);
    const access = describeFd(cmd.fileFd).access;
    if (access !== 'readwrite') checkPassedFd(access === 'write' ? 0 : 1, 'the stream');
    await withInterrupts(cmd.argv0, (signal) =>
      streamCopy({
        fileFd: cmd.fileFd,
        fileName: cmd.fileName,
        direct: cmd.direct,
        bufferSize: cmd.bufferSize,
        inflight: cmd.inflight,
        onProgress: progressListener(cmd),
        warn: (m) => stderrLine(`${cmd.argv0}: warning: ${m}`),
        signal,
      }),
    );
    return 0;
  } catch (e) {
    finalLine(`${cmd.argv0}: failure with ${cmd.fileName}: ${describeFailure(e)}`);
    return 1;
  }
}

const VERBS: Record<string, string> = {
  pwrite: 'write',
  write: 'write',
  pread: 'read',
  read: 'read',
  fdatasync: 'sync',
  ftruncate: 'truncate',
  fcntl: 'change flags of',
  fstat: 'stat',
  lseek: 'seek in',
  pthread_create: 'start a thread for',
};

/** One stderr line: "Unable to write /x: no space left on device (ENOSPC)". */
export function describeFailure(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  const err = e as Error & { code?: string; syscall?: string; path?: string; side?: string };
  const code = err.code && /^E[A-Z0-9_]+$/.test(err.code) ? ` (${err.code})` : '';
  if (!err.syscall) return err.message.replace(/\s*\n\s*/g, ' ') + code;
  const target = err.side === 'pipe' || !err.path ? 'the stream' : err.path;
  const verb = VERBS[err.syscall] ?? `${err.syscall}`;
  return `Unable to ${verb} ${target}: ${capitalized(errorText(err))}${code}`;
}

function capitalized(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

export function progressTarget(value: string | true | undefined): number | 'tty' | undefined {
  if (value === undefined) return undefined;
  if (value === true) return tty.isatty(2) ? 'tty' : 2;
  if (!/^\d+$/.test(value)) throw new UsageError(`--progress: '${value}' is not an fd number`);
  return Number(value);
}
