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
