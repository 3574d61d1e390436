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

/** A reply of the wrong shape: QEMU never sends these, a hostile or broken peer might. */
function badReply(what: string, value: unknown): Error {
  const err = new Error(`QMP ${what}: unexpected reply ${JSON.stringify(value)?.slice(0, 200)}`) as Error & { code: string };
  err.code = 'EQMP_PROTOCOL';
  return err;
}

const MAX_OBJECTS = 100_000;

export async function listMemoryBackends(qmp: QmpClient): Promise<MemoryBackend[]> {
  const objects: unknown = await qmp.execute('qom-list', { path: '/objects' });
  if (!Array.isArray(objects) || objects.length > MAX_OBJECTS) throw badReply('qom-list /objects', objects);
  const out: MemoryBackend[] = [];
  for (const o of objects) {
    if (!o || typeof o !== 'object' || typeof o.name !== 'string' || typeof o.type !== 'string') throw badReply('qom-list /objects', o);
    const m = /^child<(memory-backend-[a-z-]+)>$/.exec(o.type);
    if (!m) continue;
    const at = `/objects/${o.name}`;
    const get = async (property: string, type: 'number' | 'boolean' | 'string') => {
      const v: unknown = await qmp.execute('qom-get', { path: at, property });
      if (typeof v !== type || (type === 'number' && !(Number.isSafeInteger(v) && (v as number) >= 0))) throw badReply(`qom-get ${at} ${property}`, v);
      return v;
    };
    const backend: MemoryBackend = { id: o.name, type: m[1], size: (await get('size', 'number')) as number, share: (await get('share', 'boolean')) as boolean };
    if (m[1] === 'memory-backend-file') backend.memPath = (await get('mem-path', 'string')) as string;
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
