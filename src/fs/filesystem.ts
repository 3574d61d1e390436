/**
 * What a RAM file's filesystem is: hugetlbfs (its page size is its block size, it has no
 * write(), and its free space is bounded by the kernel's pool of unreserved huge pages)
 * or an ordinary one (4 KiB pages).
 */
import * as fs from 'fs';

const HUGETLBFS_MAGIC = 0x958458f6;
const PAGE_SIZE = 4096;

export interface FilesystemInfo {
  huge: boolean;
  pageSize: number;
  /** Bytes a new file may still allocate there (Infinity: not bounded by the filesystem itself). */
  free: number;
}

/** `where`: a path on the filesystem, or `/proc/self/fd/N` for an open file. */
export function filesystemOf(where: string): FilesystemInfo {
  const st = fs.statfsSync(where);
  const huge = st.type === HUGETLBFS_MAGIC;
  let free = st.blocks === 0 ? Infinity : st.bavail * st.bsize;
  // A file on hugetlbfs also draws on the kernel's pool of free huge pages that no mapping has
  // reserved, whatever the mount's own size= says (without size= it has no size of its own):
  // a mapping beyond that pool fails with a bare ENOMEM.
  if (huge) free = Math.min(free, freeHugePages(st.bsize));
  return { huge, pageSize: huge ? st.bsize : PAGE_SIZE, free };
}

function freeHugePages(pageSize: number): number {
  const dir = `/sys/kernel/mm/hugepages/hugepages-${pageSize / 1024}kB`;
  try {
    const n = (f: string) => Number(fs.readFileSync(`${dir}/${f}`, 'utf8'));
    return Math.max(0, n('free_hugepages') - n('resv_hugepages')) * pageSize;
  } catch {
    return Infinity;
  }
}
