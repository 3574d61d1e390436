/** Where a writer puts every region, checked with the readers' own rules before a byte is written. */
import { native } from '../../native';
import { alignUp } from '../../util/numbers';
import { decodeBlockTable, encodeBlockTable } from './block-table';
import {
  BaseReference, BlockEntry, ENTRY_SIZE, FLAG_CHECKSUMS, FLAG_COMPRESSED, FLAG_HASHES, HASH_BYTES, HEADER_SIZE, ImageFormatError, ImageHeader, INDEX_ENTRY,
  MAX_BLOCKS, META_ALIGN, VERSION, VERSION_COMPRESSED, VERSION_DELTA,
} from './common';
import { decodeHeader, encodeHeader } from './header';

export interface LayoutInput {
  blocks: Array<{ name: string; size: number }>;
  pageSize: number;
  alignment: number;
  chunkSize: number;
  checksums: boolean;
  creator: string;
  /** Version 2: blocks stored as compressed chunks (checksums always on). */
  compressed?: boolean;
  /** Content hashes (every image written now has them): the new image's id, hash unit and the chain's secret key. */
  hashes?: { imageId: Buffer; unit: number; key: Buffer };
  /** Version 3: a delta of this base at this depth (chunkSize must be the hash unit). */
  delta?: { base: BaseReference; depth: number };
}

export interface Layout {
  header: ImageHeader;
  entries: BlockEntry[];
}

/**
 * Places the table, checksum tables, RAM blocks and device state (uncommitted header), and
 * checks the result with the reader's own rules: a save never writes an image that restore
 * would refuse (too many blocks, too many checksums, …).
 */
export function planLayout(o: LayoutInput): Layout {
  if (o.blocks.length < 1 || o.blocks.length > MAX_BLOCKS) throw new ImageFormatError('EIMG_BOUNDS', `${o.blocks.length} RAM blocks: an image holds 1..${MAX_BLOCKS}`);
  const layout = placeRegions(o);
  const { header, entries } = layout;
  const table = encodeBlockTable(entries);
  const decoded = decodeHeader(encodeHeader({ ...header, tableCrc: native.crc32c(table) }), header.imageSize, { allowUncommitted: true });
  decodeBlockTable(table, decoded);
  return layout;
}

function placeRegions(o: LayoutInput): Layout {
  let pos = alignUp(HEADER_SIZE + o.blocks.length * ENTRY_SIZE, META_ALIGN);
  const v2 = !!o.compressed || !!o.delta;
  const entries: BlockEntry[] = o.blocks.map((b) => {
    const count = o.checksums || v2 ? Math.ceil(b.size / o.chunkSize) : 0;
    const e: BlockEntry = { name: b.name, size: b.size, offset: 0, chunkSize: o.chunkSize, checksumOffset: count ? pos : 0, checksumCount: count, pageSize: o.pageSize, dataBytes: 0, flags: v2 ? 1 : 0, hashOffset: 0 };
    pos += alignUp(count * (v2 ? INDEX_ENTRY : 4), META_ALIGN);
    return e;
  });
  if (o.hashes) {
    for (const e of entries) {
      e.hashOffset = pos;
      pos += alignUp(Math.ceil(e.size / o.hashes.unit) * HASH_BYTES, META_ALIGN);
    }
  }
  // Version 2: the chunk area starts after the indexes and the device state's place is known
  // only when it is full; until then the header says the chunk area is empty.
  const dataOffset = v2 ? alignUp(pos, o.alignment) : 0;
  if (!v2) {
    for (const e of entries) {
      e.offset = alignUp(pos, o.alignment);
      pos = e.offset + e.size;
    }
  }
  const deviceStateOffset = v2 ? dataOffset : alignUp(pos, o.alignment);
  const tableLength = entries.length * ENTRY_SIZE;
  const header: ImageHeader = {
    version: o.delta ? VERSION_DELTA : v2 ? VERSION_COMPRESSED : VERSION,
    flags: (o.delta ? FLAG_CHECKSUMS | (o.compressed ? FLAG_COMPRESSED : 0) : v2 ? FLAG_CHECKSUMS | FLAG_COMPRESSED : o.checksums ? FLAG_CHECKSUMS : 0) | (o.hashes ? FLAG_HASHES : 0),
    committed: false,
    pageSize: o.pageSize,
    alignment: o.alignment,
    blockCount: entries.length,
    tableCrc: 0,
    tableOffset: HEADER_SIZE,
    tableLength,
    deviceStateOffset,
    deviceStateLength: 0,
    imageSize: deviceStateOffset,
    createdMs: Date.now(),
    creator: o.creator,
    dataOffset,
    // Known only once the stream has ended: the writer sets it, with its flag, at the commit.
    deviceStateCrc: 0,
    hashes: o.hashes ? { ...o.hashes, depth: o.delta?.depth ?? 0 } : undefined,
    base: o.delta?.base,
  };
  return { header, entries };
}
