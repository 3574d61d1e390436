/** The image codec (docs/FORMAT.md): round trips, every rule a reader enforces, and fuzzing. */
import fc from 'fast-check';
import {
  BlockEntry,
  decodeBlockTable,
  decodeChecksums,
  decodeHeader,
  encodeBlockTable,
  encodeChecksums,
  encodeHeader,
  ENTRY_SIZE,
  HEADER_SIZE,
  ImageFormatError,
  ImageHeader,
  planLayout,
} from '../src/image/format';
import { native } from '../src/native';

const M = 1024 * 1024;

function committed(blocks = [{ name: 'ram0', size: 64 * M }, { name: 'ram1', size: 8 * M }], deviceState = 12345): { h: ImageHeader; entries: BlockEntry[] } {
  const { header, entries } = planLayout({ blocks, pageSize: 4096, alignment: M, chunkSize: 8 * M, checksums: true, creator: 'test' });
  header.deviceStateLength = deviceState;
  header.imageSize = header.deviceStateOffset + deviceState;
  header.committed = true;
  header.tableCrc = native.crc32c(encodeBlockTable(entries));
  return { h: header, entries };
}

function expectCode(fn: () => unknown, code: string, mention?: RegExp): void {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ImageFormatError);
    expect((e as ImageFormatError).code).toBe(code);
    if (mention) expect((e as Error).message).toMatch(mention);
    return;
  }
  throw new Error(`expected ${code}, nothing was thrown`);
}

/** Re-encodes a header after `edit`, keeping its CRC valid unless told otherwise. */
function headerWith(edit: (b: Buffer) => void, fixCrc = true): Buffer {
  const { h } = committed();
  const b = encodeHeader(h);
  edit(b);
  if (fixCrc) b.writeUInt32LE(native.crc32c(b.subarray(0, HEADER_SIZE - 4)), HEADER_SIZE - 4);
  return b;
}

function tableWith(edit: (b: Buffer, h: ImageHeader) => void): { table: Buffer; h: ImageHeader } {
  const { h, entries } = committed();
  const table = encodeBlockTable(entries);
  edit(table, h);
  h.tableCrc = native.crc32c(table);
  return { table, h };
}

