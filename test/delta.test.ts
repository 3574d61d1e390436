/**
 * Delta images (docs/FORMAT.md, version 3): a chain round-trips byte for byte, stores only the
 * units that changed, and every refusal (missing, replaced, changed, incomplete, cyclic or too
 * deep base; saving onto a base) happens before any RAM target is touched. Hostile headers and
 * chain references, fuzzed, are refused with an image error, never a crash or a write. A new
 * delta's base is checked with restore's rules before a byte is written and again before the
 * commit; a recorded base path is data (absolute refused, no links, nothing of the file quoted),
 * and --base reads a moved chain.
 */
import { spawn, spawnSync } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import fc from 'fast-check';
import { HASH_BYTES, HEADER_SIZE, INDEX_ENTRY, MAX_DEPTH } from '../src/image/format';
import { readHashTables, readImageMetadata } from '../src/image/io/read-image';
import { native } from '../src/native';
import { save as librarySave } from '../src/image/save';
import { cloneVm, restoreVm } from '../src/vm/manager';
import { IOHELPER } from './support/cli';

const M = 1024 * 1024;
const UNIT = 64 * 1024;
const RAM_SIZE = 16 * M;
let dir: string;
const deviceState = crypto.randomBytes(10000);

function iohelper(args: string[], input?: Buffer) {
  const r = spawnSync(process.execPath, [IOHELPER, ...args], { input, cwd: dir, maxBuffer: 64 * M });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr.toString() };
}

function save(image: string, ram: string, extra: string[] = []): void {
  const r = iohelper(['save', '--no-stream-check', '--image', image, '--ram', `pc.ram=${ram}`, ...extra], deviceState);
  expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
}

/** Restores `image` into a fresh file; returns the file's bytes and the device state. */
function restoreBytes(image: string, extra: string[] = []): { ram: Buffer; state: Buffer } {
  const out = path.join(dir, `restored-${crypto.randomBytes(4).toString('hex')}`);
  const r = iohelper(['restore', '--image', image, '--ram', `pc.ram=${out}`, ...extra]);
  expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
  const ram = fs.readFileSync(out);
  fs.rmSync(out);
  return { ram, state: r.stdout };
}

/** Overwrites `count` runs of `len` (a page multiple) random bytes at random page-aligned places of the RAM file: a page never straddles two units. */
function scribble(ram: string, count: number, len: number): void {
  const fd = fs.openSync(ram, 'r+');
  for (let i = 0; i < count; i++) fs.writeSync(fd, crypto.randomBytes(len), 0, len, crypto.randomInt(0, (RAM_SIZE - len) / 4096) * 4096);
  fs.closeSync(fd);
}

/** A RAM file: half random data, the rest zeros and holes. */
function makeRam(file: string): void {
  const fd = fs.openSync(file, 'w');
  fs.ftruncateSync(fd, RAM_SIZE);
  for (let at = 0; at < RAM_SIZE / 2; at += M) fs.writeSync(fd, crypto.randomBytes(M), 0, M, at * 2 % RAM_SIZE);
  fs.closeSync(fd);
}

/** Rewrites header bytes [at, at + bytes.length) and the header CRC, as a hostile writer would. */
function patchHeader(image: string, at: number, bytes: Buffer): void {
  const fd = fs.openSync(image, 'r+');
  const h = Buffer.alloc(HEADER_SIZE);
  fs.readSync(fd, h, 0, HEADER_SIZE, 0);
  bytes.copy(h, at);
  h.writeUInt32LE(native.crc32c(h.subarray(0, HEADER_SIZE - 4)), HEADER_SIZE - 4);
  fs.writeSync(fd, h, 0, HEADER_SIZE, 0);
  fs.closeSync(fd);
}

/** Rewrites the base path a delta records (header rule H25's field), as a hostile writer would. */
function patchBasePath(image: string, basePath: string): void {
  const p = Buffer.from(basePath);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(p.length);
  patchHeader(image, 204, Buffer.concat([len, p, Buffer.alloc(1024 - p.length)]));
}

