/**
 * Which guest RAM a running QEMU has: its memory backends read over QMP (qom-list /objects,
 * qom-get). The parallel path needs every RAM backend to be a shared, named file.
 */
import { QmpClient } from '../qmp/client';

export interface MemoryBackend {
  id: string;
  type: string;
  size: number;
  memPath?: string;
  share: boolean;
}

export async function listMemoryBackends(qmp: QmpClient): Promise<MemoryBackend[]> {
  const objects: Array<{ name: string; type: string }> = await qmp.execute('qom-list', { path: '/objects' });
  const out: MemoryBackend[] = [];
  for (const o of objects) {
    const m = /^child<(memory-backend-[a-z-]+)>$/.exec(o.type);
    if (!m) continue;
    const at = `/objects/${o.name}`;
    const get = (property: string) => qmp.execute('qom-get', { path: at, property });
    const backend: MemoryBackend = { id: o.name, type: m[1], size: Number(await get('size')), share: Boolean(await get('share')) };
    if (m[1] === 'memory-backend-file') backend.memPath = String(await get('mem-path'));
    out.push(backend);
  }
  return out;
}

/** The RAM files to copy, or an error that says exactly which -object options are needed. */
export function sharedRamFiles(backends: MemoryBackend[]): Array<{ name: string; path: string; size: number }> {
  if (backends.length === 0) {
    throw new Error(
      'QEMU has no memory backend object: start it with ' +
        '-object memory-backend-file,id=ram0,size=SIZE,mem-path=/dev/shm/NAME,share=on -machine memory-backend=ram0 ' +
        '(or use the classic stream path, which works with any RAM)',
    );
  }
  const bad = backends.filter((b) => b.type !== 'memory-backend-file' || !b.share || !b.memPath);
  if (bad.length) {
    const list = bad.map((b) => `${b.id} (${b.type}${b.type === 'memory-backend-file' ? `, share=${b.share ? 'on' : 'off'}` : ''})`).join(', ');
    throw new Error(
      `guest RAM must be shared files for the parallel path; not so: ${list}. Use ` +
        `-object memory-backend-file,id=ID,size=SIZE,mem-path=/dev/shm/NAME,share=on ` +
        '(tmpfs or hugetlbfs; memory-backend-memfd is not skipped by x-ignore-shared), or the classic stream path',
    );
  }
  return backends.map((b) => ({ name: b.id, path: b.memPath!, size: b.size }));
}
