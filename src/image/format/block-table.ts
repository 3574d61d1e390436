/** The block table and the regions it places (docs/FORMAT.md: Block table, rules T1–T15). */
import { native } from '../../native';
import { alignUp, hex, isPowerOfTwo as isPow2 } from '../../util/numbers';
import {
  BlockEntry, ENTRY_SIZE, fail, GiB, HASH_BYTES, hasChecksums, hashCountOf, ImageHeader, INDEX_ENTRY, isChunked, MAX_BLOCK_SIZE, MAX_CHECKSUMS,
  MAX_COMPRESSED_CHUNK, MAX_HASH_UNITS, MAX_INDEX_ENTRIES, META_ALIGN, NAME_SIZE, u64, utf8, VERSION_DELTA, view,
} from './common';

export function encodeBlockTable(entries: BlockEntry[]): Buffer {
  const b = Buffer.alloc(entries.length * ENTRY_SIZE);
  entries.forEach((e, i) => {
    const at = i * ENTRY_SIZE;
    const name = Buffer.from(e.name, 'utf8');
    if (name.length < 1 || name.length >= NAME_SIZE) throw new RangeError(`block name '${e.name}' must be 1..${NAME_SIZE - 1} bytes`);
    name.copy(b, at);
    b.writeBigUInt64LE(BigInt(e.size), at + 256);
    b.writeBigUInt64LE(BigInt(e.offset), at + 264);
    b.writeBigUInt64LE(BigInt(e.chunkSize), at + 272);
    b.writeBigUInt64LE(BigInt(e.checksumOffset), at + 280);
    b.writeBigUInt64LE(BigInt(e.checksumCount), at + 288);
    b.writeUInt32LE(e.pageSize, at + 296);
    b.writeUInt32LE(e.flags, at + 300);
    b.writeBigUInt64LE(BigInt(e.dataBytes), at + 304);
    b.writeBigUInt64LE(BigInt(e.hashOffset), at + 312);
  });
  return b;
}


function decodeName(raw: Buffer, i: number): string {
  const nul = raw.indexOf(0);
  if (nul <= 0) fail('EIMG_NAME', `block ${i}: name is ${nul === 0 ? 'empty' : 'not NUL-terminated'}`);
  if (raw.subarray(nul).some((x) => x !== 0)) fail('EIMG_NAME', `block ${i}: name padding is not NUL`);
  try {
    return utf8.decode(raw.subarray(0, nul));
  } catch {
    return fail('EIMG_NAME', `block ${i}: name is not valid UTF-8`);
  }
}

/** Decodes the table and checks every entry against the header and each other (docs/FORMAT.md). */
export function decodeBlockTable(bytes: Uint8Array, h: ImageHeader): BlockEntry[] {
  if (bytes.length < h.tableLength) fail('EIMG_TRUNCATED', `block table has ${bytes.length} bytes, expected ${h.tableLength}`);
  const b = view(bytes).subarray(0, h.tableLength);
  const crc = native.crc32c(b);
  if (crc !== h.tableCrc) fail('EIMG_CHECKSUM', `block table checksum mismatch (stored ${hex(h.tableCrc)}, computed ${hex(crc)})`);
  const withSums = hasChecksums(h);
  const v2 = isChunked(h);
  const perEntry = v2 ? INDEX_ENTRY : 4;
  const maxEntries = v2 ? MAX_INDEX_ENTRIES : MAX_CHECKSUMS;
  const entries: BlockEntry[] = [];
  const names = new Set<string>();
  for (let i = 0; i < h.blockCount; i++) {
    const at = i * ENTRY_SIZE;
    const name = decodeName(b.subarray(at, at + NAME_SIZE), i);
    if (names.has(name)) fail('EIMG_NAME', `block ${i}: name '${name}' appears twice`);
    names.add(name);
    const where = `block ${i} ('${name}')`;
    const e: BlockEntry = {
      name,
      size: u64(b, at + 256, `${where} size`, MAX_BLOCK_SIZE),
      offset: u64(b, at + 264, `${where} offset`),
      chunkSize: u64(b, at + 272, `${where} chunkSize`, BigInt(GiB)),
      checksumOffset: u64(b, at + 280, `${where} checksumOffset`),
      checksumCount: u64(b, at + 288, `${where} checksumCount`),
      pageSize: b.readUInt32LE(at + 296),
      dataBytes: u64(b, at + 304, `${where} dataBytes`),
      flags: b.readUInt32LE(at + 300),
      hashOffset: u64(b, at + 312, `${where} hashOffset`),
    };
    if (e.flags !== (v2 ? 1 : 0) || (!h.hashes && e.hashOffset !== 0)) fail('EIMG_RESERVED', `${where}: flags ${e.flags} are not ${v2 ? 1 : 0} or reserved bytes are not zero`);
    if (h.hashes && (e.hashOffset === 0 || e.hashOffset % META_ALIGN !== 0)) fail('EIMG_BOUNDS', `${where}: hashOffset ${e.hashOffset} is not a non-zero multiple of ${META_ALIGN}`);
    if (h.version === VERSION_DELTA && e.chunkSize !== h.hashes!.unit) fail('EIMG_BOUNDS', `${where}: chunkSize ${e.chunkSize} of a delta is not its hash unit ${h.hashes!.unit}`);
    if (!isPow2(e.pageSize) || e.pageSize < 4096 || e.pageSize > h.pageSize) {
      fail('EIMG_BOUNDS', `${where}: pageSize ${e.pageSize} is not a power of two in 4096..${h.pageSize} (the header's)`);
    }
    if (e.size === 0 || e.size % e.pageSize !== 0) fail('EIMG_BOUNDS', `${where}: size ${e.size} is not a positive multiple of its page size ${e.pageSize}`);
    if (v2 ? e.offset !== 0 : e.offset % h.alignment !== 0) fail('EIMG_BOUNDS', `${where}: offset ${e.offset} is not ${v2 ? '0 (a compressed block has no single place)' : `a multiple of the alignment ${h.alignment}`}`);
    if (!isPow2(e.chunkSize) || e.chunkSize < 4096 || e.chunkSize < h.pageSize || (v2 && e.chunkSize > MAX_COMPRESSED_CHUNK)) {
      fail('EIMG_BOUNDS', `${where}: chunkSize ${e.chunkSize} is not a power of two >= 4096 and >= pageSize${v2 ? ' and <= 64 MiB' : ''}`);
    }
    if (e.dataBytes > e.size) fail('EIMG_BOUNDS', `${where}: dataBytes ${e.dataBytes} exceeds size ${e.size}`);
    if (withSums) {
      const want = Math.ceil(e.size / e.chunkSize);
      if (want > maxEntries) fail('EIMG_BOUNDS', `${where}: ${want} ${v2 ? 'chunk index entries' : 'checksums'} exceed the reader's limit of ${maxEntries}`);
      if (e.checksumCount !== want) fail('EIMG_BOUNDS', `${where}: checksumCount ${e.checksumCount}, expected ${want}`);
      if (e.checksumOffset === 0 || e.checksumOffset % META_ALIGN !== 0) fail('EIMG_BOUNDS', `${where}: checksumOffset ${e.checksumOffset} is not a non-zero multiple of ${META_ALIGN}`);
    } else if (e.checksumCount !== 0 || e.checksumOffset !== 0) {
      fail('EIMG_BOUNDS', `${where}: has a checksum table but the header says there are none`);
    }
    entries.push(e);
  }
  const total = entries.reduce((n, e) => n + e.checksumCount, 0);
  if (total > maxEntries) fail('EIMG_BOUNDS', `${total} ${v2 ? 'chunk index entries' : 'checksums'} in all blocks exceed the reader's limit of ${maxEntries} (${(maxEntries * perEntry) / 2 ** 20} MiB of tables in memory)`);
  const units = entries.reduce((n, e) => n + hashCountOf(h, e), 0);
  if (units > MAX_HASH_UNITS) fail('EIMG_BOUNDS', `${units} hash units in all blocks exceed the reader's limit of ${MAX_HASH_UNITS} (${(MAX_HASH_UNITS * HASH_BYTES) / 2 ** 20} MiB of tables in memory)`);
  checkRegions(h, entries);
  return entries;
}

