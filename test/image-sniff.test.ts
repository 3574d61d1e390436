/** sniffImage: iohelper images, libvirt save images (complete and partial), raw QEMU streams. */
import fc from 'fast-check';
import { encodeHeader, planLayout } from '../src/image/format';
import { SNIFF_BYTES, sniffImage } from '../src/image/format/sniff';

/** A libvirt save header as qemu_saveimage.c writes it on x86 (little-endian), 92 bytes. */
function libvirtHeader(magic: string, f: { version: number; xmlLength: number; wasRunning: number; format: number; cookieOffset: number }): Buffer {
  const b = Buffer.alloc(92);
  b.write(magic, 0, 'latin1');
  b.writeUInt32LE(f.version, 16);
  b.writeUInt32LE(f.xmlLength, 20);
  b.writeUInt32LE(f.wasRunning, 24);
  b.writeUInt32LE(f.format, 28);
  b.writeUInt32LE(f.cookieOffset, 32);
  return b;
}

/** The first bytes QEMU sends on a migration stream: QEVM, version 3, then a section. */
const qemuStream = Buffer.from([0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3, 0x07, 0, 0, 0, 0x0a]);

test('SNIFF_BYTES covers the whole libvirt header', () => {
  expect(SNIFF_BYTES).toBe(92);
});

test('an iohelper image header, committed or not', () => {
  const { header } = planLayout({ blocks: [{ name: 'pc.ram', size: 1 << 20 }], pageSize: 4096, alignment: 1 << 20, chunkSize: 8 << 20, checksums: true, creator: 'test' });
  expect(sniffImage(encodeHeader(header).subarray(0, SNIFF_BYTES))).toEqual({ kind: 'iohelper' });
  expect(sniffImage(Buffer.from('IOHIMG01'))).toEqual({ kind: 'iohelper' });
});

test('a complete libvirt save image (version 2, running, zstd, cookie)', () => {
  const b = Buffer.concat([libvirtHeader('LibvirtQemudSave', { version: 2, xmlLength: 4321, wasRunning: 1, format: 5, cookieOffset: 4000 }), Buffer.from('<domain')]);
  expect(sniffImage(b)).toEqual({ kind: 'libvirt', complete: true, version: 2, xmlLength: 4321, wasRunning: true, format: 5, cookieOffset: 4000 });
});

test('a partial libvirt save image (LibvirtQemudPart: libvirt has not finished writing it)', () => {
  const b = libvirtHeader('LibvirtQemudPart', { version: 2, xmlLength: 1234, wasRunning: 0, format: 0, cookieOffset: 0 });
  expect(sniffImage(b)).toEqual({ kind: 'libvirt', complete: false, version: 2, xmlLength: 1234, wasRunning: false, format: 0, cookieOffset: 0 });
});

test('a libvirt magic with fewer than 92 header bytes is not recognised', () => {
  const b = libvirtHeader('LibvirtQemudSave', { version: 2, xmlLength: 1, wasRunning: 1, format: 0, cookieOffset: 0 });
  expect(sniffImage(b.subarray(0, 91))).toEqual({ kind: 'unknown' });
});

test('a raw QEMU migration stream (QEVM, big-endian version)', () => {
  expect(sniffImage(qemuStream)).toEqual({ kind: 'qemu-stream', version: 3 });
  expect(sniffImage(qemuStream.subarray(0, 8))).toEqual({ kind: 'qemu-stream', version: 3 });
  expect(sniffImage(qemuStream.subarray(0, 7))).toEqual({ kind: 'unknown' });
});

test('a view into a larger buffer is read from its own start', () => {
  const backing = Buffer.concat([Buffer.from('junk'), qemuStream]);
  expect(sniffImage(new Uint8Array(backing.buffer, backing.byteOffset + 4, qemuStream.length))).toEqual({ kind: 'qemu-stream', version: 3 });
});

test.each([
  ['empty', Buffer.alloc(0)],
  ['zeros', Buffer.alloc(4096)],
  ['a near miss of our magic', Buffer.from('IOHIMG0')],
  ['little-endian QEVM', Buffer.from('MVEQ\x03\0\0\0', 'latin1')],
  ['a lower-case libvirt magic', libvirtHeader('libvirtQemudSave', { version: 2, xmlLength: 1, wasRunning: 0, format: 0, cookieOffset: 0 })],
])('unknown: %s', (_what, b) => {
  expect(sniffImage(b)).toEqual({ kind: 'unknown' });
});

test('any bytes: never throws, always one of the four kinds', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
      expect(['iohelper', 'libvirt', 'qemu-stream', 'unknown']).toContain(sniffImage(bytes).kind);
    }),
    { numRuns: 1000 },
  );
});
