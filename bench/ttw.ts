/**
 * ttw scenario: time from the restore command to useful work. The test guest (TCG, 2 vCPUs)
 * booted with `iohelper.ttw=MB` writes a working set of MB 1 MiB files, each followed in guest
 * memory by 3 MiB of cold data (scattered), and waits on its serial port; it is saved once (our
 * image and QEMU's mapped-ram). Each run restores it with the image evicted from the page cache
 * (only the image: Node and QEMU stay cached, as on a host that restores VMs), sends the go
 * line on the new QEMU's serial port as soon as the command says the guest runs, and times
 * until the guest prints that it has read its working set. Methods: eager restore, QEMU
 * mapped-ram (4 channels + direct-io), lazy, lazy + prefetch of the recorded working set, lazy
 * with the image cached (the floor), 4 lazy restores at once without and with prefetch; and the
 * time to a loaded QEMU of a lazy restore with the image cached. Storage: the local disk,
 * throttled to 200 MB/s, and limited to 500 read IOPS (cgroup v1 blkio).
 */
import { ChildProcess, execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { packageRoot } from '../src/package-root';
import { restoreVm, saveVm } from '../src/vm/manager';
import { restoreMappedRam, saveMappedRam } from './lib/mapped-ram';
import { qemuAvailable, startQemu } from '../src/vm/qemu-launch';
import { recordWorkingSet } from '../src/vm/lazy/working-set-record';
import { Serial } from './lib/serial';
import { GUEST_DIR, serialSocketArgs, testGuestArgs } from './lib/test-guest';
import { alternatingOrder, summarize } from './lib/stats';
import { Row, RunSample, summaryRows } from './lib/table';
import { createThrottle, Throttle, throttleUnavailable } from './lib/throttle';

export interface TtwBenchOptions {
  size: number;
  runs: number;
  dir: string;
  /** Working set in MiB (default: an eighth of RAM). */
  wsMiB?: number;
}

const M = 2 ** 20;
const IOHELPER = () => path.join(packageRoot(), 'bin', 'iohelper');
const READY = 'iohelper-ttw-ready';
const DONE = 'iohelper-ttw-done';

function guestArgs(size: number, wsMiB: number, ram: string, serialSock: string): string[] {
  return testGuestArgs(size, ram, `iohelper.ttw=${wsMiB}`, serialSocketArgs(serialSock));
}

/** Drops the image (and only it) from the page cache. No process may map it meanwhile. */
function evict(file: string): void {
  execFileSync('dd', [`if=${file}`, 'iflag=nocache', 'count=0', 'status=none']);
}

/** Reads the image into the page cache (8 MiB reads: few requests on IOPS-limited storage). */
function warm(file: string): void {
  execFileSync('dd', [`if=${file}`, 'of=/dev/null', 'bs=8M', 'status=none']);
}

function killPids(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  // Wait until they are gone: an image still mapped cannot be evicted.
  const deadline = Date.now() + 10000;
  while (pids.some((p) => fs.existsSync(`/proc/${p}`)) && Date.now() < deadline) execFileSync('sleep', ['0.05']);
}

/** Runs `iohelper vm restore …`; resolves when its stdout says the guest runs, with the QEMU's pid. */
function restoreCommand(args: string[]): Promise<{ pid: number; child: ChildProcess; loadedS: number }> {
  const t0 = process.hrtime.bigint();
  const child = spawn(process.execPath, [IOHELPER(), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /pid (\d+), QMP .*, running/.exec(out);
      if (m) resolve({ pid: Number(m[1]), child, loadedS: Number(process.hrtime.bigint() - t0) / 1e9 });
    });
    child.on('close', (code) => reject(new Error(`iohelper ${args.slice(0, 3).join(' ')} exited ${code} before the guest ran: ${err.trim()}`)));
  });
}

interface Ctx {
  size: number;
  wsMiB: number;
  image: string;
  mappedRam: string;
  dir: string;
  n: number;
}

