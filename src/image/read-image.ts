/** Reads and validates an image's metadata from an fd: header, block table, checksum tables. */
import * as fs from 'fs';
import { readAligned } from './aligned-io';
import { BlockEntry, decodeBlockTable, decodeChecksums, decodeHeader, HEADER_SIZE, ImageHeader } from './format';

export interface ImageMetadata {
  header: ImageHeader;
  entries: BlockEntry[];
  /** Per block; empty when the image has no checksums. */
  checksums: Uint32Array[];
  fileSize: number;
}

/** The per-chunk checksum tables (bounded by the format: 2^24 values in all). */
export function readChecksums(fd: number, name: string, entries: BlockEntry[]): Uint32Array[] {
  return entries.map((e) => (e.checksumCount ? decodeChecksums(readAligned(fd, e.checksumOffset, e.checksumCount * 4, name), e.checksumCount) : new Uint32Array(0)));
}

/** `skipChecksums` leaves the per-chunk tables unread (inspect does not need them). */
export function readImageMetadata(fd: number, name: string, opts: { allowUncommitted?: boolean; skipChecksums?: boolean } = {}): ImageMetadata {
  const fileSize = fs.fstatSync(fd).size;
  const header = decodeHeader(readAligned(fd, 0, HEADER_SIZE, name), fileSize, opts);
  const entries = decodeBlockTable(readAligned(fd, header.tableOffset, header.tableLength, name), header);
  const checksums = opts.skipChecksums ? entries.map(() => new Uint32Array(0)) : readChecksums(fd, name, entries);
  return { header, entries, checksums, fileSize };
}
