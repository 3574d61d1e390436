/**
 * Node decodes the command line as UTF-8, replacing bytes that are not UTF-8 with U+FFFD: a
 * file name `x\xfe.img` reaches us as `x\uFFFD.img`, which is another name (its UTF-8 bytes are
 * `x\xef\xbf\xbd.img`). A save would write to that other name, a restore read from it. The
 * arguments as the kernel passed them (/proc/self/cmdline) tell; such an argument is refused.
 */
import * as fs from 'fs';
import { systemError } from '../errors';
import { printableBytes } from '../util/printable';

/** Throws EINVAL for the first of `args` (process.argv's tail) that Node decoded with a loss. */
export function checkArgsAreUtf8(args: string[]): void {
  let raw: Buffer[];
  try {
    raw = fs.readFileSync('/proc/self/cmdline').toString('latin1').split('\0').slice(0, -1).map((a) => Buffer.from(a, 'latin1'));
  } catch {
    return; // no /proc: nothing to compare with
  }
  if (raw.length < args.length) return;
  const tail = raw.slice(raw.length - args.length);
  args.forEach((arg, i) => {
    if (!Buffer.from(arg).equals(tail[i])) {
      // The bytes as given, not `arg`: its U+FFFD would show a name that does not exist.
      throw systemError('EINVAL', `argument '${printableBytes(tail[i])}' is not valid UTF-8, and iohelper would read it as another name; rename the file, or pass it another way (a symbolic link with a UTF-8 name, an fd)`);
    }
  });
}
