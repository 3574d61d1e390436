/**
 * Integration-test helpers around src/vm/qemu-launch and bench/lib/ram-file: a describe()
 * that skips without QEMU (or fails with REQUIRE_QEMU=1: support/require-or-skip), and per-test
 * RAM file paths.
 */
import * as path from 'node:path';
import { qemuAvailable } from '../../src/vm/qemu-launch';
import { requireOrSkip } from './require-or-skip';

export { machineArgs, startQemu } from '../../src/vm/qemu-launch';
export type { QemuInstance, RamSpec } from '../../src/vm/qemu-launch';
export { createRamFile, filesEqual, fillPattern, sha256File } from '../../bench/lib/ram-file';

/** `describe` for tests that need QEMU (skipped saying why, or failing under REQUIRE_QEMU=1). */
export function describeQemu(name: string, fn: () => void): void {
  const { ok, why } = qemuAvailable();
  requireOrSkip(ok ? undefined : why)(name, fn);
}

/** A per-process path on /dev/shm for a test RAM file; the caller removes it. */
export function shmPath(label: string): string {
  return path.join('/dev/shm', `iohelper-test-${process.pid}-${label}`);
}