describe('round trip', () => {
  test('header, table and checksums decode to what was encoded', () => {
    const { h, entries } = committed();
    const back = decodeHeader(encodeHeader(h), h.imageSize);
    expect(back).toEqual(h);
    expect(decodeBlockTable(encodeBlockTable(entries), back)).toEqual(entries);
    const sums = Uint32Array.from([1, 0xffffffff, 42]);
    expect(decodeChecksums(encodeChecksums(sums), 3)).toEqual(sums);
  });

  test('layout: blocks aligned, after the metadata, device state after the last block', () => {
    const { h, entries } = committed();
    expect(entries[0].offset % M).toBe(0);
    expect(entries[1].offset).toBeGreaterThanOrEqual(entries[0].offset + entries[0].size);
    expect(entries[0].checksumOffset).toBeGreaterThanOrEqual(HEADER_SIZE + 2 * ENTRY_SIZE);
    expect(h.deviceStateOffset).toBeGreaterThanOrEqual(entries[1].offset + entries[1].size);
  });

  test('CRC-32C known value', () => {
    expect(native.crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
  });
});

describe('header rules', () => {
  const size = committed().h.imageSize;
  test.each([
    ['short file', () => decodeHeader(Buffer.alloc(100), 100), 'EIMG_TRUNCATED', /4096-byte header/],
    ['wrong magic', () => decodeHeader(headerWith((b) => b.write('NOTANIMG', 0)), size), 'EIMG_MAGIC', /magic/],
    ['unknown version', () => decodeHeader(headerWith((b) => b.writeUInt32LE(2, 8)), size), 'EIMG_VERSION', /version 2/],
    ['header CRC', () => decodeHeader(headerWith((b) => (b[100] ^= 1), false), size), 'EIMG_CHECKSUM', /header checksum/],
    ['headerSize', () => decodeHeader(headerWith((b) => b.writeUInt32LE(512, 16)), size), 'EIMG_VERSION', /headerSize/],
    ['unknown flags', () => decodeHeader(headerWith((b) => b.writeUInt32LE(3, 12)), size), 'EIMG_RESERVED', /flag/],
    ['bad state', () => decodeHeader(headerWith((b) => b.writeUInt32LE(7, 20)), size), 'EIMG_RESERVED', /state 7/],
    ['uncommitted', () => decodeHeader(headerWith((b) => b.writeUInt32LE(0, 20)), size), 'EIMG_UNCOMMITTED', /incomplete/],
    ['reserved bytes', () => decodeHeader(headerWith((b) => (b[2000] = 1)), size), 'EIMG_RESERVED', /reserved/],
    ['page size not a power of two', () => decodeHeader(headerWith((b) => b.writeUInt32LE(5000, 24)), size), 'EIMG_BOUNDS', /pageSize 5000/],
    ['page size too small', () => decodeHeader(headerWith((b) => b.writeUInt32LE(512, 24)), size), 'EIMG_BOUNDS', /pageSize 512/],
    ['alignment below page size', () => decodeHeader(headerWith((b) => (b.writeUInt32LE(2 * M, 24), b.writeUInt32LE(M, 28))), size), 'EIMG_BOUNDS', /alignment/],
    ['zero blocks', () => decodeHeader(headerWith((b) => b.writeUInt32LE(0, 32)), size), 'EIMG_BOUNDS', /blockCount 0/],
    ['too many blocks', () => decodeHeader(headerWith((b) => b.writeUInt32LE(5000, 32)), size), 'EIMG_BOUNDS', /blockCount 5000/],
    ['table offset', () => decodeHeader(headerWith((b) => b.writeBigUInt64LE(8192n, 40)), size), 'EIMG_BOUNDS', /tableOffset/],
    ['table length', () => decodeHeader(headerWith((b) => b.writeBigUInt64LE(1n, 48)), size), 'EIMG_BOUNDS', /tableLength/],
    ['u64 beyond 2^53', () => decodeHeader(headerWith((b) => b.writeBigUInt64LE(2n ** 63n, 56)), size), 'EIMG_BOUNDS', /deviceStateOffset/],
    ['device state unaligned', () => decodeHeader(headerWith((b) => b.writeBigUInt64LE(BigInt(M + 1), 56)), size), 'EIMG_BOUNDS', /deviceStateOffset/],
    ['device state length lies', () => decodeHeader(headerWith((b) => b.writeBigUInt64LE(10n, 64)), size), 'EIMG_BOUNDS', /imageSize/],
    ['device state over 2^48', () => decodeHeader(headerWith((b) => b.writeBigUInt64LE(2n ** 49n, 64)), size), 'EIMG_BOUNDS', /deviceStateLength/],
    ['file truncated', () => decodeHeader(headerWith(() => undefined), size - 1), 'EIMG_TRUNCATED', /truncated/],
    ['trailing bytes', () => decodeHeader(headerWith(() => undefined), size + 1), 'EIMG_BOUNDS', /more than/],
  ] as Array<[string, () => unknown, string, RegExp]>)('%s', (_n, fn, code, mention) => expectCode(fn, code, mention));

  test('an uncommitted header is readable when asked (inspect)', () => {
    const h = decodeHeader(headerWith((b) => b.writeUInt32LE(0, 20)), 1 << 30, { allowUncommitted: true });
    expect(h.committed).toBe(false);
  });
});

describe('block table rules', () => {
  const at = (i: number, field: number) => i * ENTRY_SIZE + field;
  test.each([
    ['empty name', (t: Buffer) => t.fill(0, 0, 256), 'EIMG_NAME', /empty/],
    ['unterminated name', (t: Buffer) => t.fill(0x41, 0, 256), 'EIMG_NAME', /NUL-terminated/],
    ['invalid UTF-8', (t: Buffer) => ((t[0] = 0xff), t), 'EIMG_NAME', /UTF-8/],
    ['duplicate names', (t: Buffer) => (t.write('ram0\0', ENTRY_SIZE), t), 'EIMG_NAME', /twice/],
    ['size zero', (t: Buffer) => (t.writeBigUInt64LE(0n, at(0, 256)), t), 'EIMG_BOUNDS', /size 0/],
    ['size not a page multiple', (t: Buffer) => (t.writeBigUInt64LE(4097n, at(0, 256)), t), 'EIMG_BOUNDS', /size 4097/],
    ['size over 2^50', (t: Buffer) => (t.writeBigUInt64LE(2n ** 51n, at(0, 256)), t), 'EIMG_BOUNDS', /size/],
    ['offset unaligned', (t: Buffer) => (t.writeBigUInt64LE(BigInt(M + 4096), at(0, 264)), t), 'EIMG_BOUNDS', /offset/],
    ['offset overflows 2^64 arithmetic', (t: Buffer) => (t.writeBigUInt64LE(2n ** 64n - BigInt(M), at(0, 264)), t), 'EIMG_BOUNDS', /offset/],
    ['block past the device state', (t: Buffer) => (t.writeBigUInt64LE(BigInt(512 * M), at(1, 264)), t), 'EIMG_BOUNDS', /past the device state/],
    ['blocks overlap', (t: Buffer) => (t.writeBigUInt64LE(t.readBigUInt64LE(at(0, 264)), at(1, 264)), t), 'EIMG_OVERLAP', /overlaps/],
    ['block over the metadata', (t: Buffer) => (t.writeBigUInt64LE(0n, at(0, 264)), t), 'EIMG_OVERLAP', /overlaps|metadata area/],
    ['chunk size', (t: Buffer) => (t.writeBigUInt64LE(3000n, at(0, 272)), t), 'EIMG_BOUNDS', /chunkSize/],
    ['checksum count', (t: Buffer) => (t.writeBigUInt64LE(3n, at(0, 288)), t), 'EIMG_BOUNDS', /checksumCount/],
    ['checksum table unaligned', (t: Buffer) => (t.writeBigUInt64LE(4100n, at(0, 280)), t), 'EIMG_BOUNDS', /checksumOffset/],
    ['checksum tables overlap', (t: Buffer) => (t.writeBigUInt64LE(t.readBigUInt64LE(at(0, 280)), at(1, 280)), t), 'EIMG_OVERLAP', /overlaps/],
    ['checksum table inside RAM', (t: Buffer) => (t.writeBigUInt64LE(t.readBigUInt64LE(at(0, 264)), at(0, 280)), t), 'EIMG_OVERLAP', /metadata area/],
    ['page size differs', (t: Buffer) => (t.writeUInt32LE(8192, at(0, 296)), t), 'EIMG_BOUNDS', /pageSize/],
    ['entry flags', (t: Buffer) => (t.writeUInt32LE(1, at(0, 300)), t), 'EIMG_RESERVED', /flags/],
    ['dataBytes > size', (t: Buffer) => (t.writeBigUInt64LE(BigInt(65 * M), at(0, 304)), t), 'EIMG_BOUNDS', /dataBytes/],
  ] as Array<[string, (t: Buffer) => Buffer, string, RegExp]>)('%s', (_n, edit, code, mention) => {
    const { table, h } = tableWith((t) => void edit(t));
    expectCode(() => decodeBlockTable(table, h), code, mention);
  });

  test('table CRC mismatch', () => {
    const { table, h } = tableWith(() => undefined);
    h.tableCrc ^= 1;
    expectCode(() => decodeBlockTable(table, h), 'EIMG_CHECKSUM', /block table checksum/);
  });

  test('a truncated table', () => {
    const { h, entries } = committed();
    expectCode(() => decodeBlockTable(encodeBlockTable(entries).subarray(0, 100), h), 'EIMG_TRUNCATED');
  });
});

describe('fuzzing', () => {
  const layouts = fc.record({
    sizes: fc.array(fc.integer({ min: 1, max: 4096 }), { minLength: 1, maxLength: 6 }),
    pageShift: fc.constantFrom(12, 21),
    alignShift: fc.integer({ min: 0, max: 4 }),
    chunkShift: fc.integer({ min: 0, max: 6 }),
    checksums: fc.boolean(),
    deviceState: fc.integer({ min: 0, max: 1 << 30 }),
  });

  function build(l: { sizes: number[]; pageShift: number; alignShift: number; chunkShift: number; checksums: boolean; deviceState: number }) {
    const pageSize = 2 ** l.pageShift;
    const { header, entries } = planLayout({
      blocks: l.sizes.map((n, i) => ({ name: `block-${i}`, size: n * pageSize })),
      pageSize,
      alignment: Math.max(M, pageSize) * 2 ** l.alignShift,
      chunkSize: pageSize * 2 ** l.chunkShift,
      checksums: l.checksums,
      creator: 'fuzz',
    });
    header.committed = true;
    header.deviceStateLength = l.deviceState;
    header.imageSize = header.deviceStateOffset + l.deviceState;
    const table = encodeBlockTable(entries);
    header.tableCrc = native.crc32c(table);
    return { header, entries, headerBytes: encodeHeader(header), table };
  }

  test('valid layouts round-trip', () => {
    fc.assert(
      fc.property(layouts, (l) => {
        const { header, entries, headerBytes, table } = build(l);
        const h = decodeHeader(headerBytes, header.imageSize);
        expect(decodeBlockTable(table, h)).toEqual(entries);
      }),
      { numRuns: 500 },
    );
  });

  test('mutated headers and tables fail only with ImageFormatError and never yield out-of-bounds blocks', () => {
    const mutation = fc.record({
      target: fc.constantFrom('header', 'table'),
      edits: fc.array(fc.record({ at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }), { minLength: 1, maxLength: 8 }),
      fixCrc: fc.boolean(),
      sizeDelta: fc.integer({ min: -(1 << 20), max: 1 << 20 }),
    });
    fc.assert(
      fc.property(layouts, mutation, (l, m) => {
        const { header, headerBytes, table } = build(l);
        const target = m.target === 'header' ? headerBytes : table;
        for (const e of m.edits) target[e.at % target.length] = e.value;
        if (m.fixCrc && m.target === 'header') headerBytes.writeUInt32LE(native.crc32c(headerBytes.subarray(0, HEADER_SIZE - 4)), HEADER_SIZE - 4);
        const fileSize = Math.max(0, header.imageSize + m.sizeDelta);
        try {
          const h = decodeHeader(headerBytes, fileSize);
          if (m.fixCrc && m.target === 'table') h.tableCrc = native.crc32c(table);
          const entries = decodeBlockTable(table, h);
          for (const e of entries) {
            expect(e.offset + e.size).toBeLessThanOrEqual(h.deviceStateOffset);
            expect(h.deviceStateOffset + h.deviceStateLength).toBeLessThanOrEqual(fileSize);
          }
          const sorted = [...entries].sort((a, b) => a.offset - b.offset);
          for (let i = 1; i < sorted.length; i++) expect(sorted[i].offset).toBeGreaterThanOrEqual(sorted[i - 1].offset + sorted[i - 1].size);
        } catch (e) {
          if (!(e instanceof ImageFormatError)) throw e;
        }
      }),
      { numRuns: 3000 },
    );
  });
});
