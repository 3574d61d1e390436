/**
 * The machine setup installs what the tests need: CI (.ci/run) and the README's test command
 * (`bash scripts/setup.sh && npm test`) both install, through scripts/install-qemu.sh, every
 * package a test runs — fio included, which the bench's smoke test measures its limits with.
 * Read from the scripts, not run: they install system packages.
 */
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

test('install-qemu.sh --bench is what installs fio (and implies --libvirt)', () => {
  const s = read('scripts/install-qemu.sh');
  expect(s).toMatch(/--bench\) want_bench=1; want_libvirt=1 ;;/);
  expect(s).toMatch(/\[ \$want_bench = 1 \] && pkgs\+=\(fio\)/);
  // The bench's fio rows, which test/bench-smoke.test.ts runs, look for it there.
  expect(read('bench/parallel.ts')).toContain("commandExists('/usr/bin/fio')");
});

test.each(['.ci/run', 'scripts/setup.sh'])('%s installs QEMU, libvirt and fio (install-qemu.sh --bench)', (file) => {
  const calls = installQemuCalls(read(file));
  expect(calls.length).toBeGreaterThan(0);
  expect(calls.some((options) => options.includes('--bench'))).toBe(true);
});

test("the README's test command is setup.sh, then npm test", () => {
  expect(read('README.md')).toMatch(/^bash scripts\/setup\.sh && npm test\b/m);
});
