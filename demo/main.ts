/**
 * npm run demo [-- --size 1G --dir PATH]: a real save and restore of a QEMU 10 guest.
 *
 * Boots a paused guest (KVM if /dev/kvm, else TCG) whose RAM is a patterned file on /dev/shm,
 * saves it four ways (classic stream through our helper and through libvirt_iohelper when
 * installed, our parallel image, QEMU's own mapped-ram), restores each into a fresh QEMU,
 * checks the RAM byte for byte, clones the parallel image three times and prints a table.
 * Without QEMU it says how to install it and copies a synthetic RAM file through the helper.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseFlags, parseSize } from '../src/util/flags';
import { formatBytes } from '../src/progress';
import { createRamFile, filesEqual, fillPattern } from '../bench/lib/ram-file';
import { cloneVm, restoreVm, saveVm } from '../src/vm/manager';
import { restoreMappedRam, saveMappedRam } from '../bench/lib/mapped-ram';
import { machineArgs, QemuInstance, qemuAvailable, startQemu } from '../src/vm/qemu-launch';
import { HelperCommand, ourHelper, restoreThroughHelper, saveThroughHelper } from '../src/vm/stream-migration';

const LIBVIRT_IOHELPER = '/usr/lib/libvirt/libvirt_iohelper';

interface Line {
  method: string;
  saveS: number;
  restoreS: number;
  imageBytes: number;
  ramEqual: boolean;
}

const seconds = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e9;

const ram0 = (p: string, size: number) => [{ id: 'ram0', path: p, size }];

/** Saves the patterned guest with `save`, restores into a fresh QEMU with `restore`, checks RAM. */
async function roundTrip(
  method: string,
  size: number,
  srcRam: string,
  image: string,
  save: (vm: QemuInstance) => Promise<void>,
  restore: (dstRam: string) => Promise<QemuInstance>,
): Promise<Line> {
  const dstRam = `${srcRam}-restored`;
  const src = await startQemu({ ram: ram0(srcRam, size) });
  let saveS: number;
  try {
    const t0 = process.hrtime.bigint();
    await save(src);
    saveS = seconds(t0);
  } finally {
    await src.stop();
  }
  fs.rmSync(dstRam, { force: true });
  const t0 = process.hrtime.bigint();
  const dst = await restore(dstRam);
  const restoreS = seconds(t0);
  await dst.stop();
  const ramEqual = (await filesEqual(srcRam, dstRam)).equal;
  const imageBytes = fs.statSync(image).blocks * 512;
  fs.rmSync(dstRam, { force: true });
  return { method, saveS, restoreS, imageBytes, ramEqual };
}

function streamMethod(name: string, helper: HelperCommand, size: number, srcRam: string, dir: string): Promise<Line> {
  const image = path.join(dir, `${name.replace(/\W+/g, '-')}.save`);
  return roundTrip(
    `classic stream through ${name}, O_DIRECT`,
    size,
    srcRam,
    image,
    (vm) => saveThroughHelper({ qmp: vm.qmp, image, direct: true, helper }),
    async (dstRam) => {
      createRamFile(dstRam, size);
      const vm = await startQemu({ ram: ram0(dstRam, size), incoming: true });
      await restoreThroughHelper({ qmp: vm.qmp, image, direct: true, helper });
      return vm;
    },
  );
}

function parallelMethod(size: number, srcRam: string, image: string): Promise<Line> {
  return roundTrip(
    'parallel image (iohelper, x-ignore-shared), O_DIRECT',
    size,
    srcRam,
    image,
    async (vm) => void (await saveVm(vm.qmp, { image, direct: true })),
    (dstRam) => restoreVm({ image, qemuArgs: machineArgs(ram0(dstRam, size)), direct: true }),
  );
}

function mappedRamMethod(size: number, srcRam: string, dir: string): Promise<Line> {
  const image = path.join(dir, 'mapped-ram.img');
  return roundTrip(
    'QEMU mapped-ram + multifd(2) + direct-io',
    size,
    srcRam,
    image,
    (vm) => saveMappedRam(vm.qmp, image),
    async (dstRam) => {
      createRamFile(dstRam, size);
      const vm = await startQemu({ ram: ram0(dstRam, size), incoming: true });
      await restoreMappedRam(vm.qmp, image);
      return vm;
    },
  );
}

/** Three clones of the parallel image, and a lazy restore: command to loaded, paused QEMU. */
async function cloneLines(size: number, srcRam: string, image: string): Promise<string[]> {
  const args = machineArgs(ram0('/unused', size));
  let t0 = process.hrtime.bigint();
  const clones = await cloneVm({ image, qemuArgs: args, count: 3 });
  const cloneS = seconds(t0);
  const tail = `${srcRam}-tail`;
  let equal = true;
  for (const c of clones) {
    await c.qmp.execute('pmemsave', { val: 1 << 20, size: size - (1 << 20), filename: tail });
    equal &&= await sameAsFileFrom(tail, srcRam, 1 << 20);
  }
  await Promise.all(clones.map((c) => c.stop()));
  fs.rmSync(tail, { force: true });
  t0 = process.hrtime.bigint();
  const lazy = await restoreVm({ image, qemuArgs: args, lazy: true });
  const lazyS = seconds(t0);
  await lazy.stop();
  return [
    `3 clones from the parallel image (RAM mapped copy-on-write, no copy): ${cloneS.toFixed(2)} s in all, ${(cloneS / 3).toFixed(2)} s each incl. QEMU start; RAM equal to the template: ${equal ? 'yes' : 'NO'}`,
    `lazy restore (one clone): ${lazyS.toFixed(2)} s from command to loaded, paused QEMU`,
  ];
}