/** A refused restore: exit 1, one line naming what differs, and the target left as it was; returns the line. */
function expectRefused(image: string, pattern: RegExp, extra: string[] = []): string {
  const target = path.join(dir, 'target');
  fs.writeFileSync(target, Buffer.alloc(RAM_SIZE, 0x5a));
  const r = iohelper(['restore', '--image', image, '--ram', `pc.ram=${target}`, ...extra]);
  expect(r.status).toBe(1);
  expect(r.stderr.trim().split('\n')).toHaveLength(1);
  expect(r.stderr).toMatch(pattern);
  expect(fs.readFileSync(target).equals(Buffer.alloc(RAM_SIZE, 0x5a))).toBe(true);
  fs.rmSync(target);
  return r.stderr;
}

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iohelper-delta-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('chains round-trip and store only what changed', () => {
  let ram: string;
  beforeAll(() => {
    ram = path.join(dir, 'ram');
    makeRam(ram);
    save('full.img', ram);
  });

  test('every image records the AES-128-GMAC tag of each unit of its RAM under its own key (holes hashed as zeros)', () => {
    const fd = fs.openSync(path.join(dir, 'full.img'), 'r');
    try {
      const meta = readImageMetadata(fd, 'full.img');
      expect(meta.header.hashes?.unit).toBe(UNIT);
      expect(meta.header.hashes?.depth).toBe(0);
      const key = meta.header.hashes!.key;
      const [table] = readHashTables(fd, 'full.img', meta.header, meta.entries);
      const bytes = fs.readFileSync(ram);
      for (let u = 0; u < RAM_SIZE / UNIT; u++) {
        const gmac = crypto.createCipheriv('aes-128-gcm', key, Buffer.alloc(12));
        gmac.setAAD(bytes.subarray(u * UNIT, (u + 1) * UNIT));
        gmac.final();
        expect(table.subarray(u * HASH_BYTES, (u + 1) * HASH_BYTES).toString('hex')).toBe(gmac.getAuthTag().toString('hex'));
      }
    } finally {
      fs.closeSync(fd);
    }
  });

  test('a delta holds only the changed units; depth 1, 2 (compressed) and 3 restore byte for byte', () => {
    const states: Buffer[] = [];
    let base = 'full.img';
    for (const [i, extra] of [[], ['--compress'], []].entries()) {
      scribble(ram, 5, 4096); // 5 scattered pages: at most 5 units change
      const image = `d${i + 1}.img`;
      save(image, ram, ['--base', base, ...extra]);
      states.push(fs.readFileSync(ram));
      const meta = readImageMetadata(fs.openSync(path.join(dir, image), 'r'), image);
      expect(meta.header.version).toBe(3);
      expect(meta.header.hashes?.depth).toBe(i + 1);
      expect(meta.header.base?.path).toBe(base); // relative to the delta's directory
      expect(meta.entries[0].dataBytes).toBeLessThanOrEqual(5 * UNIT);
      expect(meta.entries[0].dataBytes).toBeGreaterThan(0);
      const back = restoreBytes(image);
      expect(back.ram.equals(states[i])).toBe(true);
      expect(back.state.equals(deviceState)).toBe(true);
      base = image;
    }
    const shown = iohelper(['inspect', 'd3.img', '--json']);
    expect(shown.status).toBe(0);
    const info = JSON.parse(shown.stdout.toString());
    expect(info.chain.map((l: { path: string; depth: number }) => [path.basename(l.path), l.depth])).toEqual([['d3.img', 3], ['d2.img', 2], ['d1.img', 1], ['full.img', 0]]);
    expect(info.chain.reduce((n: number, l: { units: number }) => n + l.units, 0)).toBe(RAM_SIZE / UNIT);
  });

  test('convert --flatten writes one standalone image with the same RAM; without --flatten a delta is refused', () => {
    const refused = iohelper(['convert', 'd3.img', 'nope.img']);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/d3\.img is a delta .*convert --flatten d3\.img nope\.img/);
    expect(fs.existsSync(path.join(dir, 'nope.img'))).toBe(false);
    const r = iohelper(['convert', '--flatten', 'd3.img', 'flat.img']);
    expect({ status: r.status }).toEqual({ status: 0 });
    const fd = fs.openSync(path.join(dir, 'flat.img'), 'r');
    expect(readImageMetadata(fd, 'flat.img').header.version).toBe(1);
    fs.closeSync(fd);
    expect(restoreBytes('flat.img').ram.equals(restoreBytes('d3.img').ram)).toBe(true);
  });

  test('saving onto the base, or any image of its chain, is refused and leaves it as it was', () => {
    for (const target of ['d3.img', 'd1.img', 'full.img']) {
      const before = fs.readFileSync(path.join(dir, target));
      const r = iohelper(['save', '--no-stream-check', '--image', target, '--base', 'd3.img', '--ram', `pc.ram=${ram}`], deviceState);
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/a delta never replaces an image of its own chain/);
      expect(fs.readFileSync(path.join(dir, target)).equals(before)).toBe(true);
    }
    expect(restoreBytes('d3.img').ram.length).toBe(RAM_SIZE);
  });

  test('a missing, replaced, changed or incomplete base is refused before any write, naming it', () => {
    const copy = (from: string, to: string) => fs.copyFileSync(path.join(dir, from), path.join(dir, to));
    // Missing.
    copy('d1.img', 'm1.img');
    fs.renameSync(path.join(dir, 'full.img'), path.join(dir, 'full.moved'));
    try {
      expectRefused('m1.img', /the recorded base \S*full\.img of \S*m1\.img does not exist \(ENOENT\); if the chain was moved, name its base with --base \(restore, inspect, convert\) \(EIMG_BASE\)\n$/);
    } finally {
      fs.renameSync(path.join(dir, 'full.moved'), path.join(dir, 'full.img'));
    }
    // Replaced by another valid image: a new id and header.
    save('other.img', ram);
    copy('full.img', 'full.keep');
    copy('other.img', 'full.img');
    try {
      expectRefused('d2.img', /the recorded base \S*full\.img of \S*d1\.img is not the image this delta was saved against; if the chain was moved, name its base with --base \(restore, inspect, convert\) \(EIMG_BASE\)\n$/);
      const shown = iohelper(['inspect', 'd2.img']);
      expect(shown.status).toBe(2);
      expect(shown.stdout.toString()).toMatch(/chain REFUSED/);
    } finally {
      copy('full.keep', 'full.img');
    }
    // Changed in one data byte: its header still matches, so the chunk CRC catches it.
    copy('d1.img', 'd1.keep');
    const fd = fs.openSync(path.join(dir, 'd1.img'), 'r+');
    const meta = readImageMetadata(fd, 'd1.img');
    const index = Buffer.alloc(meta.entries[0].checksumCount * INDEX_ENTRY);
    fs.readSync(fd, index, 0, index.length, meta.entries[0].checksumOffset);
    let stored = -1;
    for (let u = 0; u < meta.entries[0].checksumCount && stored < 0; u++) if (index.readUInt32LE(u * INDEX_ENTRY + 16) === 1) stored = Number(index.readBigUInt64LE(u * INDEX_ENTRY));
    const byte = Buffer.alloc(1);
    fs.readSync(fd, byte, 0, 1, stored + 100);
    byte[0] ^= 0x42;
    fs.writeSync(fd, byte, 0, 1, stored + 100);
    fs.closeSync(fd);
    try {
      expectRefused('d2.img', /corrupted: block 'pc\.ram' chunk \d+ .*stored in its base \S*d1\.img has CRC-32C/);
    } finally {
      copy('d1.keep', 'd1.img');
    }
    // Incomplete: the base's state is 0 (a save that never finished).
    patchHeader(path.join(dir, 'd1.img'), 20, Buffer.from([0, 0, 0, 0]));
    try {
      expectRefused('d2.img', /the recorded base \S*d1\.img of \S*d2\.img is not the image this delta was saved against/);
    } finally {
      copy('d1.keep', 'd1.img');
    }
    expect(restoreBytes('d2.img').ram.length).toBe(RAM_SIZE);
  });

  test('clones and lazy restores of a delta are refused before any QEMU starts, naming convert --flatten', async () => {
    const image = path.join(dir, 'd1.img');
    const qemuArgs = ['-object', `memory-backend-file,id=pc.ram,size=${RAM_SIZE},mem-path=${path.join(dir, 'never')},share=on`];
    for (const start of [() => cloneVm({ image, qemuArgs, count: 2 }), () => restoreVm({ image, lazy: true, qemuArgs })]) {
      const e = (await start().then(() => undefined, (x: Error & { code?: string }) => x))!;
      expect(e.code).toBe('EIMG_COMPRESSED');
      expect(e.message).toMatch(/is a delta .*iohelper convert --flatten \S*d1\.img OUT/);
    }
    expect(fs.existsSync(path.join(dir, 'never'))).toBe(false);
  });

  test('a delta whose base path names itself (a cycle) is refused', () => {
    fs.copyFileSync(path.join(dir, 'd1.img'), path.join(dir, 'self.img'));
    patchBasePath(path.join(dir, 'self.img'), 'self.img');
    expectRefused('self.img', /the recorded base \S*self\.img of \S*self\.img is a file already in the chain: the chain is cyclic/);
  });

  test(`a chain deeper than ${MAX_DEPTH} is refused: saving one more names convert --flatten`, () => {
    let base = 'full.img';
    for (let i = 1; i <= MAX_DEPTH; i++) {
      scribble(ram, 1, 4096);
      save(`deep${i}.img`, ram, ['--base', base]);
      base = `deep${i}.img`;
    }
    expect(restoreBytes(base).ram.equals(fs.readFileSync(ram))).toBe(true);
    const r = iohelper(['save', '--no-stream-check', '--image', 'deeper.img', '--base', base, '--ram', `pc.ram=${ram}`], deviceState);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`already ${MAX_DEPTH} deltas deep; .*convert --flatten`));
    expect(fs.existsSync(path.join(dir, 'deeper.img'))).toBe(false);
    // A header claiming depth 17 is refused by the reader itself.
    fs.copyFileSync(path.join(dir, base), path.join(dir, 'd17.img'));
    const depth = Buffer.alloc(4);
    depth.writeUInt32LE(MAX_DEPTH + 1);
    patchHeader(path.join(dir, 'd17.img'), 156, depth);
    expectRefused('d17.img', /depth 17 is not in 1\.\.16/);
  });

  test('fuzzed delta headers and chain references are refused with an image error, the target untouched', () => {
    const good = fs.readFileSync(path.join(dir, 'd1.img'));
    const target = path.join(dir, 'fuzz-target');
    fc.assert(
      fc.property(fc.integer({ min: 132, max: 1300 }), fc.uint8Array({ minLength: 1, maxLength: 8 }), (at, bytes) => {
        const bad = Buffer.from(good);
        Buffer.from(bytes).copy(bad, at);
        bad.writeUInt32LE(native.crc32c(bad.subarray(0, HEADER_SIZE - 4)), HEADER_SIZE - 4);
        const same = bad.subarray(0, HEADER_SIZE).equals(good.subarray(0, HEADER_SIZE));
        fs.writeFileSync(path.join(dir, 'fuzz.img'), bad);
        fs.writeFileSync(target, Buffer.alloc(RAM_SIZE, 0x5a));
        const r = iohelper(['restore', '--image', 'fuzz.img', '--ram', `pc.ram=${target}`]);
        if (same) return r.status === 0;
        // A change to the id of this image itself is harmless (nothing refers to it); anything else is refused.
        if (r.status === 0) return at + bytes.length <= 148 && at >= 132;
        return r.status === 1 && /\(EIMG_[A-Z]+\)$/.test(r.stderr.trim()) && r.stderr.trim().split('\n').length === 1 && fs.readFileSync(target).equals(Buffer.alloc(RAM_SIZE, 0x5a));
      }),
      { numRuns: 40 },
    );
  });
});

