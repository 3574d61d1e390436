/**
 * The `running` profile of the parallel scenario (issue 26): saves of a guest that has been
 * running, from the QEMU it ran in, so QEMU's own mapping of its RAM is warm. The test guest
 * boots ONCE with its memory workload (bench/lib/profiles.ts bootWorkloadGuest), RAM a shared
 * file on /dev/shm or hugetlbfs; one untimed QEMU save fills the file's holes (see below); then
 * each run, for each method in alternating order: the guest runs for a moment (cont), is
 * stopped, the page cache is dropped, and the method saves into a fresh file. Methods: ours
 * (saveVm, as `iohelper vm save --direct`: durable when it returns; with the read path auto,
 * forced to pread and to mmap; and without --direct: through the page cache, then fdatasync),
 * QEMU mapped-ram + multifd (2 and 4 channels, with and without direct-io; to `completed` and
 * with the fdatasync of its file), and the limit: fio writing our image's allocated extents
 * (the same bytes at the same offsets), O_DIRECT, 4 jobs, fsync at the end.
 */
import * as fs from 'fs';
import * as path from 'path';
import { qemuAvailable, QemuInstance } from '../src/vm/qemu-launch';
import { native } from '../src/native';
import { RamReadMode } from '../src/util/limits';
import { commandExists, dropCaches } from './lib/host';
import { bootWorkloadGuest } from './lib/profiles';
import { mappedRamSave, oursSave, SaveSample } from './lib/guest-saves';
import { alternatingOrder } from './lib/stats';
import { Row } from './lib/table';
import { compareWithQemu, mappedRamName, runTool, Sample, synced } from './parallel';

export interface RunningBenchOptions {
  size: number;
  runs: number;
  dir: string;
  /** A hugetlbfs mount for the guest's RAM (default: /dev/shm). */
  hugetlbfsDir?: string;
}

const M = 2 ** 20;
/** How long the guest runs between two saves. */
const RUN_MS = 1000;
const FIO_JOBS = 4;
/** fio's largest write: our I/O size for image data (native/ram_copy.cc). */
const FIO_PIECE = 8 << 20;
const OURS = 'iohelper image, vm save --direct (saveVm in process)';
/** Ours through the page cache, then fdatasync: still durable when it returns. */
const OURS_BUFFERED = 'iohelper image, vm save (buffered + fdatasync, saveVm in process)';
const FIO = `fio O_DIRECT, our image's extents (same bytes, same offsets), ${FIO_JOBS} jobs, fsync at end`;

