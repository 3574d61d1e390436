/**
 * The device-state region: QEMU's x-ignore-shared migration stream, streamed between a pipe and
 * its place at the end of the image by the native copy loop (never held in memory).
 */
import { DEFAULT_BUFFER_SIZE, DEFAULT_INFLIGHT } from '../stream/copy';
import { ringCopy } from '../stream/ring-copy';
import { native } from '../native';
import { readAligned } from './aligned-io';
import { FLAG_DEVICE_STATE_CRC, ImageFormatError, ImageHeader } from './format';
import { hex } from '../util/numbers';

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
  return (await streamDeviceState(o)).bytes;
}

/** copyDeviceState, also returning the CRC-32C of the stream's bytes (computed by the copy, in stream order). */
export async function streamDeviceState(o: DeviceStateCopy): Promise<{ bytes: number; crc: number }> {
  // The stream copy's own defaults (src/stream/copy.ts): 1 MiB buffers, 2 in flight.
  return ringCopy({ toFile: o.toImage, pipeFd: o.pipeFd, fileFd: o.imageFd, offset: o.offset, bufferSize: DEFAULT_BUFFER_SIZE, align: o.align, inflight: DEFAULT_INFLIGHT, padTail: o.direct, dropCache: false, progress: o.progress });
}

/** Pieces in which the device state is read back to be checked: its length is bounded only by the format (2^48). */
const CHECK_PIECE = 4 << 20;

/** CRC-32C of the image's device state, read in bounded pieces (works on an O_DIRECT fd). */
export function deviceStateCrc(fd: number, h: ImageHeader, name: string): number {
  let crc = 0;
  for (let at = 0; at < h.deviceStateLength; at += CHECK_PIECE) {
    const want = Math.min(CHECK_PIECE, h.deviceStateLength - at);
    const piece = readAligned(fd, h.deviceStateOffset + at, want, name);
    if (piece.length < want) throw new ImageFormatError('EIMG_TRUNCATED', `${name}: the device state ends at ${h.deviceStateOffset + at + piece.length}, the header says ${h.imageSize}`);
    crc = native.crc32c(piece, crc);
  }
  return crc;
}

/**
 * Refuses (EIMG_CHECKSUM) an image whose device state differs from the CRC-32C its header
 * records, before any of it reaches QEMU, which would load whatever it is given. An image
 * without the CRC (saved before it existed) passes: there is nothing to check against.
 */
export function checkDeviceState(fd: number, h: ImageHeader, name: string): void {
  if (!(h.flags & FLAG_DEVICE_STATE_CRC)) return;
  const crc = deviceStateCrc(fd, h, name);
  if (crc !== h.deviceStateCrc) {
    throw new ImageFormatError('EIMG_CHECKSUM', `${name}: corrupted: the device state (${h.deviceStateLength} bytes at ${h.deviceStateOffset}) has CRC-32C ${hex(crc)}, the image recorded ${hex(h.deviceStateCrc)}`);
  }
}