describe('the base of a new delta is checked with the rules restore applies, before writing and before committing', () => {
  let ram: string;
  /** Temporaries save leaves beside `image` (none, once it has ended). */
  const temporaries = (image: string) => fs.readdirSync(dir).filter((n) => n.startsWith(`.${image}.iohelper-`));
  beforeAll(() => {
    ram = path.join(dir, 'ram-plan');
    makeRam(ram);
  });

  test('save --base of a compressed image is refused before a byte is written: one line, no image, no temporary (CLI and library)', async () => {
    save('z.img', ram, ['--compress']);
    const r = iohelper(['save', '--no-stream-check', '--image', 'zd.img', '--base', 'z.img', '--ram', `pc.ram=${ram}`], deviceState);
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/z\.img is compressed in 8388608-byte chunks, so a 65536-byte unit cannot be read alone: convert it to a mappable image \(iohelper convert\) .*\(EIMG_BASE\)\n$/);
    expect(fs.existsSync(path.join(dir, 'zd.img'))).toBe(false);
    expect(temporaries('zd.img')).toEqual([]);
    // The library's save({ base }) (which vm save's helper runs) refuses it too, and so an
    // absolute recorded path (rule H25: writers never write what readers refuse).
    save('zfull.img', ram);
    for (const [base, reference, message] of [['z.img', 'z.img', /compressed in 8388608-byte chunks/], ['zfull.img', path.join(dir, 'zfull.img'), /base path ".*zfull\.img" is absolute/]] as const) {
      const imageFd = fs.openSync(path.join(dir, 'zd.img'), 'w');
      const baseFd = fs.openSync(path.join(dir, base), 'r');
      const stateFd = fs.openSync('/dev/null', 'r');
      try {
        const e = await librarySave({ imageFd, imageName: 'zd.img', ram: [{ name: 'pc.ram', path: ram }], deviceStateFd: stateFd, checkDeviceState: false, base: { fd: baseFd, name: base, reference } }).then(() => undefined, (x: Error) => x);
        expect(e?.message).toMatch(message);
        expect(fs.fstatSync(imageFd).size).toBe(0);
      } finally {
        [imageFd, baseFd, stateFd].forEach((fd) => fs.closeSync(fd));
        fs.rmSync(path.join(dir, 'zd.img'));
      }
    }
  });

  test('a base saved again while a delta is saved against it: the delta is not committed and the old delta stays as it was', async () => {
    save('race-base.img', ram);
    save('race-d.img', ram, ['--base', 'race-base.img']);
    const before = fs.readFileSync(path.join(dir, 'race-d.img'));
    scribble(ram, 5, 4096);
    const child = spawn(process.execPath, [IOHELPER, 'save', '--no-stream-check', '--image', 'race-d.img', '--base', 'race-base.img', '--ram', `pc.ram=${ram}`], { cwd: dir, stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    // The delta's header is written once its plan (which read the base) is done; its device
    // state, and so its commit, waits for stdin.
    for (;;) {
      const temp = temporaries('race-d.img')[0];
      if (temp && fs.statSync(path.join(dir, temp)).size >= HEADER_SIZE) break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    save('race-base.img', ram); // a new file renamed over the base's path
    child.stdin.end(deviceState);
    expect(await exited).toBe(1);
    expect(stderr.trim().split('\n')).toHaveLength(1);
    expect(stderr).toMatch(/the base race-base\.img changed while race-d\.img was saved against it \(it was saved again or replaced\); the delta was not committed \(EIMG_BASE\)\n$/);
    expect(fs.readFileSync(path.join(dir, 'race-d.img')).equals(before)).toBe(true);
    expect(temporaries('race-d.img')).toEqual([]);
    // Saved again against the new base, it restores.
    save('race-d.img', ram, ['--base', 'race-base.img']);
    expect(restoreBytes('race-d.img').ram.equals(fs.readFileSync(ram))).toBe(true);
  });
});

describe('a base path recorded in a delta is data: absolute refused, never a link, nothing of the file quoted; --base names a moved base', () => {
  const leak = () => path.join(dir, 'leak');
  let ram: string;
  let smallSecret: Buffer;
  let bigSecret: Buffer;
  beforeAll(() => {
    fs.mkdirSync(leak());
    ram = path.join(dir, 'ram-leak');
    makeRam(ram);
    save('leak/full.img', ram);
    scribble(ram, 5, 4096);
    save('leak/d.img', ram, ['--base', 'leak/full.img']);
    scribble(ram, 5, 4096);
    save('leak/d2.img', ram, ['--base', 'leak/d.img']);
    // Secrets of another user beside the directory: one shorter than a header, one longer.
    smallSecret = Buffer.concat([Buffer.from('TOPSECRET:'), crypto.randomBytes(2990)]);
    bigSecret = Buffer.concat([Buffer.from('TOPSECRET:'), crypto.randomBytes(8182)]);
    fs.writeFileSync(path.join(dir, 'secret'), smallSecret, { mode: 0o600 });
    fs.writeFileSync(path.join(dir, 'big-secret'), bigSecret, { mode: 0o600 });
  });

  /** A copy of leak/d.img recording `basePath`. */
  function crafted(name: string, basePath: string): string {
    fs.copyFileSync(path.join(leak(), 'd.img'), path.join(leak(), name));
    patchBasePath(path.join(leak(), name), basePath);
    return `leak/${name}`;
  }

  /** Restore and inspect (text and JSON) refuse `image`, and no message quotes `secret`'s bytes or size, or a magic. */
  function expectNothingQuoted(image: string, pattern: RegExp, secret: Buffer): void {
    const said = [expectRefused(image, pattern)];
    for (const json of [[], ['--json']]) {
      const r = iohelper(['inspect', image, ...json]);
      expect(r.status).toBe(2);
      said.push(r.stdout.toString().split('\n').filter((l) => /REFUSED|"message"/.test(l)).join('\n'));
    }
    expect(`${said[1]}\n`).toMatch(pattern); // inspect's REFUSED line, ended as stderr's line is
    for (const text of said) {
      expect(text).not.toContain(secret.subarray(0, 8).toString('latin1'));
      expect(text).not.toMatch(new RegExp(`\\b${secret.length}\\b`));
      expect(text).not.toMatch(/magic|bytes/i);
    }
  }

  test('an absolute base path (/etc/shadow) is a crafted header: refused (EIMG_BASE) without opening it', () => {
    const shadow = fs.readFileSync('/etc/shadow');
    expectNothingQuoted(crafted('shadow.img', '/etc/shadow'), /base path "\/etc\/shadow" is absolute; a delta records its base relative to its own directory \(EIMG_BASE\)\n$/, shadow);
  });

  test("'..' stays legal, but a file that is not the delta's base is refused without its size, first bytes or type", () => {
    expectNothingQuoted(crafted('up.img', '../secret'), /the recorded base \S*\/secret of \S*up\.img is not the image this delta was saved against; if the chain was moved, name its base with --base \(restore, inspect, convert\) \(EIMG_BASE\)\n$/, smallSecret);
    expectNothingQuoted(crafted('up-big.img', '../big-secret'), /the recorded base \S*\/big-secret of \S*up-big\.img is not the image this delta was saved against/, bigSecret);
    // '..' to the real base is a real layout.
    fs.mkdirSync(path.join(leak(), 'sub'));
    fs.copyFileSync(path.join(leak(), 'd.img'), path.join(leak(), 'sub', 'd.img'));
    patchBasePath(path.join(leak(), 'sub', 'd.img'), '../full.img');
    expect(restoreBytes('leak/sub/d.img').ram.equals(restoreBytes('leak/d.img').ram)).toBe(true);
  });

  test('a base that is a symbolic link is refused, even to the very base (O_NOFOLLOW)', () => {
    fs.symlinkSync('full.img', path.join(leak(), 'link.img'));
    fs.symlinkSync('../secret', path.join(leak(), 'secret-link.img'));
    expectRefused(crafted('via-link.img', 'link.img'), /the recorded base \S*link\.img of \S*via-link\.img is not the image this delta was saved against/);
    expectNothingQuoted(crafted('via-secret-link.img', 'secret-link.img'), /the recorded base \S*secret-link\.img of \S*via-secret-link\.img is not the image this delta was saved against/, smallSecret);
  });

  test('a moved chain is restored, inspected and flattened with --base naming its base; a wrong --base is refused naming what differs', () => {
    const moved = path.join(dir, 'moved');
    fs.mkdirSync(moved);
    fs.copyFileSync(path.join(leak(), 'd.img'), path.join(moved, 'd.img'));
    fs.copyFileSync(path.join(leak(), 'd2.img'), path.join(moved, 'd2.img'));
    expectRefused('moved/d.img', /the recorded base \S*moved\/full\.img of \S*d\.img does not exist \(ENOENT\); if the chain was moved, name its base with --base/);
    const want = restoreBytes('leak/d.img');
    const back = restoreBytes('moved/d.img', ['--base', 'leak/full.img']);
    expect(back.ram.equals(want.ram) && back.state.equals(want.state)).toBe(true);
    // The layers below the named base are found from it.
    expect(restoreBytes('moved/d2.img', ['--base', 'leak/d.img']).ram.equals(restoreBytes('leak/d2.img').ram)).toBe(true);
    const shown = iohelper(['inspect', 'moved/d2.img', '--base', 'leak/d.img', '--json']);
    expect(shown.status).toBe(0);
    expect(JSON.parse(shown.stdout.toString()).chain.map((l: { path: string }) => path.relative(dir, path.resolve(dir, l.path)))).toEqual(['moved/d2.img', 'leak/d.img', 'leak/full.img']);
    const flat = iohelper(['convert', '--flatten', '--base', 'leak/full.img', 'moved/d.img', 'moved/flat.img']);
    expect({ status: flat.status }).toEqual({ status: 0 });
    expect(restoreBytes('moved/flat.img').ram.equals(want.ram)).toBe(true);
    // A named base that is not the delta's: the user named it, so the message says what differs.
    expectRefused('moved/d.img', /base leak\/d2\.img of \S*moved\/d\.img is not the image the delta was saved against \(it was replaced or saved again\): its id is [0-9a-f]{32}/, ['--base', 'leak/d2.img']);
    const notDelta = iohelper(['restore', '--image', 'leak/full.img', '--base', 'leak/d.img', '--ram', `pc.ram=${path.join(dir, 'never')}`]);
    expect(notDelta.status).toBe(1);
    expect(notDelta.stderr).toMatch(/leak\/full\.img is not a delta: --base names the base of a delta/);
    expect(fs.existsSync(path.join(dir, 'never'))).toBe(false);
  });
});
