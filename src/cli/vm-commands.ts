/**
 * iohelper vm save | restore | clone: whole-VM flows over QMP (src/vm/manager.ts).
 *   vm save    --qmp SOCK --out IMAGE [--direct] [--jobs J] [--compress[=zstd[:LEVEL]]] [--base IMAGE] [--progress[=FD]] [--stream]
 *   vm restore --image IMAGE [--direct] [--jobs J] [--no-verify] [--progress[=FD]] [--lazy [--no-prefetch] [--record-ws SECONDS]] [--cont] [--log-dir DIR] -- QEMU ARGS…
 *   vm clone   --image IMAGE --count N [--no-prefetch] [--no-verify] [--progress[=FD]] [--cont] [--log-dir DIR] -- QEMU ARGS…
 * Restored and cloned QEMUs keep running after this command exits; it prints their QMP sockets.
 */
import * as os from 'os';
import * as path from 'path';
import { UsageError } from '../errors';
import { QmpClient } from '../qmp/client';
import { JOBS } from '../util/limits';
import { parseCompress } from './image-args';
import { cloneVm, restoreVm, saveVm, saveVmStream } from '../vm/manager';
import { QemuInstance } from '../vm/qemu-launch';
import { parseFlags, parseInteger, parseBounded } from '../util/flags';
import { commandName, stderrLine, stdoutText } from './report';
import { withInterrupts } from './signals';
import { formatBytes } from '../progress';
import { PrefetchPlan, PrefetchReport } from '../vm/lazy/prefetch';
import { recordWorkingSet } from '../vm/lazy/working-set-record';
import * as tty from 'tty';
import { ProgressListener, ttyBarProgress } from '../progress';
import { progressOf } from './progress-option';

/** --progress[=FD] as the image commands take it; without it, a bar on stderr when it is a terminal. */
function vmProgress(value: string | true | undefined, label: string): ProgressListener | undefined {
  if (value !== undefined) return progressOf(value, label);
  return tty.isatty(2) ? ttyBarProgress(2, label) : undefined;
}

const elapsed = (t0: number) => `${((Date.now() - t0) / 1000).toFixed(2)} s`;

async function vmSave(args: string[]): Promise<number> {
  const p = parseFlags(args, { booleans: ['direct', 'stream'], values: ['qmp', 'out', 'jobs', 'base'], optionalValue: ['compress', 'progress'] });
  const compressLevel = parseCompress(p.flags.get('compress'));
  if (compressLevel !== undefined && p.flags.has('stream')) throw new UsageError('--compress applies to the parallel image, not --stream');
  const base = p.flags.get('base');
  if (base !== undefined && p.flags.has('stream')) throw new UsageError('--base applies to the parallel image, not --stream');
  if (p.flags.has('progress') && p.flags.has('stream')) throw new UsageError('--progress applies to the parallel image, not --stream');
  if (base === true) throw new UsageError('--base needs the path of the image the delta is saved against');
  const sock = p.flags.get('qmp');
  const out = p.flags.get('out');
  if (typeof sock !== 'string' || typeof out !== 'string') throw new UsageError('vm save needs --qmp SOCKET and --out IMAGE');
  const jobs = p.flags.has('jobs') ? parseBounded(String(p.flags.get('jobs')), '--jobs', JOBS) : undefined;
  const onProgress = p.flags.has('stream') ? undefined : vmProgress(p.flags.get('progress'), `save ${out}`);
  const qmp = await QmpClient.connect(sock);
  const t0 = Date.now();
  try {
    // SIGINT/SIGTERM stop the save (which runs in this process), cancel QEMU's migration,
    // remove the new file and resume a guest that was running.
    await withInterrupts(commandName(), async (signal) => {
      if (p.flags.has('stream')) {
        await saveVmStream(qmp, { image: out, direct: p.flags.has('direct'), signal });
        stdoutText(`saved ${out} through the stream helper in ${elapsed(t0)}\n`);
      } else {
        const { blocks } = await saveVm(qmp, { image: out, direct: p.flags.has('direct'), jobs, compressLevel, base, onProgress, signal });
        stdoutText(`saved ${blocks.map((b) => b.name).join(', ')} to ${out} in ${elapsed(t0)} (the guest stays paused)\n`);
      }
    });
  } finally {
    qmp.close();
  }
  return 0;
}

async function report(vms: QemuInstance[], what: string, t0: number, cont: boolean): Promise<void> {
  for (const vm of vms) if (cont) await vm.qmp.execute('cont');
  const lines = vms.map((vm) => `  pid ${vm.proc.pid}, QMP ${vm.release()}${cont ? ', running' : ', paused'}\n`);
  stdoutText(`${what} in ${elapsed(t0)}:\n${lines.join('')}`);
}

