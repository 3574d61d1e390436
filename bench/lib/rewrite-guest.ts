/**
 * The test guest in rewrite mode (scripts/build-test-guest.sh: `iohelper.workload
 * iohelper.rewrite`): the real profile's memory workload, then a held 40 % tmpfs file, then on
 * each "PCT SEED" line on its serial port it rewrites PCT % of its RAM inside that file in
 * scattered runs (4 KiB to 1 MiB) with new bytes. TCG on both cores, RAM a shared file on
 * /dev/shm, so the incremental-save benchmarks can pause it, save or copy its RAM, and go on.
 */
import * as fs from 'fs';
import * as path from 'path';
import { QemuInstance, startQemu } from '../../src/vm/qemu-launch';
import { Serial } from './serial';
import { GUEST_DIR, serialSocketArgs, testGuestArgs } from './test-guest';

const M = 2 ** 20;
/** The init version (scripts/build-test-guest.sh) from which the guest has a rewrite mode. */
const REWRITE_GUEST_VERSION = 6;

/** The guest's QEMU arguments: RAM block `ram0` at `ram` (share=on), serial port on the socket `serialSock`. */
export function rewriteGuestArgs(size: number, ram: string, serialSock: string): string[] {
  return testGuestArgs(size, ram, 'iohelper.workload iohelper.rewrite', serialSocketArgs(serialSock));
}

/** Why the rewrite guest cannot run here, or undefined. */
function rewriteGuestMissing(): string | undefined {
  for (const f of ['vmlinuz', 'initrd.gz']) if (!fs.existsSync(path.join(GUEST_DIR(), f))) return `the test guest is missing (${path.join(GUEST_DIR(), f)}): run scripts/build-test-guest.sh`;
  const v = Number(fs.readFileSync(path.join(GUEST_DIR(), 'version'), 'utf8').trim());
  if (!(v >= REWRITE_GUEST_VERSION)) return `the test guest in ${GUEST_DIR()} is version ${v}, without the rewrite mode (>= ${REWRITE_GUEST_VERSION}): run scripts/build-test-guest.sh`;
  return undefined;
}

export interface RewriteGuest {
  vm: QemuInstance;
  ram: string;
  args: string[];
  /** Bytes of the held file the rewrites happen in. */
  heldBytes: number;
  /** Sends "PCT SEED" to the running guest and waits for its done line: the bytes it rewrote, in how many runs. */
  rewrite(pct: number, seed: number): Promise<{ bytes: number; runs: number; seconds: number }>;
  stop(): Promise<void>;
}

const BOOT_TIMEOUT_MS = 30 * 60 * 1000;
const REWRITE_TIMEOUT_MS = 10 * 60 * 1000;

/** Boots the guest (running) and waits until its workload is done and the held file written. */
export async function startRewriteGuest(size: number, dir: string, tag = 'rw'): Promise<RewriteGuest> {
  const why = rewriteGuestMissing();
  if (why) throw new Error(why);
  const ram = `/dev/shm/iohelper-${tag}-${process.pid}`;
  const sock = path.join(dir, `${tag}-serial-${process.pid}.sock`);
  fs.rmSync(ram, { force: true });
  fs.rmSync(sock, { force: true });
  const args = rewriteGuestArgs(size, ram, sock);
  const t0 = Date.now();
  const vm = await startQemu({ args, paused: false });
  let serial: Serial | undefined;
  try {
    serial = await Serial.connect(sock);
    const ready = await serial.waitFor('iohelper-rewrite-ready', BOOT_TIMEOUT_MS);
    const heldBytes = Number(/bytes=(\d+)/.exec(ready)?.[1]);
    console.error(`bench: rewrite guest (${size / M} MiB, TCG) ready after ${((Date.now() - t0) / 1000).toFixed(0)} s, held file ${(heldBytes / M).toFixed(0)} MiB`);
    const s = serial;
    return {
      vm,
      ram,
      args,
      heldBytes,
      async rewrite(pct, seed) {
        const from = s.length;
        const t = process.hrtime.bigint();
        s.send(`${pct} ${seed}`);
        const r = await s.waitForAny(['iohelper-rewrite-done', 'iohelper-rewrite-failed'], REWRITE_TIMEOUT_MS, from);
        if (r.marker !== 'iohelper-rewrite-done') throw new Error(`the guest's rewrite of ${pct} % failed: ${s.tail()}`);
        const line = r.rest;
        const m = /bytes=(\d+) runs=(\d+)/.exec(line);
        if (!m) throw new Error(`cannot read the guest's rewrite line: ${line}`);
        return { bytes: Number(m[1]), runs: Number(m[2]), seconds: Number(process.hrtime.bigint() - t) / 1e9 };
      },
      async stop() {
        s.close();
        await vm.stop();
        fs.rmSync(ram, { force: true });
        fs.rmSync(sock, { force: true });
      },
    };
  } catch (e) {
    serial?.close();
    await vm.stop();
    fs.rmSync(ram, { force: true });
    throw e;
  }
}
