/** Reads and validates an image's metadata from an fd: header, block table, checksum tables or chunk indexes. */
import { sizeOfFd } from '../../fs/open-file';
import { native } from '../../native';
import { readAligned } from './aligned-io';
import { BlockEntry, checkChunksDisjoint, decodeBlockTable, decodeChecksums, decodeChunkIndex, decodeHeader, HASH_BYTES, hashCountOf, HEADER_SIZE, ImageFormatError, ImageHeader, INDEX_ENTRY } from '../format';

export interface ImageMetadata {
  header: ImageHeader;
  entries: BlockEntry[];
  /** Per block; empty when the image has no checksums. */
  checksums: Uint32Array[];
  fileSize: number;
  /** The header's own CRC-32C (bytes 4092..4095): what a working-set file binds to. */
  headerCrc: number;
}

/** The per-chunk checksum tables (bounded by the format: 2^24 values in all). */
export function readChecksums(fd: number, name: string, entries: BlockEntry[]): Uint32Array[] {
  return entries.map((e) => (e.checksumCount ? decodeChecksums(readAligned(fd, e.checksumOffset, e.checksumCount * 4, name), e.checksumCount) : new Uint32Array(0)));
}

/** CRC-32C of n zero bytes, computed once per length (a block has at most two chunk lengths). */
export function zeroCrcs(): (n: number) => number {
  const known = new Map<number, number>();
  return (n) => {
    let crc = known.get(n);
    if (crc === undefined) known.set(n, (crc = native.crc32c(Buffer.alloc(n))));
    return crc;
  };
}

/**
 * The chunk indexes of a chunked image (version 2, compressed, or 3, a delta), each checked (FORMAT.md I1–I6); bounded
 * by the format (2^21 entries of 24 bytes in all).
 */
export function readChunkIndexes(fd: number, name: string, header: ImageHeader, entries: BlockEntry[]): Buffer[] {
  const zeroCrc = zeroCrcs();
  const indexes = entries.map((e) => decodeChunkIndex(readAligned(fd, e.checksumOffset, e.checksumCount * INDEX_ENTRY, name), e, header, zeroCrc));
  if (header.committed) checkChunksDisjoint(indexes, entries);
  return indexes;
}

/** `skipChecksums` leaves the per-chunk tables unread (inspect does not need them). */
export function readImageMetadata(fd: number, name: string, opts: { allowUncommitted?: boolean; skipChecksums?: boolean } = {}): ImageMetadata {
  const fileSize = sizeOfFd(fd);
  const headerBytes = readAligned(fd, 0, HEADER_SIZE, name);
  const header = decodeHeader(headerBytes, fileSize, opts);
  const entries = decodeBlockTable(readAligned(fd, header.tableOffset, header.tableLength, name), header);
  const checksums = opts.skipChecksums ? entries.map(() => new Uint32Array(0)) : readChecksums(fd, name, entries);
  return { header, entries, checksums, fileSize, headerCrc: Buffer.from(headerBytes.buffer, headerBytes.byteOffset, HEADER_SIZE).readUInt32LE(HEADER_SIZE - 4) };
}

/** Each block's hash table (32 bytes per hash unit; bounded by the format: 2^21 units in all), or [] without hashes. */
export function readHashTables(fd: number, name: string, header: ImageHeader, entries: BlockEntry[]): Buffer[] {
  if (!header.hashes) return [];
  return entries.map((e) => {
    const bytes = hashCountOf(header, e) * HASH_BYTES;
    const b = readAligned(fd, e.hashOffset, bytes, name);
    if (b.length < bytes) throw new ImageFormatError('EIMG_TRUNCATED', `hash table of '${e.name}' has ${b.length} bytes, expected ${bytes}`);
    return Buffer.from(b.buffer, b.byteOffset, bytes);
  });
}
