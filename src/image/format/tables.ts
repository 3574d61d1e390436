/** Per-block tables in the metadata area: checksum tables (version 1) and chunk indexes (versions 2 and 3). */
import { alignUp, hex } from '../../util/numbers';
import { BlockEntry, CHUNK_BASE, CHUNK_RAW, CHUNK_ZERO, CHUNK_ZSTD, fail, FLAG_COMPRESSED, ImageHeader, INDEX_ENTRY, META_ALIGN, u64, VERSION_DELTA, view } from './common';

export function padToPages(bytes: Uint8Array): Buffer {
  const b = Buffer.alloc(alignUp(bytes.length, META_ALIGN));
  b.set(bytes);
  return b;
}

export function encodeChecksums(crcs: Uint32Array): Buffer {
  const b = Buffer.alloc(alignUp(crcs.length * 4, META_ALIGN));
  crcs.forEach((c, i) => b.writeUInt32LE(c >>> 0, i * 4));
  return b;
}

export function decodeChecksums(bytes: Uint8Array, count: number): Uint32Array {
  if (bytes.length < count * 4) fail('EIMG_TRUNCATED', `checksum table has ${bytes.length} bytes, expected ${count * 4}`);
  const b = view(bytes);
  const out = new Uint32Array(count);
  for (let i = 0; i < count; i++) out[i] = b.readUInt32LE(i * 4);
  return out;
}

/**
 * Checks one block's chunk index (versions 2 and 3, rules I1–I5) and returns its bytes (24 per chunk),
 * as the addon reads them. `zeroCrc(n)` is the CRC-32C of n zero bytes.
 */
export function decodeChunkIndex(bytes: Uint8Array, e: BlockEntry, h: ImageHeader, zeroCrc: (n: number) => number): Buffer {
  const need = e.checksumCount * INDEX_ENTRY;
  if (bytes.length < need) fail('EIMG_TRUNCATED', `chunk index of '${e.name}' has ${bytes.length} bytes, expected ${need}`);
  const b = Buffer.from(view(bytes).subarray(0, need)); // a copy: it outlives the read buffer
  for (let i = 0; i < e.checksumCount; i++) {
    const at = i * INDEX_ENTRY;
    const where = `block '${e.name}' chunk ${i}`;
    const length = Math.min(e.chunkSize, e.size - i * e.chunkSize);
    const offset = u64(b, at, `${where} offset`);
    const stored = b.readUInt32LE(at + 8);
    const kind = b.readUInt32LE(at + 16);
    const delta = h.version === VERSION_DELTA;
    const kinds = delta ? (h.flags & FLAG_COMPRESSED ? [CHUNK_ZERO, CHUNK_RAW, CHUNK_ZSTD, CHUNK_BASE] : [CHUNK_ZERO, CHUNK_RAW, CHUNK_BASE]) : [CHUNK_ZERO, CHUNK_RAW, CHUNK_ZSTD];
    if (!kinds.includes(kind) || b.readUInt32LE(at + 20) !== 0) fail('EIMG_RESERVED', `${where}: kind ${kind} is not ${kinds.join(', ')}, or reserved bytes are not zero`);
    if (kind === CHUNK_BASE) {
      if (offset !== 0 || stored !== 0) fail('EIMG_BOUNDS', `${where}: a base chunk with offset ${offset} and ${stored} stored bytes`);
      continue;
    }
    if (kind === CHUNK_ZERO) {
      if (offset !== 0 || stored !== 0) fail('EIMG_BOUNDS', `${where}: a zero chunk with offset ${offset} and ${stored} stored bytes`);
      const crc = b.readUInt32LE(at + 12);
      if (h.committed && crc !== zeroCrc(length)) fail('EIMG_CHECKSUM', `${where}: a zero chunk whose CRC-32C ${hex(crc)} is not that of zeros`);
      continue;
    }
    if (kind === CHUNK_RAW ? stored !== length : stored < 1 || stored >= length) {
      fail('EIMG_BOUNDS', `${where}: ${stored} stored bytes for a ${kind === CHUNK_RAW ? 'raw' : 'zstd'} chunk of ${length}`);
    }
    if (offset % h.alignment !== 0 || offset < h.dataOffset || offset + stored > h.deviceStateOffset) {
      fail('EIMG_BOUNDS', `${where}: stored at ${offset}..${offset + stored}, outside the chunk area ${h.dataOffset}..${h.deviceStateOffset} or not aligned`);
    }
  }
  return b;
}

/** Rule I6: no two stored chunks of any blocks share a byte. */
export function checkChunksDisjoint(indexes: Buffer[], entries: BlockEntry[]): void {
  const spans: Array<{ start: number; end: number; block: number; chunk: number }> = [];
  indexes.forEach((b, block) => {
    for (let i = 0; i * INDEX_ENTRY < b.length; i++) {
      const stored = b.readUInt32LE(i * INDEX_ENTRY + 8);
      if (stored === 0) continue;
      const start = Number(b.readBigUInt64LE(i * INDEX_ENTRY));
      spans.push({ start, end: start + stored, block, chunk: i });
    }
  });
  spans.sort((a, b) => a.start - b.start);
  for (let i = 1; i < spans.length; i++) {
    const [p, q] = [spans[i - 1], spans[i]];
    if (q.start < p.end) fail('EIMG_OVERLAP', `block '${entries[q.block].name}' chunk ${q.chunk} overlaps block '${entries[p.block].name}' chunk ${p.chunk}`);
  }
}

