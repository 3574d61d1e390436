/**
 * The machine setup installs what the tests need: CI (.ci/run) and the README's test command
 * (`bash scripts/setup.sh && npm test`) both install, through scripts/install-qemu.sh, every
 * package a test runs — fio included, which the bench's smoke test measures its limits with.
 * install-qemu.sh is asked with --list, which installs nothing; the callers are read from the scripts.
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

const ROOT = path.join(__dirname, '..');
const read = (f: string) => fs.readFileSync(path.join(ROOT, f), 'utf8');

/** The options each (uncommented) call of scripts/install-qemu.sh in `script` passes. */
function installQemuCalls(script: string): string[][] {
  return script
    .split('\n')
    .filter((l) => !l.trimStart().startsWith('#'))
    .flatMap((l) => [...l.matchAll(/scripts\/install-qemu\.sh((?:\s+--[a-z-]+)*)/g)].map((m) => m[1].trim().split(/\s+/).filter(Boolean)));
}

/** The packages install-qemu.sh installs with `options` (its --list prints them and installs nothing). */
const packages = (...options: string[]) => execFileSync('bash', [path.join(ROOT, 'scripts/install-qemu.sh'), ...options, '--list'], { encoding: 'utf8' }).trim().split(/\s+/);

test('install-qemu.sh --bench is what installs fio (and implies --libvirt)', () => {
  expect(packages('--bench')).toEqual(expect.arrayContaining(['fio', 'qemu-system-x86', 'libvirt-daemon-driver-qemu', 'libvirt-clients', 'zstd']));
  expect(packages('--libvirt')).not.toContain('fio');
  expect(packages()).toEqual(['qemu-system-x86', 'qemu-utils']);
});

test.each(['.ci/run', 'scripts/setup.sh'])('%s installs QEMU, libvirt and fio (install-qemu.sh --bench)', (file) => {
  const calls = installQemuCalls(read(file));
  expect(calls.length).toBeGreaterThan(0);
  expect(calls.some((options) => options.includes('--bench'))).toBe(true);
});

test("the README's test command is setup.sh, then npm test", () => {
  expect(read('README.md')).toMatch(/^bash scripts\/setup\.sh && npm test\b/m);
});
