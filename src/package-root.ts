import * as fs from 'fs';
import * as path from 'path';

/** The folder holding this package's package.json, whether running from src/ (tests) or dist/. */
export function packageRoot(): string {
  let dir = __dirname;
  for (;;) {
    if (fs.existsSync(path.join(dir, 'binding.gyp'))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`iohelper: cannot find the package root above ${__dirname}`);
    dir = parent;
  }
}

/** The package version from package.json. */
export function packageVersion(): string {
  return JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')).version;
}