/** The allocated extents of `file` (SEEK_DATA/SEEK_HOLE): [offset, length] pairs. */
function dataExtents(file: string): Array<[number, number]> {
  const fd = fs.openSync(file, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    const out: Array<[number, number]> = [];
    for (let pos = native.lseek(fd, 0, native.constants.SEEK_DATA); pos >= 0 && pos < size; ) {
      const end = native.lseek(fd, pos, native.constants.SEEK_HOLE);
      out.push([pos, end - pos]);
      pos = end >= size ? -1 : native.lseek(fd, end, native.constants.SEEK_DATA);
    }
    return out;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * fio replaying `extents` into `target` (fio's iolog version 2): the extents cut into pieces of
 * at most 8 MiB, dealt to FIO_JOBS threads in contiguous shares of bytes (as our workers take
 * ranges), each thread O_DIRECT with 4 in flight and an fsync at its end.
 */
function fioReplay(extents: Array<[number, number]>, target: string, dir: string): { args: string[]; bytes: number } {
  const pieces: Array<[number, number]> = [];
  for (const [off, len] of extents) for (let p = 0; p < len; p += FIO_PIECE) pieces.push([off + p, Math.min(FIO_PIECE, len - p)]);
  const total = pieces.reduce((a, p) => a + p[1], 0);
  const args = ['--thread', '--ioengine=libaio', '--direct=1', '--iodepth=4', '--rw=write', '--end_fsync=1', '--replay_no_stall=1', '--fallocate=none'];
  let next = 0;
  for (let j = 0; j < FIO_JOBS; j++) {
    const lines = ['fio version 2 iolog', `${target} add`, `${target} open`];
    let bytes = 0;
    while (next < pieces.length && (j === FIO_JOBS - 1 || bytes < total / FIO_JOBS)) {
      const [off, len] = pieces[next++];
      lines.push(`${target} write ${off} ${len}`);
      bytes += len;
    }
    lines.push(`${target} close`);
    const log = path.join(dir, `running-fio-${j}.iolog`);
    fs.writeFileSync(log, `${lines.join('\n')}\n`, { mode: 0o600 });
    args.push(`--name=w${j}`, `--read_iolog=${log}`);
  }
  return { args, bytes: total };
}

/** Lets the guest run for a moment, then stops it: each save takes a guest that was just running. */
async function runThenStop(vm: QemuInstance): Promise<void> {
  const { status } = await vm.qmp.execute('query-status');
  // After a completed migration QEMU is in postmigrate; cont is accepted there (QEMU 10).
  if (status !== 'running') await vm.qmp.execute('cont');
  await new Promise((r) => setTimeout(r, RUN_MS));
  await vm.qmp.execute('stop');
}

const asSample = (s: SaveSample): Sample => ({ wallS: s.wallS, cpuS: s.cpuS, peakAnonMiB: NaN, ...(s.syncedWallS !== undefined ? { syncedWallS: s.syncedWallS } : {}) });

export async function benchRunning(o: RunningBenchOptions): Promise<{ rows: Row[]; notes: string[] }> {
  const q = qemuAvailable();
  if (!q.ok) throw new Error(`the running profile needs QEMU 10 (${q.why}); sudo bash scripts/install-qemu.sh --bench`);
  const variant = `running${o.hugetlbfsDir ? '-hugetlbfs' : ''}`;
  const work = fs.mkdtempSync(path.join(o.dir, 'running-'));
  const ram = path.join(o.hugetlbfsDir ?? '/dev/shm', `iohelper-running-${process.pid}`);
  const serial = path.join(work, 'serial.log');
  const image = (tag: string) => path.join(work, `${tag}.img`);
  const methods: Array<{ name: string; save(vm: QemuInstance): Promise<Sample> }> = [];
  /** How each of our saves read guest RAM, in the order they ran. */
  const ramRead: string[] = [];
  /** Bytes each method's file has allocated, at its last save (what it wrote). */
  const written = new Map<string, number>();
  let ourImage: string | undefined;
  const variants: Array<{ name: string; tag: string; direct: boolean; ramRead?: RamReadMode }> = [
    { name: OURS, tag: 'ours', direct: true },
    { name: `${OURS}, RAM read forced: pread`, tag: 'ours-pread', direct: true, ramRead: 'pread' },
    { name: `${OURS}, RAM read forced: mmap`, tag: 'ours-mmap', direct: true, ramRead: 'mmap' },
    { name: OURS_BUFFERED, tag: 'ours-buffered', direct: false },
  ];
  for (const v of variants) {
    const file = image(v.tag);
    methods.push({
      name: v.name,
      async save(vm) {
        const s = await oursSave(vm, file, { direct: v.direct, ramRead: v.ramRead });
        if (!v.ramRead) ramRead.push(`${v.direct ? '--direct' : 'buffered'} ${s.ramRead ?? '?'}`);
        written.set(v.name, s.allocated);
        if (v.name === OURS) ourImage = file;
        return asSample(s);
      },
    });
  }
  const qemuVariants: string[] = [];
  for (const channels of [2, 4]) {
    for (const directIo of [true, false]) {
      const name = mappedRamName(channels, directIo);
      qemuVariants.push(name);
      methods.push({
        name,
        async save(vm) {
          const s = await mappedRamSave(vm, image(`mapped-ram-${channels}${directIo ? '-direct' : ''}`), channels, directIo);
          written.set(name, s.allocated);
          return asSample(s);
        },
      });
    }
  }
  const notes: string[] = [];
  let fio: { args: string[]; bytes: number } | undefined;
  const fioTarget = image('fio');
  if (commandExists('/usr/bin/fio')) {
    methods.push({
      name: FIO,
      async save() {
        if (!ourImage) throw new Error('fio runs after the first save of our image (it writes that image\'s extents)');
        // Our image of the latest run: the guest's RAM grows a little as it runs.
        fio = fioReplay(dataExtents(ourImage), fioTarget, work);
        fs.rmSync(fioTarget, { force: true });
        return runTool('fio', fio.args);
      },
    });
  } else notes.push(`${variant}: fio not installed (apt-get install fio): no limit row`);

  const data = new Map<string, Sample[]>();
  const add = (name: string, s: Sample) => data.set(name, [...(data.get(name) ?? []), s]);
  let vm: QemuInstance | undefined;
  try {
    fs.rmSync(ram, { force: true });
    const t0 = Date.now();
    console.error(`bench: running profile (${o.size / M} MiB${o.hugetlbfsDir ? ', hugetlbfs' : ''}): booting the test guest with its memory workload (TCG)`);
    vm = await bootWorkloadGuest(o.size, ram, serial);
    console.error(`bench: the guest's workload is done after ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    // QEMU's first RAM migration reads every page through its shared mapping, and a read fault
    // on a hole of a shared tmpfs or hugetlbfs file allocates a page: after it the RAM file has
    // no holes left (measured: 1098 -> 2048 MiB allocated at 2 GiB). One untimed QEMU save first,
    // so every timed save sees the same file, as it is on a host after any QEMU save of the guest.
    const allocated = () => fs.statSync(ram).blocks * 512;
    const before = allocated();
    await runThenStop(vm);
    await mappedRamSave(vm, image('warm-up'), 4, true);
    fs.rmSync(image('warm-up'), { force: true });
    notes.push(`${variant}: the guest's RAM file had ${(before / M).toFixed(0)} MiB allocated after the workload, ${(allocated() / M).toFixed(0)} MiB after QEMU's untimed first save (its reads through a shared mapping allocate the holes); every timed save read that file.`);
    for (const order of alternatingOrder(methods, o.runs)) {
      // Run 0 goes in list order: our image exists before fio replays its extents.
      const parts: string[] = [];
      for (const m of order) {
        await runThenStop(vm);
        dropCaches();
        const s = await m.save(vm);
        add(m.name, s);
        if (s.syncedWallS !== undefined) add(synced(m.name), { ...s, wallS: s.syncedWallS });
        parts.push(`${m.name} ${s.wallS.toFixed(2)} s${s.syncedWallS !== undefined ? ` (synced ${s.syncedWallS.toFixed(2)} s)` : ''}`);
      }
      console.error(`  ${variant}: ${parts.join(', ')}`);
    }
  } finally {
    await vm?.stop();
    fs.rmSync(ram, { force: true });
    fs.rmSync(work, { recursive: true, force: true });
  }
  const names = methods.flatMap((m) => [m.name, synced(m.name)]).filter((n) => data.has(n));
  const r = compareWithQemu(`${variant} save`, `parallel-save ${variant}`, o.size, names, data, qemuVariants, fio ? FIO : undefined);
  notes.unshift(
    `${variant}: the test guest (${o.size / M} MiB, TCG, 2 vCPUs) booted once with its memory workload, RAM a shared file on ${o.hugetlbfsDir ? 'hugetlbfs (2 MiB pages)' : '/dev/shm'}; ` +
      `before each save it ran ${RUN_MS / 1000} s (cont), was stopped, and the page cache was dropped. CPU: user + sys of this process (ours saves in process), its reaped children and QEMU; fio's own threads for fio. ` +
      `Our saves with the default (auto) read path read guest RAM by, in the order they ran: ${ramRead.join(', ')}` +
      (fio ? `; fio wrote our image's ${(fio.bytes / M).toFixed(0)} MiB of allocated extents (last run)` : '') +
      `. Allocated by each file (what it wrote): ${[...written].map(([n, b]) => `${n} ${(b / M).toFixed(0)} MiB`).join(', ')}.`,
  );
  return { rows: r.rows, notes: [...notes, ...r.notes] };
}
