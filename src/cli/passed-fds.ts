/**
 * Fd numbers on the command line must name fds the caller passed to us. Node opens fds of its
 * own at start (epoll and eventfd instances, and libuv's wakeup and signal pipes: 3..~18), so a
 * number the caller never passed can name one of those, and writing a VM's state there would
 * corrupt Node while "succeeding". Node's own fds are recognisable: anonymous inodes, and pipes
 * whose two ends this process both holds (a pipe passed by a caller arrives with one end).
 * (Node marks every fd close-on-exec, inherited ones too, so that flag tells nothing.)
 * A closed fd 0 or 1 cannot be told apart here: Node reopens it as /dev/null read-write before
 * our code runs, exactly as a parent's stdio 'ignore' passes it. bin/iohelper's sh part sees
 * them before Node starts and names them in IOHELPER_CLOSED_STDIO.
 */
import * as fs from 'fs';
import { systemError } from '../errors';

function target(fd: number): string | undefined {
  try {
    return fs.readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return undefined;
  }
}

/** The std fds closed when bin/iohelper started. Read once and removed: no child we start inherits it. */
const closedAtStart = new Set((process.env.IOHELPER_CLOSED_STDIO ?? '').split(' ').filter((s) => s !== '').map(Number));
delete process.env.IOHELPER_CLOSED_STDIO;

/** Throws EBADF unless `fd` is one our caller passed. `what` names it in the message. */
export function checkPassedFd(fd: number, what: string): void {
  if (closedAtStart.has(fd)) throw systemError('EBADF', `${what}: fd ${fd} was closed when iohelper started`);
  try {
    fs.accessSync(`/proc/self/fdinfo/${fd}`);
  } catch {
    throw systemError('EBADF', `${what}: fd ${fd} is not open`);
  }
  if (fd <= 2) return;
  const link = target(fd) ?? '';
  const own = () => systemError('EBADF', `${what}: fd ${fd} was not passed to iohelper (it is one of Node's own)`);
  if (link.startsWith('anon_inode:')) throw own();
  if (link.startsWith('pipe:')) {
    const ends = fs.readdirSync('/proc/self/fd').filter((f) => Number(f) !== fd && target(Number(f)) === link);
    if (ends.length) throw own();
  }
}
