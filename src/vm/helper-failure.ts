/**
 * A helper process's failure as an Error of ours. The helper starts each stderr line with its
 * own name (`/…/bin/iohelper: …`, as libvirt expects of it); the command that ran it adds its
 * own when it reports the error, so the helper's is taken off here ("iohelper: iohelper: …"
 * otherwise).
 */
import * as path from 'node:path';

export function helperFailure(stderr: string, h: { cmd: string; args: string[] }, status: number | string | null): Error {
  // The helper's name: what bin/iohelper prints (IOHELPER_ARGV0, inherited, or its script path), or the program's own.
  const names = [process.env.IOHELPER_ARGV0, h.args[0], h.cmd].filter((n): n is string => !!n);
  const lines = stderr.trim().split('\n').map((line) => {
    const name = names.find((n) => line.startsWith(`${n}: `));
    return name ? line.slice(name.length + 2) : line;
  });
  return new Error(lines.join('\n') || `${path.basename(h.args[0] ?? h.cmd)} ended with ${status}`);
}
