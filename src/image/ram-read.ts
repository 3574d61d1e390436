/**
 * How a save reads each guest RAM file (native/ram_reader.h): through a mapping (no copy; each
 * page's first touch builds its page table entry) or by pread into a buffer each worker keeps
 * (a kernel copy; no page table). Which costs less is the host's matter: a fault is dear under
 * some hypervisors' MMUs and cheap on bare metal, a copy is a memcpy everywhere. So `auto`
 * measures rather than believes: hugetlbfs is mapped (one fault maps a huge page), any other
 * file is sampled once per save, both ways, in this thread's CPU time (bench/RESULTS.md, "RAM
 * read path", has the figures of the dev box).
 */
import { onPath } from '../errors';
import { native } from '../native';
import { RamReadMode } from '../util/limits';
import { OpenRam } from './ram-files';

/** The sample: the first 4 MiB of the file's first data extent (~1 ms each way, three tries). */
const SAMPLE_BYTES = 4 * 2 ** 20;
const PAGE = 4096;

export type RamReadPath = 'pread' | 'mmap';

/** The path a save reads `ram` by: `mode` when it names one, else the cheaper one measured. */
export function chooseRamRead(ram: OpenRam, mode: RamReadMode): RamReadPath {
  if (mode !== 'auto') return mode;
  if (ram.pageSize > PAGE) return 'mmap';
  return onPath(ram.label, () => {
    const start = native.lseek(ram.fd, 0, native.constants.SEEK_DATA);
    if (start < 0) return 'mmap'; // all hole: nothing is read either way
    const end = native.lseek(ram.fd, start, native.constants.SEEK_HOLE);
    const length = Math.min(SAMPLE_BYTES, Math.floor(((end < 0 ? ram.size : end) - start) / PAGE) * PAGE);
    if (length < PAGE) return 'mmap';
    const cost = native.ramReadCost(ram.fd, start, length);
    return cost.mmapNs <= cost.preadNs ? 'mmap' : 'pread';
  });
}