function startFlags(args: string[], extra: { booleans?: string[]; values?: string[]; optionalValue?: string[] }) {
  const p = parseFlags(args, { booleans: ['cont', ...(extra.booleans ?? [])], values: ['image', 'log-dir', ...(extra.values ?? [])], optionalValue: extra.optionalValue });
  const image = p.flags.get('image');
  if (typeof image !== 'string') throw new UsageError('--image IMAGE is required');
  if (!p.rest.length) throw new UsageError('give the VM\'s QEMU arguments after --');
  const logDir = String(p.flags.get('log-dir') ?? path.join(os.tmpdir(), `iohelper-vm-${process.pid}`));
  return { p, image, logDir };
}

async function vmRestore(args: string[]): Promise<number> {
  const { p, image, logDir } = startFlags(args, { booleans: ['direct', 'lazy', 'no-prefetch', 'no-verify'], values: ['jobs', 'record-ws'], optionalValue: ['progress'] });
  const lazy = p.flags.has('lazy');
  if (!lazy && (p.flags.has('no-prefetch') || p.flags.has('record-ws'))) throw new UsageError('--no-prefetch and --record-ws go with --lazy (an eager restore reads all RAM anyway)');
  const recordSeconds = p.flags.has('record-ws') ? parseInteger(String(p.flags.get('record-ws')), '--record-ws', 1, 3600) : undefined;
  const t0 = Date.now();
  // Recording starts from a cold mapping: a prefetch would run during the window and its cached
  // pages would be mapped around each fault, recording neighbours the guest never touched.
  const prefetch = prefetchOptions(p.flags.has('no-prefetch') || recordSeconds !== undefined);
  const jobs = p.flags.has('jobs') ? parseBounded(String(p.flags.get('jobs')), '--jobs', JOBS) : undefined;
  // SIGINT/SIGTERM stop the fill (which runs in this process) and put fresh RAM files back.
  const vm = await withInterrupts(commandName(), (signal) =>
    restoreVm({
      image,
      qemuArgs: p.rest,
      direct: p.flags.has('direct'),
      jobs,
      lazy,
      noVerify: p.flags.has('no-verify'),
      detachedLogDir: logDir,
      onProgress: vmProgress(p.flags.get('progress'), `restore ${image}`),
      signal,
      ...prefetch.options,
    }),
  );
  // Recording watches the guest run: --record-ws resumes it.
  const pid = vm.proc.pid!;
  await report([vm], lazy ? 'restored lazily (RAM mapped from the image, private)' : 'restored', t0, p.flags.has('cont') || recordSeconds !== undefined);
  await prefetch.finished();
  if (recordSeconds !== undefined) {
    const r = await withInterrupts(commandName(), (signal) => recordWorkingSet({ pid, image, seconds: recordSeconds, signal }));
    stdoutText(`working set: ${r.ranges} ranges, ${formatBytes(r.bytes)} touched in ${recordSeconds} s, written to ${r.file}${r.note ? ` (${r.note})` : ''}\n`);
  }
  return 0;
}

/** --no-prefetch, warnings on stderr, and waiting for the prefetch before the command exits. */
function prefetchOptions(off: boolean) {
  let running: Promise<void> | undefined;
  const warn = (m: string) => stderrLine(`${commandName()}: warning: ${m}`);
  return {
    options: {
      prefetch: !off,
      onWarning: warn,
      onPrefetch: (done: Promise<PrefetchReport>, plan: PrefetchPlan) => {
        running = done.then(
          (r) => stdoutText(`prefetched the working set (${formatBytes(r.bytes)} of ${formatBytes(plan.bytes)} in ${plan.reads.length} reads) in ${(r.elapsedMs / 1000).toFixed(2)} s\n`),
          () => undefined, // reported through onWarning
        );
      },
    },
    finished: async () => running,
  };
}

async function vmClone(args: string[]): Promise<number> {
  const { p, image, logDir } = startFlags(args, { booleans: ['no-prefetch', 'no-verify'], values: ['count'], optionalValue: ['progress'] });
  const count = parseInteger(String(p.flags.get('count') ?? '1'), '--count', 1, 1000);
  const t0 = Date.now();
  const prefetch = prefetchOptions(p.flags.has('no-prefetch'));
  const vms = await withInterrupts(commandName(), (signal) =>
    cloneVm({ image, qemuArgs: p.rest, count, detachedLogDir: logDir, noVerify: p.flags.has('no-verify'), onProgress: vmProgress(p.flags.get('progress'), `check ${image}`), signal, ...prefetch.options }),
  );
  await report(vms, `${count} clone(s) started`, t0, p.flags.has('cont'));
  await prefetch.finished();
  return 0;
}

export async function vmCommand(args: string[]): Promise<number> {
  const [verb, ...rest] = args;
  if (verb === 'save') return vmSave(rest);
  if (verb === 'restore') return vmRestore(rest);
  if (verb === 'clone') return vmClone(rest);
  throw new UsageError(`vm ${verb ?? ''}: expected save, restore or clone`);
}
