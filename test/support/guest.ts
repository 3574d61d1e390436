/**
 * The tiny Linux test guest (scripts/build-test-guest.sh: Debian's kernel + a busybox initramfs
 * whose init prints "tick N" on its serial port forever): its QEMU arguments, its ticks, and a
 * describe that needs it. TCG on purpose: in this sandbox a Linux kernel under nested KVM hangs
 * in early boot, while TCG boots it in seconds.
 */
import * as fs from 'fs';
import * as path from 'path';
import { describeQemu } from './qemu';
import { requireOrSkip } from './require-or-skip';

const GUEST = path.join(__dirname, '..', '..', '.cache', 'guest');
const haveGuest = fs.existsSync(path.join(GUEST, 'vmlinuz')) && fs.existsSync(path.join(GUEST, 'initrd.gz'));
const M = 1024 * 1024;

/** A 256 MiB guest with RAM in `ram` (shared file) and its serial output in the file `serial`. */
export function guestArgs(ram: string, serial: string): string[] {
  return [
    '-accel', 'tcg',
    '-nodefaults', '-display', 'none',
    '-machine', 'q35,memory-backend=ram0', '-m', '256M',
    '-object', `memory-backend-file,id=ram0,size=${256 * M},mem-path=${ram},share=on`,
    '-kernel', path.join(GUEST, 'vmlinuz'), '-initrd', path.join(GUEST, 'initrd.gz'),
    '-append', 'console=ttyS0 quiet panic=-1',
    '-serial', `file:${serial}`,
  ];
}

export function ticks(serial: string): number[] {
  if (!fs.existsSync(serial)) return [];
  return [...fs.readFileSync(serial, 'utf8').matchAll(/tick (\d+)/g)].map((m) => Number(m[1]));
}

export async function waitForTicks(serial: string, count: number, timeoutMs = 90000): Promise<number[]> {
  return waitForSerial(serial, `${count} ticks`, timeoutMs, () => {
    const t = ticks(serial);
    return t.length >= count ? t : undefined;
  });
}

/** Waits until `serial`, the guest's serial output, holds a match of `pattern` (throws after `timeoutMs`). */
export async function waitForOutput(serial: string, pattern: RegExp, timeoutMs = 90000): Promise<void> {
  await waitForSerial(serial, String(pattern), timeoutMs, () => (fs.existsSync(serial) && pattern.test(fs.readFileSync(serial, 'utf8')) ? true : undefined));
}

async function waitForSerial<T>(serial: string, what: string, timeoutMs: number, check: () => T | undefined): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const got = check();
    if (got !== undefined) return got;
    if (Date.now() > deadline) throw new Error(`the guest did not print ${what} in ${timeoutMs} ms: ${fs.existsSync(serial) ? fs.readFileSync(serial, 'utf8').slice(-300) : 'no serial output'}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** describeQemu that also needs the test guest: a failure under REQUIRE_QEMU=1, else skipped saying why. */
export const describeGuest = haveGuest ? describeQemu : requireOrSkip(`no test guest in ${GUEST}: run scripts/build-test-guest.sh (.ci/run does)`);
