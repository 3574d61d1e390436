/**
 * Integration-test helpers around src/vm/qemu-launch and bench/lib/ram-file: a describe()
 * that skips without QEMU (or fails with REQUIRE_QEMU=1), and per-test RAM file paths.
 */
import * as path from 'node:path';
import { qemuAvailable } from '../../src/vm/qemu-launch';

export { accelArgs, machineArgs, qemuAvailable, startQemu } from '../../src/vm/qemu-launch';
export type { QemuInstance, QemuOptions, RamSpec } from '../../src/vm/qemu-launch';
export { createRamFile, filesEqual, fillPattern, sha256File } from '../../bench/lib/ram-file';

/** Set REQUIRE_QEMU=1 (e.g. in CI) to make a missing QEMU fail the tests instead of skipping them. */
export const requireQemu = process.env.REQUIRE_QEMU === '1';

/**
 * `describe` for tests that need QEMU: skipped with a console message when QEMU is missing,
 * or a failing test in its place when REQUIRE_QEMU=1.
 */
export function describeQemu(name: string, fn: () => void): void {
  const { ok, why } = qemuAvailable();
  if (ok) {
    describe(name, fn);
  } else if (requireQemu) {
    describe(name, () => {
      it('needs QEMU (REQUIRE_QEMU=1)', () => {
        throw new Error(`REQUIRE_QEMU=1 but ${why}`);
      });
    });
  } else {
    console.warn(`Skipping "${name}": ${why} (set REQUIRE_QEMU=1 to fail instead)`);
    describe.skip(name, fn);
  }
}

/** A per-process path on /dev/shm for a test RAM file; the caller removes it. */
export function shmPath(label: string): string {
  return path.join('/dev/shm', `iohelper-test-${process.pid}-${label}`);
}