/** No region may overlap another; RAM blocks come after all metadata, device state after RAM. */
function checkRegions(h: ImageHeader, entries: BlockEntry[]): void {
  const metaEnd = alignUp(h.tableOffset + h.tableLength, META_ALIGN);
  const regions: Array<{ what: string; start: number; end: number }> = [{ what: 'header and block table', start: 0, end: metaEnd }];
  // Hash tables lie in the metadata area, like the checksum tables and chunk indexes.
  const metaLimit = isChunked(h) ? h.dataOffset : Math.min(...entries.map((e) => e.offset));
  for (const e of entries) {
    if (!h.hashes) break;
    const end = e.hashOffset + hashCountOf(h, e) * HASH_BYTES;
    if (e.hashOffset < metaEnd || end > metaLimit) fail('EIMG_OVERLAP', `hash table of '${e.name}' is not in the metadata area`);
    regions.push({ what: `hash table of '${e.name}'`, start: e.hashOffset, end });
  }
  if (isChunked(h)) {
    for (const e of entries) {
      const end = e.checksumOffset + e.checksumCount * INDEX_ENTRY;
      if (e.checksumOffset < metaEnd || end > h.dataOffset) fail('EIMG_OVERLAP', `chunk index of '${e.name}' is not in the metadata area before the chunk area at ${h.dataOffset}`);
      regions.push({ what: `chunk index of '${e.name}'`, start: e.checksumOffset, end });
    }
    regions.push({ what: 'device state', start: h.deviceStateOffset, end: h.deviceStateOffset + h.deviceStateLength });
    checkDisjoint(regions);
    return;
  }
  let firstBlock = Infinity;
  for (const e of entries) {
    const end = e.offset + e.size;
    if (end > h.deviceStateOffset) fail('EIMG_BOUNDS', `block '${e.name}' ends at ${end}, past the device state at ${h.deviceStateOffset}`);
    regions.push({ what: `block '${e.name}'`, start: e.offset, end });
    firstBlock = Math.min(firstBlock, e.offset);
    if (e.checksumCount) regions.push({ what: `checksums of '${e.name}'`, start: e.checksumOffset, end: e.checksumOffset + e.checksumCount * 4 });
  }
  for (const e of entries) {
    if (e.checksumCount && e.checksumOffset + e.checksumCount * 4 > firstBlock) {
      fail('EIMG_OVERLAP', `checksums of '${e.name}' are not in the metadata area before the first RAM block`);
    }
  }
  regions.push({ what: 'device state', start: h.deviceStateOffset, end: h.deviceStateOffset + h.deviceStateLength });
  checkDisjoint(regions);
}

function checkDisjoint(regions: Array<{ what: string; start: number; end: number }>): void {
  regions.sort((a, b) => a.start - b.start || a.end - b.end);
  for (let i = 1; i < regions.length; i++) {
    if (regions[i].start < regions[i - 1].end) fail('EIMG_OVERLAP', `${regions[i].what} overlaps ${regions[i - 1].what}`);
  }
}

/** Pads a chunk index (or any metadata) to whole 4096-byte pages. */