/** One lazy or eager restore through the command; seconds from the command to the guest's marker. */
async function viaCommand(c: Ctx, o: { lazy: boolean; prefetch: boolean; warm?: boolean }, count = 1): Promise<RunSample> {
  if (!o.warm) evict(c.image);
  else warm(c.image);
  const pids: number[] = [];
  const serials: Serial[] = [];
  const children: ChildProcess[] = [];
  const rams: string[] = [];
  const t0 = process.hrtime.bigint();
  try {
    await Promise.all(
      Array.from({ length: count }, async (_, i) => {
        const id = `${c.n++}-${i}`;
        const sock = path.join(c.dir, `ttw-serial-${id}.sock`);
        const ram = `/dev/shm/iohelper-ttw-${process.pid}-${id}`;
        rams.push(ram);
        const flags = ['vm', 'restore', '--image', c.image, '--cont', '--log-dir', path.join(c.dir, 'logs'), ...(o.lazy ? ['--lazy'] : []), ...(o.lazy && !o.prefetch ? ['--no-prefetch'] : [])];
        const r = await restoreCommand([...flags, '--', ...guestArgs(c.size, c.wsMiB, ram, sock)]);
        pids.push(r.pid);
        children.push(r.child);
        const s = await Serial.connect(sock);
        serials.push(s);
        s.send('go');
        await s.waitFor(DONE, 600000);
      }),
    );
    return { wallS: Number(process.hrtime.bigint() - t0) / 1e9, cpuS: NaN, memMiB: NaN };
  } finally {
    for (const s of serials) s.close();
    killPids(pids);
    await Promise.all(children.map((ch) => (ch.exitCode === null ? new Promise((r) => ch.on('close', r)) : undefined)));
    for (const r of rams) fs.rmSync(r, { force: true });
  }
}

/** QEMU's own mapped-ram restore (4 channels, direct-io), then the same go and marker. */
async function viaMappedRam(c: Ctx): Promise<RunSample> {
  evict(c.mappedRam);
  const sock = path.join(c.dir, `ttw-serial-mr-${c.n++}.sock`);
  const ram = `/dev/shm/iohelper-ttw-${process.pid}-mr`;
  fs.rmSync(ram, { force: true });
  const t0 = process.hrtime.bigint();
  const vm = await startQemu({ args: guestArgs(c.size, c.wsMiB, ram, sock), incoming: true });
  try {
    await restoreMappedRam(vm.qmp, c.mappedRam, true, 4);
    await vm.qmp.execute('cont');
    const s = await Serial.connect(sock);
    try {
      s.send('go');
      await s.waitFor(DONE, 600000);
    } finally {
      s.close();
    }
    return { wallS: Number(process.hrtime.bigint() - t0) / 1e9, cpuS: NaN, memMiB: NaN };
  } finally {
    await vm.stop();
    fs.rmSync(ram, { force: true });
  }
}

/** Time to a loaded QEMU only: a lazy restore with the image cached (the command's own I/O). */
async function loadedOnly(c: Ctx): Promise<RunSample> {
  warm(c.image);
  const sock = path.join(c.dir, `ttw-serial-lo-${c.n++}.sock`);
  const r = await restoreCommand(['vm', 'restore', '--lazy', '--no-prefetch', '--cont', '--image', c.image, '--log-dir', path.join(c.dir, 'logs'), '--', ...guestArgs(c.size, c.wsMiB, '/dev/shm/unused', sock)]);
  killPids([r.pid]);
  await new Promise((res) => (r.child.exitCode === null ? r.child.on('close', res) : res(undefined)));
  return { wallS: r.loadedS, cpuS: NaN, memMiB: NaN };
}

