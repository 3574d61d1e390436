/**
 * Is a device-state stream a complete QEMU migration stream? A QEMU that dies mid-migration
 * just closes the pipe, which looks like a normal end of stream. A complete stream starts with
 * `QEVM` and ends with QEMU's vmdesc section: byte 0x06, be32 length, that many bytes of JSON
 * reaching exactly to the end. A cut stream does not end that way.
 */
import * as fs from 'fs';
import { ImageFormatError } from './format';
import { readAligned } from './aligned-io';

/** be32 at the start of every QEMU migration stream: 'QEVM'. */
export const QEVM = 0x5145564d;
const VMDESC = 0x06;
/** The vmdesc JSON of very large VMs stays well below this. */
const TAIL = 16 << 20;

/** `fd` may be write-only: the image is reopened for reading through /proc/self/fd. */
export function checkQemuStream(imageFd: number, offset: number, length: number, name: string): void {
  const fd = fs.openSync(`/proc/self/fd/${imageFd}`, fs.constants.O_RDONLY);
  try {
    check(fd, offset, length, name);
  } finally {
    fs.closeSync(fd);
  }
}

function check(fd: number, offset: number, length: number, name: string): void {
  const incomplete = (why: string) =>
    new ImageFormatError('EIMG_TRUNCATED', `${name}: the device-state stream from QEMU is incomplete (${why}); did QEMU stop mid-migration? The image is left uncommitted`);
  if (length < 8) throw incomplete(`${length} bytes`);
  const head = Buffer.from(readAligned(fd, offset, 8, name));
  if (head.readUInt32BE(0) !== QEVM) throw incomplete('it does not start with QEVM');
  const tailLen = Math.min(length, TAIL);
  const tail = Buffer.from(readAligned(fd, offset + length - tailLen, tailLen, name));
  for (let p = tail.length - 6; p >= 0; p--) {
    if (tail[p] === VMDESC && tail[p + 5] === 0x7b /* { */ && tail.readUInt32BE(p + 1) === tail.length - p - 5) return;
  }
  throw incomplete('no vmdesc section at its end');
}
