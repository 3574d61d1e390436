/**
 * The native overlapped copy between a pipe and a file at an offset (native/stream_copy.cc), as
 * both stream forms use it: the libvirt-style stream copy (./copy.ts) and an image's device
 * state (src/image/device-state.ts). Never holds the stream in memory: a ring of `inflight + 2`
 * buffers of `bufferSize` bytes.
 */
import { systemError } from '../errors';
import { native } from '../native';

/** Pipe buffer asked for (the kernel may refuse: the copy works either way). */
const PIPE_SIZE = 1024 * 1024;

export interface RingCopy {
  toFile: boolean;
  pipeFd: number;
  fileFd: number;
  /** File offset of the first byte; aligned when the file is O_DIRECT. */
  offset: number;
  bufferSize: number;
  align: number;
  /** File I/Os in flight at once. */
  inflight: number;
  /** O_DIRECT: pad the last partial buffer to `align` (the caller truncates afterwards). */
  padTail: boolean;
  /** Buffered fallback: write back and drop each range from the page cache. */
  dropCache: boolean;
  /** [0] counts bytes moved; set [1] = 1n to cancel. */
  progress: BigUint64Array;
}

/** Returns the bytes moved and their CRC-32C, in stream order. */
export async function ringCopy(o: RingCopy): Promise<{ bytes: number; crc: number }> {
  try {
    native.setPipeSize(o.pipeFd, PIPE_SIZE);
  } catch {
    // Not a pipe (socket, file) or over the limit: the copy works either way.
  }
  const r = await native.streamCopy(
    {
      toFile: o.toFile,
      pipeFd: o.pipeFd,
      fileFd: o.fileFd,
      offset: o.offset,
      bufferSize: o.bufferSize,
      align: o.align,
      threads: o.inflight,
      slots: o.inflight + 2,
      padTail: o.padTail,
      dropCache: o.dropCache,
    },
    o.progress,
  );
  // An addon built before the copy reported its CRC would have a save record a wrong one.
  if (typeof r.crc !== 'number') throw systemError('ENOTSUP', 'the native addon is older than this iohelper (its stream copy reports no CRC-32C): rebuild it (npm run build:native)');
  return { bytes: r.bytes, crc: r.crc };
}