/** Boots the ttw guest once, saves it both ways, and records its working set from a lazy restore. */
async function prepare(c: Omit<Ctx, 'n'>): Promise<{ wsBytes: number; wsRanges: number }> {
  const ram = `/dev/shm/iohelper-ttw-${process.pid}-src`;
  const sock = path.join(c.dir, 'ttw-serial-src.sock');
  console.error(`bench: ttw: booting the test guest (${c.size / M} MiB, TCG) and writing its ${c.wsMiB} MiB working set`);
  const vm = await startQemu({ args: guestArgs(c.size, c.wsMiB, ram, sock), paused: false });
  try {
    const s = await Serial.connect(sock);
    await s.waitFor(READY, 30 * 60 * 1000);
    s.close();
    await vm.qmp.execute('stop');
    await saveVm(vm.qmp, { image: c.image, direct: true });
  } finally {
    await vm.stop();
    fs.rmSync(ram, { force: true });
  }
  // QEMU migrates a VM once: mapped-ram's file comes from a QEMU restored from our image.
  const copy = await restoreVm({ image: c.image, qemuArgs: guestArgs(c.size, c.wsMiB, ram, path.join(c.dir, 'ttw-serial-copy.sock')) });
  try {
    await copy.qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: false }] });
    fs.rmSync(c.mappedRam, { force: true });
    await saveMappedRam(copy.qmp, c.mappedRam, true, 4);
  } finally {
    await copy.stop();
    fs.rmSync(ram, { force: true });
  }
  // Record: a lazy restore that runs the guest's work while its pages are watched.
  fs.rmSync(`${c.image}.ws`, { force: true });
  const rsock = path.join(c.dir, 'ttw-serial-rec.sock');
  const lazy = await restoreVm({ image: c.image, lazy: true, prefetch: false, qemuArgs: guestArgs(c.size, c.wsMiB, '/dev/shm/unused', rsock) });
  try {
    await lazy.qmp.execute('cont');
    const stop = new AbortController();
    const recording = recordWorkingSet({ pid: lazy.proc.pid!, image: c.image, seconds: 600, signal: stop.signal });
    const s = await Serial.connect(rsock);
    s.send('go');
    await s.waitFor(DONE, 600000);
    s.close();
    stop.abort();
    const r = await recording;
    return { wsBytes: r.bytes, wsRanges: r.ranges };
  } finally {
    await lazy.stop();
  }
}

