/**
 * What kind of file starts with these bytes: an iohelper image, a libvirt save image or a raw
 * QEMU migration stream (docs/FORMAT.md, "Other files inspect recognises"). Looks at the magic
 * and the fixed header fields only; an iohelper image is validated by decodeHeader.
 */
import { MAGIC as IOHELPER_MAGIC } from './format';
import { QEVM as QEMU_MAGIC } from './qemu-stream-check';

/** Bytes to read from the start of a file for sniffImage: the whole libvirt header. */
export const SNIFF_BYTES = 92;

const LIBVIRT_COMPLETE = 'LibvirtQemudSave';
const LIBVIRT_PARTIAL = 'LibvirtQemudPart';
const LIBVIRT_HEADER_SIZE = 92;

export type SniffResult =
  | { kind: 'iohelper' }
  | {
      kind: 'libvirt';
      /** false: `LibvirtQemudPart`, libvirt has not finished writing it. */
      complete: boolean;
      version: number;
      /** Length of the domain XML after the header. */
      xmlLength: number;
      wasRunning: boolean;
      /** 0 raw, 1 gzip, 2 bzip2, 3 xz, 4 lzop, 5 zstd. */
      format: number;
      /** Version 2 only (0 in version 1). */
      cookieOffset: number;
    }
  | { kind: 'qemu-stream'; version: number }
  | { kind: 'unknown' };

/**
 * Classifies a file by its first bytes (pass at least SNIFF_BYTES when the file has them). A
 * libvirt header is read in little-endian, libvirt's byte order on x86; a libvirt magic with
 * fewer than 92 bytes after it is 'unknown'.
 */
export function sniffImage(first: Uint8Array): SniffResult {
  const b = Buffer.from(first.buffer, first.byteOffset, first.byteLength);
  if (b.length >= 8 && b.toString('latin1', 0, 8) === IOHELPER_MAGIC) return { kind: 'iohelper' };
  const libvirtMagic = b.length >= LIBVIRT_HEADER_SIZE ? b.toString('latin1', 0, 16) : '';
  if (libvirtMagic === LIBVIRT_COMPLETE || libvirtMagic === LIBVIRT_PARTIAL) {
    return {
      kind: 'libvirt',
      complete: libvirtMagic === LIBVIRT_COMPLETE,
      version: b.readUInt32LE(16),
      xmlLength: b.readUInt32LE(20),
      wasRunning: b.readUInt32LE(24) !== 0,
      format: b.readUInt32LE(28),
      cookieOffset: b.readUInt32LE(32),
    };
  }
  if (b.length >= 8 && b.readUInt32BE(0) === QEMU_MAGIC) return { kind: 'qemu-stream', version: b.readUInt32BE(4) };
  return { kind: 'unknown' };
}
