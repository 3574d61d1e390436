/**
 * Records the working set of a lazily restored (or cloned) guest: which pages of the image its
 * QEMU has touched through its private mapping of the image, in first-touch order, sampled from
 * /proc/PID/pagemap (present or swapped pages) every `intervalMs` for `seconds`. Page-table
 * presence, unlike page-cache residency, says what this guest touched even when the image was
 * already cached, and never counts the kernel's readahead around a fault (with a cached image the
kernel's fault-around maps up to 64 KiB of neighbours per fault, which then count as touched). The result is written
 * beside the image as IMAGE.ws (docs/FORMAT.md, "Working-set file"), atomically.
 */
import * as fs from 'fs';
import { systemError } from '../../errors';
import { writeFileAtomic } from '../../fs/atomic-file';
import { openFile } from '../../fs/open-file';
import { readImageMetadata } from '../../image/io/read-image';
import { encodeWorkingSet, MAX_WS_RANGES, workingSetPath, WorkingSet } from './working-set';

const PAGE = 4096;
const PRESENT = 1n << 63n;
const SWAPPED = 1n << 62n;
/** pagemap entries read per pread (8 bytes each: 1 MiB, 512 MiB of guest RAM). */
const ENTRIES_PER_READ = 128 * 1024;

export interface RecordOptions {
  /** The QEMU that maps the image. */
  pid: number;
  image: string;
  seconds: number;
  intervalMs?: number;
  signal?: AbortSignal;
}

export interface RecordResult {
  file: string;
  ranges: number;
  bytes: number;
  /** Set when the window ended early (QEMU exited, the range limit was reached). */
  note?: string;
}

interface MappedBlock {
  /** The block's file offset in the image and size. */
  offset: number;
  size: number;
  /** Where QEMU mapped it. */
  address: bigint;
  seen: Uint8Array;
}

/** The image's RAM blocks as QEMU mapped them (mem-path=IMAGE,offset=…): from /proc/PID/maps. */
function mappedBlocks(pid: number, image: string, entries: Array<{ offset: number; size: number }>): MappedBlock[] {
  const real = fs.realpathSync(image);
  const lines = fs.readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n');
  const maps = lines
    .map((l) => /^([0-9a-f]+)-([0-9a-f]+) \S+ ([0-9a-f]+) \S+ \d+\s+(.*)$/.exec(l))
    .filter((m): m is RegExpExecArray => !!m && m[4] === real)
    .map((m) => ({ start: BigInt(`0x${m[1]}`), end: BigInt(`0x${m[2]}`), offset: Number(BigInt(`0x${m[3]}`)) }));
  return entries.map((e) => {
    const m = maps.find((x) => x.offset === e.offset && x.end - x.start >= BigInt(e.size));
    if (!m) throw systemError('ENOENT', `QEMU (pid ${pid}) does not map ${image} at offset ${e.offset}: it is not a clone or lazy restore of this image`, { path: image });
    return { offset: e.offset, size: e.size, address: m.start, seen: new Uint8Array(e.size / PAGE) };
  });
}

class QemuGone extends Error {}

/** One pass over every block: the pages that became present since the last pass, as ranges in address order. */
function newlyTouched(fd: number, blocks: MappedBlock[]): Array<{ offset: number; length: number }> {
  const out: Array<{ offset: number; length: number }> = [];
  const buf = Buffer.alloc(ENTRIES_PER_READ * 8);
  for (const b of blocks) {
    const pages = b.seen.length;
    let run: { offset: number; length: number } | undefined;
    for (let first = 0; first < pages; first += ENTRIES_PER_READ) {
      const n = Math.min(ENTRIES_PER_READ, pages - first);
      const got = fs.readSync(fd, buf, 0, n * 8, Number((b.address / BigInt(PAGE) + BigInt(first)) * 8n));
      // An exited QEMU (or a zombie) has no mappings left: its pagemap reads as empty.
      if (got === 0) throw new QemuGone();
      for (let i = 0; i < got / 8; i++) {
        const page = first + i;
        const v = buf.readBigUInt64LE(i * 8);
        if (b.seen[page] || !(v & (PRESENT | SWAPPED))) {
          run = undefined;
          continue;
        }
        b.seen[page] = 1;
        if (run && run.offset + run.length === b.offset + page * PAGE) run.length += PAGE;
        else out.push((run = { offset: b.offset + page * PAGE, length: PAGE }));
      }
    }
  }
  return out;
}

export async function recordWorkingSet(o: RecordOptions): Promise<RecordResult> {
  const fdImage = openFile(o.image, fs.constants.O_RDONLY);
  let meta;
  try {
    meta = readImageMetadata(fdImage, o.image, { skipChecksums: true });
  } finally {
    fs.closeSync(fdImage);
  }
  const blocks = mappedBlocks(o.pid, o.image, meta.entries);
  const pagemap = fs.openSync(`/proc/${o.pid}/pagemap`, 'r');
  const ranges: WorkingSet['ranges'] = [];
  let note: string | undefined;
  const t0 = Date.now();
  try {
    for (;;) {
      let fresh: WorkingSet['ranges'];
      try {
        fresh = newlyTouched(pagemap, blocks);
      } catch (e) {
        if (e instanceof QemuGone || !fs.existsSync(`/proc/${o.pid}`)) {
          note = `QEMU (pid ${o.pid}) exited after ${((Date.now() - t0) / 1000).toFixed(1)} s`;
          break;
        }
        throw e;
      }
      if (ranges.length + fresh.length > MAX_WS_RANGES) {
        note = `stopped at ${MAX_WS_RANGES} ranges, the most a working-set file holds`;
        break;
      }
      ranges.push(...fresh);
      if (Date.now() - t0 >= o.seconds * 1000 || o.signal?.aborted) break;
      await new Promise((r) => setTimeout(r, o.intervalMs ?? 100));
    }
  } finally {
    fs.closeSync(pagemap);
  }
  const file = workingSetPath(o.image);
  const bytes = encodeWorkingSet({ imageSize: meta.header.imageSize, imageHeaderCrc: meta.headerCrc, recordedMs: Date.now(), windowMs: Date.now() - t0, ranges });
  // 0600 like the image: it is a record of which guest pages were read, and when.
  writeFileAtomic(file, bytes, 0o600);
  return { file, ranges: ranges.length, bytes: ranges.reduce((n, r) => n + r.length, 0), note };
}
