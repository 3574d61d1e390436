/** --progress[=FD] of every copying command: JSON lines on FD (default stderr), a bar when stderr is a terminal. */
import * as tty from 'tty';
import { errorText } from '../errors';
import { FD } from '../util/limits';
import { parseBounded } from '../util/flags';
import { jsonLinesProgress, ProgressListener, ttyBarProgress } from '../progress';
import { commandName, stderrLine } from './report';
import { checkPassedFd } from './passed-fds';

export function progressOf(value: string | true | undefined, label: string): ProgressListener | undefined {
  if (value === undefined) return undefined;
  const off = (e: unknown) => stderrLine(`${commandName()}: warning: progress output stopped: ${errorText(e)}`);
  if (value === true) return tty.isatty(2) ? ttyBarProgress(2, label, off) : jsonLinesProgress(2, off);
  const fd = parseBounded(value, '--progress', FD);
  checkPassedFd(fd, '--progress');
  return jsonLinesProgress(fd, off);
}
