/**
 * The npm package holds what a user runs: the command, the compiled library (dist/src), the
 * addon's sources and prebuilds, the docs. Not the bench, the demo or the tests (run from a
 * checkout: `npm run bench`, `npm run demo`).
 */
import { execFileSync } from 'child_process';
import * as path from 'path';

const ROOT = path.join(__dirname, '..');

test('npm pack lists bin/, dist/src/, native/, binding.gyp, prebuilds/, docs/, README.md and package.json only', () => {
  const [info] = JSON.parse(execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, encoding: 'utf8' }));
  const files: string[] = info.files.map((f: { path: string }) => f.path);
  const allowed = /^(bin\/|dist\/src\/|native\/|prebuilds\/|docs\/|binding\.gyp$|README\.md$|package\.json$)/;
  expect(files.filter((f) => !allowed.test(f))).toEqual([]);
  expect(files.filter((f) => /^dist\/src\/(demo|synthetic)\/|^dist\/src\/vm\/mapped-ram\./.test(f))).toEqual([]);
  expect(files).toEqual(expect.arrayContaining(['bin/iohelper', 'dist/src/cli/main.js', 'dist/src/index.js', 'dist/src/index.d.ts', 'dist/src/image/exec/range-worker.js', 'binding.gyp', 'README.md', 'package.json']));
});
