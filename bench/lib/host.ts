/** Facts about the bench host, and cache dropping between runs. */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';

export function describeHost(dir: string): string {
  const fsType = (() => {
    try {
      return execFileSync('stat', ['-f', '-c', '%T', dir], { encoding: 'utf8' }).trim();
    } catch {
      return 'unknown';
    }
  })();
  const cpu = os.cpus()[0]?.model ?? 'unknown cpu';
  return `${os.cpus().length} × ${cpu}, ${Math.round(os.totalmem() / 2 ** 30)} GiB RAM, Linux ${os.release()}, ${dir} on ${fsType}, node ${process.version}`;
}

let warned = false;
/** Drops the page cache (root only); says once when it cannot. */
export function dropCaches(): boolean {
  try {
    execFileSync('sync');
    fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
    return true;
  } catch {
    if (!warned) console.error('bench: cannot drop caches (not root?): cached runs may look faster');
    warned = true;
    return false;
  }
}

export function commandExists(path: string): boolean {
  try {
    fs.accessSync(path, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

let qemuFiles: string[] | undefined;
/**
 * Reads QEMU's binary, its shared libraries and firmware (and `extra` files, e.g. a guest
 * kernel) into the page cache: after dropCaches, as on a host that restores VMs, where QEMU is
 * cached and only the image is cold. On a throttled disk a cold QEMU would otherwise queue its
 * page faults behind the restore's reads and miss its QMP start deadline.
 */
export function warmQemu(extra: string[] = []): void {
  if (!qemuFiles) {
    const bin = execFileSync('sh', ['-c', 'command -v qemu-system-x86_64'], { encoding: 'utf8' }).trim();
    const libs = execFileSync('ldd', [bin], { encoding: 'utf8' }).split('\n').map((l) => /=> (\/\S+)/.exec(l)?.[1]).filter((x): x is string => !!x);
    const firmware = ['/usr/share/qemu', '/usr/share/seabios'].filter((d) => fs.existsSync(d)).flatMap((d) => fs.readdirSync(d, { withFileTypes: true }).filter((e) => e.isFile()).map((e) => `${d}/${e.name}`));
    qemuFiles = [bin, ...libs, ...firmware];
  }
  for (const f of [...qemuFiles, ...extra]) {
    try {
      fs.readFileSync(f);
    } catch {
      // gone or unreadable: QEMU will say so itself
    }
  }
}
