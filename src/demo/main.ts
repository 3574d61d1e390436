/**
 * npm run demo [-- --size 1G --dir PATH]: a real save and restore of a QEMU 10 guest.
 *
 * Boots a paused guest (KVM if /dev/kvm, else TCG) whose RAM is a patterned file on /dev/shm,
 * saves it through our helper (and libvirt_iohelper, when installed) into an O_DIRECT file,
 * restores each image into a fresh QEMU, checks the RAM byte for byte and prints a table.
 * Without QEMU it says how to install it and copies a synthetic RAM file through the helper.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseFlags, parseSize } from '../cli/flags';
import { native } from '../native';
import { formatBytes } from '../progress';
import { createRamFile, filesEqual, fillPattern } from '../synthetic/ram-file';
import { qemuAvailable, startQemu } from '../vm/qemu-launch';
import { HelperCommand, ourHelper, restoreThroughHelper, saveThroughHelper } from '../vm/stream-migration';

const LIBVIRT_IOHELPER = '/usr/lib/libvirt/libvirt_iohelper';

interface Line {
  method: string;
  saveS: number;
  restoreS: number;
  imageBytes: number;
  ramEqual: boolean;
}

const seconds = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e9;

async function qemuRoundTrip(helperName: string, helper: HelperCommand, size: number, srcRam: string, dir: string): Promise<Line> {
  const image = path.join(dir, `${helperName.replace(/\W+/g, '-')}.save`);
  const dstRam = `${srcRam}-restored`;
  const ram = [{ id: 'ram0', path: srcRam, size }];
  const src = await startQemu({ ram });
  let saveS: number;
  try {
    const t0 = process.hrtime.bigint();
    await saveThroughHelper({ qmp: src.qmp, image, direct: true, helper });
    saveS = seconds(t0);
  } finally {
    await src.stop();
  }
  createRamFile(dstRam, size);
  const dst = await startQemu({ ram: [{ id: 'ram0', path: dstRam, size }], incoming: true });
  let restoreS: number;
  try {
    const t0 = process.hrtime.bigint();
    await restoreThroughHelper({ qmp: dst.qmp, image, direct: true, helper });
    restoreS = seconds(t0);
  } finally {
    await dst.stop();
  }
  const ramEqual = (await filesEqual(srcRam, dstRam)).equal;
  const imageBytes = fs.statSync(image).size;
  fs.rmSync(dstRam, { force: true });
  fs.rmSync(image, { force: true });
  return { method: `${helperName}, classic stream, O_DIRECT`, saveS, restoreS, imageBytes, ramEqual };
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
  const imageBytes = fs.statSync(image).size;
  fs.rmSync(back, { force: true });
  fs.rmSync(image, { force: true });
  return { method: 'iohelper, synthetic RAM file (no QEMU)', saveS, restoreS, imageBytes, ramEqual };
}

function printTable(lines: Line[], size: number): void {
  const gib = size / 2 ** 30;
  const rows = [
    ['method', 'save s', 'restore s', 'save GiB/s', 'image size', 'RAM identical'],
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
  try {
    const q = qemuAvailable();
    if (!q.ok) {
      console.log(`QEMU 10 not available (${q.why}).\nInstall it with: sudo bash scripts/install-qemu.sh\nRunning the same save/restore on a synthetic RAM file instead.\n`);
      lines.push(await syntheticRoundTrip(srcRam, dir));
    } else {
      console.log(`QEMU: paused guest, ${fs.existsSync('/dev/kvm') ? 'KVM' : 'TCG'}, memory-backend-file share=on\n`);
      lines.push(await qemuRoundTrip('iohelper', ourHelper(), size, srcRam, dir));
      if (fs.existsSync(LIBVIRT_IOHELPER)) lines.push(await qemuRoundTrip('libvirt_iohelper', { cmd: LIBVIRT_IOHELPER, args: [] }, size, srcRam, dir));
      else console.log(`(${LIBVIRT_IOHELPER} not installed: 'sudo bash scripts/install-qemu.sh --libvirt' adds it for comparison)\n`);
    }
  } finally {
    fs.rmSync(srcRam, { force: true });
  }
  printTable(lines, size);
  return lines.every((l) => l.ramEqual) ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(`demo: ${e instanceof Error ? e.message : e}`);
    process.exit(1);
  },
);
