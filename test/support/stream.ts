/** Stream-helper test helpers shared by stream-cli.test.ts and libvirt-contract.test.ts. */
import { spawn } from 'child_process';
import * as fs from 'fs';
import { native } from '../../src/native';
import { runHelper } from './cli';

const { O_DIRECT } = fs.constants;

/** `n` pseudo-random bytes (xorshift from `seed`): the same for the same seed. */
export function randomBytes(n: number, seed: number): Buffer {
  const out = Buffer.alloc(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** Restores the file's bytes from `start` through the helper; returns what came out of the pipe. */
export async function restore(file: string, opts: { direct: boolean; form: 'libvirt' | 'fd'; start?: number }): Promise<Buffer> {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | (opts.direct && opts.form === 'libvirt' ? O_DIRECT : 0));
  try {
    if (opts.start) native.lseek(fd, opts.start, native.constants.SEEK_SET);
    const r =
      opts.form === 'libvirt'
        ? await runHelper([file, '0'], [fd, 'pipe'])
        : await runHelper(['--fd', '3', ...(opts.direct ? ['--direct'] : [])], ['ignore', 'pipe', 'pipe', fd] as never);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
    return r.stdout;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Runs `bin` as a command (so bin/iohelper's sh part runs) through sh, with `redirects` (e.g.
 * '<&-') applied to it: Node's spawn cannot hand a child a closed fd 0 or 1, a shell can.
 */
export function runClosed(bin: string, file: string, fileRedirect: string, redirects: string, input?: Buffer): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', `exec "$0" "$1" 3 3${fileRedirect}"$1" ${redirects}`, bin, file], { stdio: 'pipe' });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout: Buffer.concat(out), stderr: err }));
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
  });
}
