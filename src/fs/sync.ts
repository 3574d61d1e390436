/**
 * fdatasync off the JS thread: flushing a large image can take seconds, during which a
 * synchronous call would hold up signal handlers, progress and QMP. Node's own fdatasync runs
 * on the libuv pool and fails like every fs call (code, errno, syscall: 'fdatasync').
 */
import * as fs from 'fs';
import { promisify } from 'util';

export const syncData: (fd: number) => Promise<void> = promisify(fs.fdatasync);
