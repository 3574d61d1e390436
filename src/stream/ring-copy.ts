/**
 * The native overlapped copy between a pipe and a file at an offset (native/stream_copy.cc), as
 * both stream forms use it: the libvirt-style stream copy (./copy.ts) and an image's device
 * state (src/image/device-state.ts). Never holds the stream in memory: a ring of `inflight + 2`
 * buffers of `bufferSize` bytes.
 */
import { systemError } from '../errors';
import { native, StreamCopyOptions } from '../native';

/** Pipe buffer asked for (the kernel may refuse: the copy works either way). */
const PIPE_SIZE = 1024 * 1024;

/** The native copy's options, with the ring given as I/Os in flight (it holds `inflight + 2` buffers). */
export interface RingCopy extends Omit<StreamCopyOptions, 'threads' | 'slots'> {
  inflight: number;
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
  const { inflight, progress, ...options } = o;
  const r = await native.streamCopy({ ...options, threads: inflight, slots: inflight + 2 }, progress);
  // An addon built before the copy reported its CRC would have a save record a wrong one.
  if (typeof r.crc !== 'number') throw systemError('ENOTSUP', 'the native addon is older than this iohelper (its stream copy reports no CRC-32C): rebuild it (npm run build:native)');
  return { bytes: r.bytes, crc: r.crc };
}
