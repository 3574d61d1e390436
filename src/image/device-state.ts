/**
 * The device-state region: QEMU's x-ignore-shared migration stream, streamed between a pipe and
 * its place at the end of the image by the native copy loop (never held in memory).
 */
import { native } from '../native';

export interface DeviceStateCopy {
  toImage: boolean;
  pipeFd: number;
  imageFd: number;
  offset: number;
  direct: boolean;
  align: number;
  progress: BigUint64Array;
}

/** Returns the stream's length in bytes. Saving pads the tail to `align`; the caller truncates. */
export async function copyDeviceState(o: DeviceStateCopy): Promise<number> {
  try {
    native.setPipeSize(o.pipeFd, 1 << 20);
  } catch {
    // not a pipe, or over the limit: fine either way
  }
  const r = await native.streamCopy(
    {
      toFile: o.toImage,
      pipeFd: o.pipeFd,
      fileFd: o.imageFd,
      offset: o.offset,
      bufferSize: 1 << 20,
      align: o.align,
      threads: 2,
      slots: 4,
      padTail: o.direct,
      dropCache: false,
    },
    o.progress,
  );
  return r.bytes;
}