export async function benchTtw(o: TtwBenchOptions): Promise<{ rows: Row[]; notes: string[] }> {
  const q = qemuAvailable();
  if (!q.ok) throw new Error(`the ttw scenario needs QEMU 10 (${q.why})`);
  for (const f of ['vmlinuz', 'initrd.gz']) if (!fs.existsSync(path.join(GUEST_DIR(), f))) throw new Error(`the ttw scenario needs the test guest: run scripts/build-test-guest.sh`);
  const wsMiB = o.wsMiB ?? Math.floor(o.size / M / 8);
  const c: Ctx = { size: o.size, wsMiB, image: path.join(o.dir, 'ttw.img'), mappedRam: path.join(o.dir, 'ttw-mapped-ram.img'), dir: fs.mkdtempSync(path.join(o.dir, 'ttw-')), n: 0 };
  const notes: string[] = [];
  const rows: Row[] = [];
  try {
    const { wsBytes, wsRanges } = await prepare(c);
    notes.push(`ttw: ${o.size / M} MiB TCG guest, working set ${wsMiB} MiB of 1 MiB files each followed by 3 MiB of cold data; recorded working set ${(wsBytes / M).toFixed(0)} MiB in ${wsRanges} ranges (it includes what the kernel and busybox touch).`);
    const methods: Array<{ name: string; run: () => Promise<RunSample> }> = [
      { name: 'eager restore (ours)', run: () => viaCommand(c, { lazy: false, prefetch: false }) },
      { name: 'QEMU mapped-ram + multifd(4) + direct-io', run: () => viaMappedRam(c) },
      { name: 'lazy, cold', run: () => viaCommand(c, { lazy: true, prefetch: false }) },
      { name: 'lazy + prefetch, cold', run: () => viaCommand(c, { lazy: true, prefetch: true }) },
      { name: 'lazy, image cached (floor)', run: () => viaCommand(c, { lazy: true, prefetch: false, warm: true }) },
      { name: '4 lazy at once, cold', run: () => viaCommand(c, { lazy: true, prefetch: false }, 4) },
      { name: '4 lazy + prefetch at once, cold', run: () => viaCommand(c, { lazy: true, prefetch: true }, 4) },
      { name: 'lazy to a loaded QEMU, image cached', run: () => loadedOnly(c) },
    ];
    const why = throttleUnavailable();
    const storages: Array<{ label: string; bps?: number; iops?: number }> = [{ label: 'local disk' }];
    if (why) notes.push(`ttw: throttled storage not run: ${why}`);
    else storages.push({ label: '200 MB/s', bps: 200e6 }, { label: '500 read IOPS', iops: 500 });
    for (const st of storages) {
      let throttle: Throttle | undefined;
      const data = new Map<string, RunSample[]>();
      try {
        if (st.bps || st.iops) {
          throttle = createThrottle(o.dir, st.bps ?? 0, st.iops ?? 0);
          throttle.add(process.pid);
        }
        for (const order of alternatingOrder(methods, o.runs)) {
          for (const m of order) {
            const s = await m.run();
            data.set(m.name, [...(data.get(m.name) ?? []), s]);
            console.error(`  ttw ${st.label} ${m.name}: ${s.wallS.toFixed(2)} s`);
          }
        }
      } finally {
        if (throttle) {
          throttle.remove(process.pid);
          throttle.close();
        }
      }
      rows.push(...summaryRows(`ttw ${st.label}`, o.size, methods.map((m) => m.name), data, { method: 'lazy, cold', label: 'lazy, cold' }));
      notes.push(gapNote(st.label, data, wsBytes, st.bps));
    }
  } finally {
    fs.rmSync(c.dir, { recursive: true, force: true });
    fs.rmSync(c.image, { force: true });
    fs.rmSync(`${c.image}.ws`, { force: true });
    fs.rmSync(c.mappedRam, { force: true });
  }
  return { rows, notes };
}

/** The measure: how much of the gap between cold lazy and the floor prefetch closes. */
function gapNote(label: string, data: Map<string, RunSample[]>, wsBytes: number, bps?: number): string {
  const med = (n: string) => summarize((data.get(n) ?? []).map((x) => x.wallS)).median;
  const cold = med('lazy, cold');
  const pre = med('lazy + prefetch, cold');
  const floor = Math.max(med('lazy, image cached (floor)'), bps ? wsBytes / bps : 0);
  const gap = cold - floor;
  const closed = gap > 0 ? (cold - pre) / gap : NaN;
  const four = med('4 lazy + prefetch at once, cold');
  return (
    `ttw ${label}: lazy cold ${cold.toFixed(2)} s, lazy + prefetch ${pre.toFixed(2)} s, floor ${floor.toFixed(2)} s (the larger of the cached-image run and the recorded working set at the storage's bandwidth); ` +
    (gap >= 0.3 ? `prefetch closes ${(100 * closed).toFixed(0)} % of the ${gap.toFixed(2)} s gap (target >= 67 %: ${closed >= 2 / 3 ? 'met' : 'MISSED'})` : `the gap is ${gap.toFixed(2)} s, under 0.3 s: nothing for prefetch to win`) +
    `; prefetch ${pre <= cold ? 'not slower than' : 'SLOWER than'} plain lazy; 4 at once with prefetch ${four.toFixed(2)} s = ${(four / pre).toFixed(2)}x one (target <= 1.5x); loaded QEMU with the image cached ${med('lazy to a loaded QEMU, image cached').toFixed(2)} s.`
  );
}
