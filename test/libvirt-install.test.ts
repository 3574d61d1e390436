/**
 * `iohelper libvirt-install` on a stand-in helper path (--target in a temp dir): what it puts
 * there runs iohelper with libvirt's argv contract, --status tells the truth, refusals change
 * nothing, and --uninstall puts the original back byte for byte. A copy of bin/iohelper that
 * cannot find its package says so in one line.
 */
import { execFileSync, spawnSync } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { describeAsRoot } from './support/mounts';
import { IOHELPER } from './support/cli';

const sha = (f: string) => crypto.createHash('sha256').update(fs.readFileSync(f)).digest('hex');

function cli(args: string[], opts: { input?: Buffer; uid?: number; env?: NodeJS.ProcessEnv } = {}) {
  const cmd = opts.uid === undefined ? process.execPath : 'setpriv';
  const argv = opts.uid === undefined ? [IOHELPER, ...args] : ['--reuid', String(opts.uid), '--regid', String(opts.uid), '--clear-groups', process.execPath, IOHELPER, ...args];
  const r = spawnSync(cmd, argv, { input: opts.input, encoding: 'utf8', env: opts.env });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describeAsRoot('iohelper libvirt-install', () => {
  let dir: string;
  let target: string;
  let originalHash: string;

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-install-'));
    fs.chmodSync(dir, 0o755);
    target = path.join(dir, 'libvirt_iohelper');
    fs.writeFileSync(target, '#!/bin/sh\necho "libvirt own helper $*"\n', { mode: 0o755 });
    originalHash = sha(target);
  });
  afterEach(() => {
    // A failed test must not leave a diversion behind.
    spawnSync('dpkg-divert', ['--local', '--rename', '--remove', target], { stdio: 'ignore' });
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('install, run as libvirt would, status, uninstall restores the original byte for byte', () => {
    const inst = cli(['libvirt-install', '--target', target]);
    expect(inst.stderr).toBe('');
    expect(inst.status).toBe(0);
    expect(fs.readFileSync(target, 'utf8')).toContain('iohelper libvirt-install wrapper');
    expect(fs.statSync(target).mode & 0o777).toBe(0o755);
    const kept = [`${target}.distrib`, `${target}.iohelper-orig`].find((p) => fs.existsSync(p))!;
    expect(sha(kept)).toBe(originalHash);

    const status = cli(['libvirt-install', '--status', '--target', target]);
    expect(status.status).toBe(0);
    expect(status.stdout).toContain(`running ${path.dirname(path.dirname(IOHELPER))}/bin/iohelper`);
    expect(status.stdout).toContain(`libvirt's helper kept at ${kept}`);

    // libvirt's contract through the wrapper: FILENAME FD, stream on stdin, file on FD.
    const out = path.join(dir, 'saved');
    const data = crypto.randomBytes(3 * 1024 * 1024 + 123);
    const fd = fs.openSync(out, 'w');
    const r = spawnSync(target, [out, '3'], { input: data, stdio: ['pipe', 'pipe', 'pipe', fd] });
    fs.closeSync(fd);
    expect(r.stderr.toString()).toBe('');
    expect(r.status).toBe(0);
    expect(fs.readFileSync(out).equals(data)).toBe(true);
    // Failure lines carry the path libvirt ran, like libvirt_iohelper's own.
    const bad = spawnSync(target, [out, 'x'], { encoding: 'utf8' });
    expect(bad.status).toBe(1);
    expect(bad.stderr).toBe(`${target}: failure with ${out}: unable to parse FD number 'x'`);

    const again = cli(['libvirt-install', '--target', target]);
    expect(again.status).toBe(1);
    expect(again.stderr).toMatch(/already installed .*\(EEXIST\)\n$/);

    const un = cli(['libvirt-install', '--uninstall', '--target', target]);
    expect(un.stderr).toBe('');
    expect(un.status).toBe(0);
    expect(sha(target)).toBe(originalHash);
    expect(fs.existsSync(`${target}.distrib`) || fs.existsSync(`${target}.iohelper-orig`)).toBe(false);
    expect(execFileSync('dpkg-divert', ['--truename', target], { encoding: 'utf8' }).trim()).toBe(target);
    const unAgain = cli(['libvirt-install', '--uninstall', '--target', target]);
    expect(unAgain.status).toBe(1);
    expect(unAgain.stderr).toMatch(/not installed at .*\(ENOENT\)\n$/);
    expect(sha(target)).toBe(originalHash);
  });

  test('refused without root, or without libvirt; nothing changes', () => {
    const asNobody = cli(['libvirt-install', '--target', target], { uid: 65534 });
    expect(asNobody.status).toBe(1);
    expect(asNobody.stderr).toMatch(/needs root .*\(EPERM\)\n$/);
    expect(asNobody.stderr.trimEnd().split('\n')).toHaveLength(1);
    const missing = cli(['libvirt-install', '--target', path.join(dir, 'absent')]);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/does not exist: is libvirt installed\?.*\(ENOENT\)\n$/);
    expect(fs.readdirSync(dir)).toEqual(['libvirt_iohelper']);
    expect(sha(target)).toBe(originalHash);
  });

  test.each([
    // Without dpkg-divert on PATH the original is kept as a side copy (dpkg-divert itself refuses newlines).
    ['side-copy', { ...process.env, PATH: '/nonexistent' }],
    ['dpkg-divert', process.env],
  ])('%s: a target path with a newline is refused before anything changes: it never reaches the script', (_n, env) => {
    const evil = path.join(dir, 'x\necho INJECTED\n#');
    fs.copyFileSync(target, evil);
    fs.chmodSync(evil, 0o755);
    const r = cli(['libvirt-install', '--target', evil], { env });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^\S+: target ".*x\\necho INJECTED\\n#" contains a control character \(EINVAL\)\n$/);
    expect(fs.readdirSync(dir).sort()).toEqual(['libvirt_iohelper', 'x\necho INJECTED\n#']);
    expect(sha(evil)).toBe(originalHash);
    const run = spawnSync(evil, [path.join(dir, 'f'), '1'], { encoding: 'utf8' });
    expect(run.stdout).not.toContain('INJECTED');
  });

  test("every path in the wrapper is single-quoted: quotes, spaces and $ in them stay text", () => {
    const odd = path.join(dir, "it's $HOME `id` pkg");
    fs.mkdirSync(path.join(odd, 'bin'), { recursive: true });
    const script: string = require('../src/install/libvirt-helper').wrapperScript(odd, process.execPath, `${odd}/kept'; echo INJECTED; '`);
    expect(script).toContain(`# Runs iohelper ('${dir}/it'\\''s $HOME \`id\` pkg') in place of libvirt's helper, kept at '${dir}/it'\\''s $HOME \`id\` pkg/kept'\\''; echo INJECTED; '\\'''.`);
    const w = path.join(dir, 'wrapper');
    fs.writeFileSync(w, script, { mode: 0o755 });
    const r = spawnSync(w, ['f', '1'], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`${w}: failure: iohelper is gone from ${odd} (or node from ${process.execPath}); run iohelper libvirt-install again, or --uninstall`);
    expect(() => require('../src/install/libvirt-helper').wrapperScript(odd, process.execPath, `${odd}\rx`)).toThrow(/kept path .* contains a control character/);
  });

  test('--status says only what it can tell: a file that is not our wrapper, a directory, nothing', () => {
    const st = (t: string) => cli(['libvirt-install', '--status', '--target', t]);
    expect(st(target)).toEqual({ status: 0, stdout: `${target}: a file that is not an iohelper wrapper (iohelper is not installed there)\n`, stderr: '' });
    expect(st(dir)).toEqual({ status: 0, stdout: `${dir}: a directory, not a helper program (iohelper is not installed there)\n`, stderr: '' });
    expect(st(path.join(dir, 'absent'))).toEqual({ status: 0, stdout: `${path.join(dir, 'absent')}: absent (is libvirt installed?)\n`, stderr: '' });
  });

  test('a wrapper whose package is gone fails in one line, exit 1', () => {
    const fakePkg = path.join(dir, 'pkg');
    fs.mkdirSync(path.join(fakePkg, 'bin'), { recursive: true });
    const script = require('../src/install/libvirt-helper').wrapperScript(fakePkg, process.execPath, `${target}.distrib`);
    const w = path.join(dir, 'wrapper');
    fs.writeFileSync(w, script, { mode: 0o755 });
    const r = spawnSync(w, ['f', '1'], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toBe(`${w}: failure: iohelper is gone from ${fakePkg} (or node from ${process.execPath}); run iohelper libvirt-install again, or --uninstall`);
  });

  test('a copy of bin/iohelper away from its package says so in one line (no stack trace)', () => {
    const copy = path.join(dir, 'iohelper-copy');
    fs.copyFileSync(IOHELPER, copy);
    const r = spawnSync(process.execPath, [copy, 'f', '1'], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^\S+: failure: the iohelper package is not at .*libvirt-install'$/);
    expect(r.stderr).not.toMatch(/\n|at Object|MODULE_NOT_FOUND/);
  });
});
