/**
 * Errors shaped like Node's fs errors: `code`, `errno`, `syscall`, `path`. The native addon
 * throws them for failed system calls; this module makes the same shape for checks done in
 * TypeScript and attaches the path a native error could not know.
 */
import * as os from 'os';

export interface SystemError extends Error {
  code: string;
  errno?: number;
  syscall?: string;
  path?: string;
}

/** A Node-style error for a condition detected in TypeScript (no failed system call). */
export function systemError(code: string, message: string, fields: { syscall?: string; path?: string } = {}): SystemError {
  const err = new Error(message) as SystemError;
  err.code = code;
  const errno = (os.constants.errno as Record<string, number>)[code];
  if (errno !== undefined) err.errno = -errno;
  if (fields.syscall) err.syscall = fields.syscall;
  if (fields.path) err.path = fields.path;
  return err;
}

/** Bad command-line or API usage. */
export class UsageError extends Error {
  readonly code = 'EUSAGE';
}

/** Duck-typed: errors made by Node's own modules come from another realm under test runners (jest's vm contexts), where instanceof Error fails. */
export function isSystemError(e: unknown): e is SystemError {
  return typeof e === 'object' && e !== null && typeof (e as SystemError).code === 'string' && typeof (e as SystemError).message === 'string';
}

/**
 * Names the file an error is about, once: a system error gets `path` as fs's errors have it
 * (property, and quoted at the end of the message); an image format error (code EIMG_*, whose
 * message says what is wrong with the file) gets it at the start of its message.
 */
export function withPath<E>(e: E, path: string): E {
  if (isSystemError(e) && !e.path && path) {
    e.path = path;
    if (e.code.startsWith('EIMG_')) {
      if (!e.message.startsWith(`${path}: `)) e.message = `${path}: ${e.message}`;
    } else e.message += ` '${path}'`;
  }
  return e;
}

/** Runs fn, naming `path` in any error it throws (withPath). */
export function onPath<T>(path: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw withPath(e, path);
  }
}

/** The strerror-like part of a Node-style message: "ENOSPC: no space left on device, write" -> "no space left on device". */
export function errorText(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  const m = /^[A-Z0-9_]+: (.*?), [a-z_0-9]+(?: '.*')?$/.exec(e.message);
  return m ? m[1] : e.message;
}
