/**
 * SIGINT/SIGTERM for every command: the first one aborts the work in progress (it ends with one
 * "interrupted" line and exit 1, after the native threads stopped and nothing is half-committed);
 * a second one exits at once, for a user or manager who will not wait.
 */
import { finalLine } from './report';

export async function withInterrupts<T>(argv0: string, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const abort = new AbortController();
  const on = (sig: NodeJS.Signals) => {
    if (!abort.signal.aborted) {
      abort.abort();
      return;
    }
    finalLine(`${argv0}: ${sig} again: exiting at once`);
    process.exit(1);
  };
  process.on('SIGINT', on);
  process.on('SIGTERM', on);
  try {
    return await fn(abort.signal);
  } finally {
    process.off('SIGINT', on);
    process.off('SIGTERM', on);
  }
}