/** Whether `a` equals `b` read from `offset` on. */
async function sameAsFileFrom(a: string, b: string, offset: number): Promise<boolean> {
  const fa = fs.openSync(a, 'r');
  const fb = fs.openSync(b, 'r');
  try {
    const size = fs.fstatSync(fa).size;
    const ba = Buffer.alloc(4 << 20);
    const bb = Buffer.alloc(4 << 20);
    for (let pos = 0; pos < size; pos += ba.length) {
      const n = fs.readSync(fa, ba, 0, ba.length, pos);
      fs.readSync(fb, bb, 0, n, pos + offset);
      if (!ba.subarray(0, n).equals(bb.subarray(0, n))) return false;
    }
    return true;
  } finally {
    fs.closeSync(fa);
    fs.closeSync(fb);
  }
}

/** No QEMU: the same helper moves a synthetic RAM file through a pipe into an O_DIRECT file and back. */
async function syntheticRoundTrip(srcRam: string, dir: string): Promise<Line> {
  const image = path.join(dir, 'synthetic.save');
  const back = `${srcRam}-back`;
  const h = ourHelper();
  const run = (args: string[], stdio: [number, number]) =>
    new Promise<void>((resolve, reject) => {
      const c = spawn(h.cmd, [...h.args, ...args], { stdio: [stdio[0], stdio[1], 'inherit'] });
      c.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`iohelper exited ${code}`))));
    });
  const inp = fs.openSync(srcRam, 'r');
  const out = fs.openSync(image, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | fs.constants.O_DIRECT, 0o600);
  let t0 = process.hrtime.bigint();
  await run([image, '1'], [inp, out]);
  const saveS = seconds(t0);
  fs.closeSync(inp);
  fs.closeSync(out);
  const rd = fs.openSync(image, fs.constants.O_RDONLY | fs.constants.O_DIRECT);
  const wr = fs.openSync(back, 'w');
  t0 = process.hrtime.bigint();
  await run([image, '0'], [rd, wr]);
  const restoreS = seconds(t0);
  fs.closeSync(rd);
  fs.closeSync(wr);
  const ramEqual = (await filesEqual(srcRam, back)).equal;
  const imageBytes = fs.statSync(image).blocks * 512;
  fs.rmSync(back, { force: true });
  fs.rmSync(image, { force: true });
  return { method: 'iohelper, synthetic RAM file (no QEMU)', saveS, restoreS, imageBytes, ramEqual };
}

function printTable(lines: Line[], size: number): void {
  const gib = size / 2 ** 30;
  const rows = [
    ['method', 'save s', 'restore s', 'save GiB/s', 'image allocated', 'RAM identical'],
    ...lines.map((l) => [l.method, l.saveS.toFixed(2), l.restoreS.toFixed(2), (gib / l.saveS).toFixed(2), formatBytes(l.imageBytes), l.ramEqual ? 'yes' : 'NO']),
  ];
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  for (const [i, r] of rows.entries()) {
    console.log(r.map((c, k) => (k === 0 ? c.padEnd(widths[k]) : c.padStart(widths[k]))).join('  '));
    if (i === 0) console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  }
}

async function main(): Promise<number> {
  const p = parseFlags(process.argv.slice(2), { values: ['size', 'dir'] });
  const size = parseSize(String(p.flags.get('size') ?? '1G'), '--size');
  const dir = String(p.flags.get('dir') ?? path.join(process.cwd(), 'demo-data'));
  fs.mkdirSync(dir, { recursive: true });
  const srcRam = `/dev/shm/iohelper-demo-${process.pid}`;
  createRamFile(srcRam, size);
  const { pages, zeroPages } = fillPattern(srcRam, 42, 0.25);
  console.log(`guest RAM: ${formatBytes(size)} on /dev/shm, ${((100 * zeroPages) / pages).toFixed(0)}% zero pages; images in ${dir}`);
  const lines: Line[] = [];
  const notes: string[] = [];
  try {
    const q = qemuAvailable();
    if (!q.ok) {
      console.log(`QEMU 10 not available (${q.why}).\nInstall it with: sudo bash scripts/install-qemu.sh\nRunning the same save/restore on a synthetic RAM file instead.\n`);
      lines.push(await syntheticRoundTrip(srcRam, dir));
    } else {
      console.log(`QEMU: paused guest, ${fs.existsSync('/dev/kvm') ? 'KVM' : 'TCG'}, memory-backend-file share=on; restore times include starting QEMU\n`);
      lines.push(await streamMethod('iohelper', ourHelper(), size, srcRam, dir));
      if (fs.existsSync(LIBVIRT_IOHELPER)) lines.push(await streamMethod('libvirt_iohelper', { cmd: LIBVIRT_IOHELPER, args: [] }, size, srcRam, dir));
      else notes.push(`${LIBVIRT_IOHELPER} not installed: 'sudo bash scripts/install-qemu.sh --libvirt' adds it for comparison`);
      const image = path.join(dir, 'parallel.img');
      lines.push(await parallelMethod(size, srcRam, image));
      lines.push(await mappedRamMethod(size, srcRam, dir));
      notes.push(...(await cloneLines(size, srcRam, image)));
    }
  } finally {
    fs.rmSync(srcRam, { force: true });
    for (const f of fs.readdirSync(dir)) if (/\.(save|img)$/.test(f)) fs.rmSync(path.join(dir, f), { force: true });
  }
  console.log('');
  printTable(lines, size);
  for (const n of notes) console.log(`\n${n}`);
  return lines.every((l) => l.ramEqual) ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(`demo: ${e instanceof Error ? e.message : e}`);
    process.exit(1);
  },
);
