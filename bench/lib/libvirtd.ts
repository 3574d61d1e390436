/**
 * A real libvirtd for the tests and the bench (root only): started here when it is installed but not running
 * (virtlogd first: libvirtd's QEMU driver logs through it), stopped again afterwards if we
 * started it. .ci/run installs the packages (scripts/install-qemu.sh --libvirt).
 */
import { execFileSync, spawnSync } from 'child_process';
import * as fs from 'fs';

const VIRSH = ['-c', 'qemu:///system'];

export function virsh(...args: string[]): string {
  return execFileSync('virsh', [...VIRSH, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Runs virsh, returning its exit status and output instead of throwing. */
export function virshResult(...args: string[]): { status: number; stdout: string; stderr: string } {
  const r = spawnSync('virsh', [...VIRSH, ...args], { encoding: 'utf8' });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

function reachable(): boolean {
  return spawnSync('virsh', [...VIRSH, 'version'], { stdio: 'ignore', timeout: 20000 }).status === 0;
}

function daemonRunning(pidFile: string): boolean {
  try {
    process.kill(Number(fs.readFileSync(pidFile, 'utf8').trim()), 0);
    return true;
  } catch {
    return false;
  }
}

/** Why a libvirtd cannot be had here, or undefined when one can. */
export function libvirtdUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (it runs a system libvirtd)';
  for (const bin of ['/usr/sbin/libvirtd', '/usr/sbin/virtlogd', '/usr/bin/virsh']) {
    if (!fs.existsSync(bin)) return `${bin} is missing (install libvirt-daemon-system, libvirt-daemon-driver-qemu, libvirt-clients: scripts/install-qemu.sh --libvirt)`;
  }
  return undefined;
}

export interface Libvirtd {
  stop(): void;
}

export async function ensureLibvirtd(): Promise<Libvirtd> {
  const started: string[] = [];
  for (const [bin, pidFile] of [
    ['/usr/sbin/virtlogd', '/run/virtlogd.pid'],
    ['/usr/sbin/libvirtd', '/run/libvirtd.pid'],
  ]) {
    if (daemonRunning(pidFile)) continue;
    execFileSync(bin, ['--daemon', '--pid-file', pidFile]);
    started.push(pidFile);
  }
  const deadline = Date.now() + 30000;
  while (!reachable()) {
    if (Date.now() > deadline) throw new Error('libvirtd did not answer virsh within 30 s');
    await new Promise((r) => setTimeout(r, 300));
  }
  return {
    stop() {
      for (const pidFile of started.reverse()) {
        try {
          process.kill(Number(fs.readFileSync(pidFile, 'utf8').trim()), 'SIGTERM');
        } catch {
          // already gone
        }
      }
    },
  };
}

const QEMU_CONF = '/etc/libvirt/qemu.conf';

/**
 * Sets qemu.conf keys (e.g. save_image_format = "zstd") for a libvirtd this process starts;
 * returns the undo, which puts the file back byte for byte. libvirtd reads qemu.conf only when
 * it starts, so one already running is refused.
 */
export function withQemuConf(settings: Record<string, string>): () => void {
  if (daemonRunning('/run/libvirtd.pid')) throw new Error(`libvirtd is running: stop it first (it must start with ${Object.keys(settings).join(', ')} set in ${QEMU_CONF})`);
  const original = fs.readFileSync(QEMU_CONF);
  const lines = Object.entries(settings).map(([k, v]) => `${k} = "${v}"`);
  fs.writeFileSync(QEMU_CONF, Buffer.concat([original, Buffer.from(`\n# iohelper bench (removed afterwards)\n${lines.join('\n')}\n`)]));
  return () => fs.writeFileSync(QEMU_CONF, original);
}

/** libvirtd's pid, when it runs. */
export function libvirtdPid(): number | undefined {
  try {
    const pid = Number(fs.readFileSync('/run/libvirtd.pid', 'utf8').trim());
    process.kill(pid, 0);
    return pid;
  } catch {
    return undefined;
  }
}

/** libvirt's default memory_backing_dir, where file-backed guest RAM lives (<id>-<name>/pc.ram). */
const MEMORY_BACKING_DIR = '/var/lib/libvirt/qemu/ram';

/** The running domain's RAM file in libvirt's memory_backing_dir. */
export function domainRamFile(name: string): string {
  const id = virsh('domid', name).trim();
  return `${MEMORY_BACKING_DIR}/${id}-${name}/pc.ram`;
}

/**
 * Puts a tmpfs over libvirt's memory_backing_dir unless it is one already: on the root disk
 * (the packaged default) every guest page written during a restore goes to disk, which measures
 * the disk's writeback, not the helper. Hosts that back guest RAM with files use tmpfs or
 * hugetlbfs. Returns the undo.
 */
export function memoryBackingOnTmpfs(): () => void {
  const type = execFileSync('stat', ['-f', '-c', '%T', MEMORY_BACKING_DIR], { encoding: 'utf8' }).trim();
  if (type === 'tmpfs') return () => undefined;
  const st = fs.statSync(MEMORY_BACKING_DIR);
  execFileSync('mount', ['-t', 'tmpfs', '-o', `mode=${(st.mode & 0o7777).toString(8)},uid=${st.uid},gid=${st.gid}`, 'iohelper-ram', MEMORY_BACKING_DIR]);
  return () => execFileSync('umount', ['-l', MEMORY_BACKING_DIR]);
}
