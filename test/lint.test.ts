/**
 * knip finds no unused file, export, type or dependency: an export nobody imports, or one used
 * only in its own file, is API nobody promised (package.json `lint` runs the same, with tsc).
 */
import { spawnSync } from 'child_process';
import * as path from 'path';

const ROOT = path.join(__dirname, '..');

test('knip: no unused files, exports, types or dependencies', () => {
  const r = spawnSync(path.join(ROOT, 'node_modules', '.bin', 'knip'), ['--no-progress', '--no-config-hints'], { cwd: ROOT, encoding: 'utf8', timeout: 300_000 });
  expect({ status: r.status, out: (r.stdout + r.stderr).trim() }).toEqual({ status: 0, out: '' });
}, 300_000);
