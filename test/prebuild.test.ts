/**
 * The shipped prebuild: `npm pack` carries prebuilds/linux-x64 (built in a Debian 11 root by
 * scripts/prebuild-old-glibc.sh, which .ci/run runs), it needs no glibc symbol newer than 2.31,
 * and the tarball installs and runs on a machine with no C++ compiler and no Node headers.
 */
import { execFileSync, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { requireOrSkip } from './support/require-or-skip';

const ROOT = path.join(__dirname, '..');
const PREBUILD_DIR = path.join(ROOT, 'prebuilds', 'linux-x64');
const prebuild = fs.existsSync(PREBUILD_DIR) ? fs.readdirSync(PREBUILD_DIR).find((f) => f.endsWith('.node')) : undefined;

/** Highest GLIBC_x.y version an ELF file asks for, and whether it imports `symbol`. */
function glibcNeeds(file: string): { max: string; versions: string[]; text: string } {
  const text = execFileSync('objdump', ['-T', file], { encoding: 'utf8' });
  const versions = [...new Set([...text.matchAll(/GLIBC_(\d+\.\d+(?:\.\d+)?)/g)].map((m) => m[1]))];
  const num = (v: string) => v.split('.').reduce((a, x, i) => a + Number(x) / 1000 ** i, 0);
  versions.sort((a, b) => num(a) - num(b));
  return { max: versions[versions.length - 1], versions, text };
}

const maybe = requireOrSkip(prebuild ? undefined : 'prebuilds/linux-x64 is missing: run scripts/prebuild-old-glibc.sh as root (.ci/run does)');

maybe('the N-API prebuild in the npm tarball', () => {
  test('needs glibc <= 2.31 and no strerrorname_np', () => {
    const { max, text } = glibcNeeds(path.join(PREBUILD_DIR, prebuild!));
    expect(text).not.toContain('strerrorname_np');
    const [maj, min] = max.split('.').map(Number);
    expect(maj * 1000 + min).toBeLessThanOrEqual(2031);
  });

  test('npm pack, then install with no compiler on PATH: iohelper runs and copies through the prebuild', () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-pack-'));
    try {
      const packed = execFileSync('npm', ['pack', '--pack-destination', tmp, '--json', '--ignore-scripts'], { cwd: ROOT, encoding: 'utf8' });
      const info = JSON.parse(packed)[0];
      const files: string[] = info.files.map((f: { path: string }) => f.path);
      expect(files).toContain(`prebuilds/linux-x64/${prebuild}`);
      expect(files).toContain('dist/src/cli/main.js');
      expect(files.some((f) => f.startsWith('build/'))).toBe(false);

      // A PATH with node and sh alone (npm runs scripts with sh): no cc, c++, g++, make or
      // python, and no Node headers to build with.
      const bin = path.join(tmp, 'bin');
      fs.mkdirSync(bin);
      fs.symlinkSync(process.execPath, path.join(bin, 'node'));
      fs.symlinkSync('/bin/sh', path.join(bin, 'sh'));
      const npmCli = path.join(path.dirname(fs.realpathSync(execFileSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).trim())), 'npm-cli.js');
      const app = path.join(tmp, 'app');
      fs.mkdirSync(app);
      fs.writeFileSync(path.join(app, 'package.json'), '{"name":"app","version":"1.0.0","private":true}');
      const env = { PATH: bin, HOME: tmp, npm_config_nodedir: path.join(tmp, 'no-headers'), npm_config_cache: path.join(os.homedir(), '.npm'), npm_config_prefer_offline: 'true', npm_config_audit: 'false', npm_config_fund: 'false' };
      for (const tool of ['cc', 'c++', 'g++', 'make', 'python3']) expect(spawnSync('/bin/sh', ['-c', `command -v ${tool}`], { env }).status).not.toBe(0);
      const inst = spawnSync(process.execPath, [npmCli, 'install', '--no-package-lock', path.join(tmp, info.filename)], { cwd: app, env, encoding: 'utf8' });
      expect(inst.stderr).not.toMatch(/gyp ERR/);
      expect(inst.status).toBe(0);
      const pkg = path.join(app, 'node_modules', 'iohelper');
      expect(fs.existsSync(path.join(pkg, 'build'))).toBe(false); // nothing was compiled

      const iohelper = path.join(app, 'node_modules', '.bin', 'iohelper');
      const help = spawnSync(iohelper, ['--help'], { env, encoding: 'utf8' });
      expect(help.status).toBe(0);
      expect(help.stdout).toMatch(/^Usage: /);
      // A real copy loads the addon: libvirt's form, stream on stdin, file on fd 3.
      const out = path.join(tmp, 'copy');
      const fd = fs.openSync(out, 'w');
      const data = Buffer.alloc(1 << 20, 7);
      const copy = spawnSync(iohelper, [out, '3'], { env, input: data, stdio: ['pipe', 'pipe', 'pipe', fd] });
      fs.closeSync(fd);
      expect(copy.stderr.toString()).toBe('');
      expect(copy.status).toBe(0);
      expect(fs.readFileSync(out).equals(data)).toBe(true);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }, 180000);
});
