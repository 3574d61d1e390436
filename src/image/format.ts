/**
 * Encoder and validating decoder of the image format, versions 1 (mappable), 2 (compressed)
 * and 3 (delta: only what changed since a base) (docs/FORMAT.md). Pure: bytes in, bytes out. Every u64 is read as a BigInt and range-checked
 * before it becomes a Number.
 */
import { checkNativeLimits, native } from '../native';
import { alignUp, hex, isPowerOfTwo as isPow2 } from '../util/numbers';
import { BUFFER_SIZE, HASH_UNIT, MAX_RING_BYTES } from '../util/limits';

export const MAGIC = 'IOHIMG01';
/** Version 1: every block whole at a fixed offset (mappable). */
export const VERSION = 1;
/** Version 2: blocks stored chunk by chunk, compressed, packed (docs/FORMAT.md). */
export const VERSION_COMPRESSED = 2;
/** Version 3: a delta, stored like version 2, whose unchanged units are its base's (docs/FORMAT.md). */
export const VERSION_DELTA = 3;
export const HEADER_SIZE = 4096;
export const ENTRY_SIZE = 320;
export const NAME_SIZE = 256;
export const MAX_BLOCKS = 1024;
export const META_ALIGN = 4096;
export const DEFAULT_ALIGNMENT = 1 << 20;
export const DEFAULT_CHUNK = 8 << 20;
export const FLAG_CHECKSUMS = 1;
export const FLAG_COMPRESSED = 2;
/** The header records the device state's CRC-32C (`deviceStateCrc`); images saved before it existed have none. */
export const FLAG_DEVICE_STATE_CRC = 4;
/** The image has an id and a SHA-256 per hash unit of every block (images written since version 3 existed). */
export const FLAG_HASHES = 8;
/** Header offset of `deviceStateCrc` (reserved, zero, without FLAG_DEVICE_STATE_CRC). */
const DEVICE_STATE_CRC_AT = 128;
/** Version 2: bytes of one chunk index entry. */
export const INDEX_ENTRY = 24;
export const CHUNK_ZERO = 0;
export const CHUNK_RAW = 1;
export const CHUNK_ZSTD = 2;
/** Version 3: the unit is the base's (nothing stored). */
export const CHUNK_BASE = 3;
export const HASH_BYTES = 32;
export const HASH_SHA256 = 1;
/**
 * Hash unit of new images: measured on the real profile (bench/RESULTS.md, "Hash unit"): small
 * enough that scattered guest writes do not mark everything changed, large enough that the
 * hash tables stay small.
 */
export const DEFAULT_HASH_UNIT = 256 << 10;
export const MAX_HASH_UNIT = HASH_UNIT.max;
/** Hash units in all blocks: a reader holds the tables in memory (64 MiB). */
export const MAX_HASH_UNITS = 2 ** 21;
/** Layers of a chain below a delta: depth 1 .. MAX_DEPTH. */
export const MAX_DEPTH = 16;
export const MAX_BASE_PATH = 1024;
const ID_AT = 132;
const HASH_UNIT_AT = 148;
const HASH_ALGORITHM_AT = 152;
const DEPTH_AT = 156;
const BASE_ID_AT = 160;
const BASE_SIZE_AT = 176;
const BASE_CRC_AT = 184;
const BASE_PATH_LENGTH_AT = 188;
const BASE_PATH_AT = 192;
/** Version 2: a reader holds one stored chunk per worker, so chunks are at most 64 MiB. */
export const MAX_COMPRESSED_CHUNK = 64 << 20;
/** Version 2: chunk index entries in all blocks (48 MiB of index in memory). */
export const MAX_INDEX_ENTRIES = 2 ** 21;
// The addon reads chunk indexes and chains itself: its bounds must be these.
checkNativeLimits({ indexEntry: INDEX_ENTRY, maxCompressedChunk: MAX_COMPRESSED_CHUNK, maxBufferSize: BUFFER_SIZE.max, maxRingBytes: MAX_RING_BYTES, maxLayers: MAX_DEPTH });
const MAX_BLOCK_SIZE = 2n ** 50n;
const MAX_DEVICE_STATE = 2n ** 48n;
/** Readers hold checksum tables in memory: 16 Mi entries (128 TiB of RAM at 8 MiB chunks) at most. */
export const MAX_CHECKSUMS = 2 ** 24;
const GiB = 2 ** 30;
const CRC_AT = HEADER_SIZE - 4;

export type ImageErrorCode =
  | 'EIMG_TRUNCATED'
  | 'EIMG_MAGIC'
  | 'EIMG_VERSION'
  | 'EIMG_CHECKSUM'
  | 'EIMG_UNCOMMITTED'
  | 'EIMG_RESERVED'
  | 'EIMG_BOUNDS'
  | 'EIMG_OVERLAP'
  | 'EIMG_NAME'
  /** A stored chunk of a compressed image does not decode. */
  | 'EIMG_CHUNK'
  /** A compressed image where only a mappable one will do (clones, --lazy). */
  | 'EIMG_COMPRESSED'
  /** A delta's base is missing, changed, incomplete, of another layout, or the chain is cyclic or too deep. */
  | 'EIMG_BASE';

export class ImageFormatError extends Error {
  constructor(
    readonly code: ImageErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'ImageFormatError';
  }
}

export interface ImageHeader {
  version: number;
  flags: number;
  committed: boolean;
  pageSize: number;
  alignment: number;
  blockCount: number;
  tableCrc: number;
  tableOffset: number;
  tableLength: number;
  deviceStateOffset: number;
  deviceStateLength: number;
  imageSize: number;
  createdMs: number;
  creator: string;
  /** Version 2: start of the chunk area (0 in version 1). */
  dataOffset: number;
  /** CRC-32C of the device state's bytes, when `flags` has FLAG_DEVICE_STATE_CRC (else 0). */
  deviceStateCrc: number;
  /** With FLAG_HASHES: 16 random bytes naming this image, a hash unit and a depth (0 but in deltas). */
  hashes?: { imageId: Buffer; unit: number; depth: number };
  /** Version 3: the image the delta's unchanged units come from. */
  base?: BaseReference;
}

/** How a delta names its base: by identity (id, size, header CRC) and by path. */
export interface BaseReference {
  imageId: Buffer;
  imageSize: number;
  headerCrc: number;
  /** UTF-8, 1..1024 bytes; relative paths are relative to the delta's directory. */
  path: string;
}

/** Whether every block has a checksum table (version 1) or chunk CRCs (version 2). */
export const hasChecksums = (h: ImageHeader) => (h.flags & FLAG_CHECKSUMS) !== 0;
/** Whether the header records the device state's CRC-32C (absent in images of older writers). */
export const hasDeviceStateCrc = (h: ImageHeader) => (h.flags & FLAG_DEVICE_STATE_CRC) !== 0;

export interface BlockEntry {
  name: string;
  size: number;
  offset: number;
  chunkSize: number;
  checksumOffset: number;
  checksumCount: number;
  pageSize: number;
  /** Version 2: stored bytes of the block (its compressed size); version 1: bytes written. */
  dataBytes: number;
  /** 1 in versions 2 and 3 (stored as chunks), 0 in version 1. */
  flags: number;
  /** With FLAG_HASHES: file offset of the block's hash table (32 bytes per hash unit), else 0. */
  hashOffset: number;
}

/** Hash units of a block (0 without hashes). */
export const hashCountOf = (h: ImageHeader, e: { size: number }) => (h.hashes ? Math.ceil(e.size / h.hashes.unit) : 0);
/** Versions 2 and 3 store blocks as chunks with an index (no fixed place: not mappable). */
export const isChunked = (h: ImageHeader) => h.version !== VERSION;


function fail(code: ImageErrorCode, message: string): never {
  throw new ImageFormatError(code, message);
}

/** A u64 as a Number, refusing values that are not exact. */
function u64(buf: Buffer, at: number, field: string, max: bigint = BigInt(Number.MAX_SAFE_INTEGER)): number {
  const v = buf.readBigUInt64LE(at);
  if (v > max) fail('EIMG_BOUNDS', `${field} = ${v} is out of range (max ${max})`);
  return Number(v);
}

function view(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

export function encodeHeader(h: ImageHeader): Buffer {
  const b = Buffer.alloc(HEADER_SIZE);
  b.write(MAGIC, 0, 'latin1');
  b.writeUInt32LE(h.version, 8);
  b.writeUInt32LE(h.flags, 12);
  b.writeUInt32LE(HEADER_SIZE, 16);
  b.writeUInt32LE(h.committed ? 1 : 0, 20);
  b.writeUInt32LE(h.pageSize, 24);
  b.writeUInt32LE(h.alignment, 28);
  b.writeUInt32LE(h.blockCount, 32);
  b.writeUInt32LE(h.tableCrc >>> 0, 36);
  b.writeBigUInt64LE(BigInt(h.tableOffset), 40);
  b.writeBigUInt64LE(BigInt(h.tableLength), 48);
  b.writeBigUInt64LE(BigInt(h.deviceStateOffset), 56);
  b.writeBigUInt64LE(BigInt(h.deviceStateLength), 64);
  b.writeBigUInt64LE(BigInt(h.imageSize), 72);
  b.writeBigUInt64LE(BigInt(h.createdMs), 80);
  creatorBytes(h.creator).copy(b, 88);
  if (h.version !== VERSION) b.writeBigUInt64LE(BigInt(h.dataOffset), 120);
  if (h.flags & FLAG_DEVICE_STATE_CRC) b.writeUInt32LE(h.deviceStateCrc >>> 0, DEVICE_STATE_CRC_AT);
  if (h.hashes) {
    h.hashes.imageId.copy(b, ID_AT);
    b.writeUInt32LE(h.hashes.unit, HASH_UNIT_AT);
    b.writeUInt32LE(HASH_SHA256, HASH_ALGORITHM_AT);
    b.writeUInt32LE(h.hashes.depth, DEPTH_AT);
  }
  if (h.base) {
    h.base.imageId.copy(b, BASE_ID_AT);
    b.writeBigUInt64LE(BigInt(h.base.imageSize), BASE_SIZE_AT);
    b.writeUInt32LE(h.base.headerCrc >>> 0, BASE_CRC_AT);
    const p = Buffer.from(h.base.path, 'utf8');
    b.writeUInt32LE(p.length, BASE_PATH_LENGTH_AT);
    p.copy(b, BASE_PATH_AT);
  }
  b.writeUInt32LE(native.crc32c(b.subarray(0, CRC_AT)), CRC_AT);
  return b;
}

/** The creator string in at most 31 bytes, cut at a character boundary. */
function creatorBytes(creator: string): Buffer {
  let bytes = Buffer.from(creator, 'utf8');
  let chars = [...creator];
  while (bytes.length > 31) {
    chars = chars.slice(0, -1);
    bytes = Buffer.from(chars.join(''), 'utf8');
  }
  return bytes;
}

/**
 * Decodes and checks the header against the file's size. Refuses an incomplete image unless
 * `allowUncommitted` (inspect shows those).
 */
export function decodeHeader(bytes: Uint8Array, fileSize: number, opts: { allowUncommitted?: boolean } = {}): ImageHeader {
  if (bytes.length < HEADER_SIZE || fileSize < HEADER_SIZE) fail('EIMG_TRUNCATED', `file has ${fileSize} bytes, less than the ${HEADER_SIZE}-byte header`);
  const b = view(bytes).subarray(0, HEADER_SIZE);
  const magic = b.subarray(0, 8).toString('latin1');
  if (magic !== MAGIC) fail('EIMG_MAGIC', `magic is ${JSON.stringify(magic)}, not ${MAGIC}: not an iohelper image`);
  const version = b.readUInt32LE(8);
  if (version !== VERSION && version !== VERSION_COMPRESSED && version !== VERSION_DELTA) fail('EIMG_VERSION', `format version ${version} is not supported (this reader knows ${VERSION}, ${VERSION_COMPRESSED} and ${VERSION_DELTA})`);
  const v2 = version !== VERSION; // versions 2 and 3: chunks and a chunk area
  const delta = version === VERSION_DELTA;
  const crc = b.readUInt32LE(CRC_AT);
  const actual = native.crc32c(b.subarray(0, CRC_AT));
  if (crc !== actual) fail('EIMG_CHECKSUM', `header checksum mismatch (stored ${hex(crc)}, computed ${hex(actual)})`);
  if (b.readUInt32LE(16) !== HEADER_SIZE) fail('EIMG_VERSION', `headerSize ${b.readUInt32LE(16)} is not ${HEADER_SIZE}`);
  const flags = b.readUInt32LE(12);
  if (delta && (flags & ~(FLAG_DEVICE_STATE_CRC | FLAG_COMPRESSED)) !== (FLAG_CHECKSUMS | FLAG_HASHES)) fail('EIMG_RESERVED', `flags ${hex(flags)} of a version 3 image are not bits 0 and 3, with bits 1 and 2 optional`);
  if (v2 && !delta && (flags & ~(FLAG_DEVICE_STATE_CRC | FLAG_HASHES)) !== (FLAG_CHECKSUMS | FLAG_COMPRESSED)) fail('EIMG_RESERVED', `flags ${hex(flags)} of a version 2 image are not bits 0 and 1, with bits 2 and 3 optional`);
  if (!v2 && flags & ~(FLAG_CHECKSUMS | FLAG_DEVICE_STATE_CRC | FLAG_HASHES)) fail('EIMG_RESERVED', `unknown flag bits ${hex(flags & ~(FLAG_CHECKSUMS | FLAG_DEVICE_STATE_CRC | FLAG_HASHES))}`);
  const state = b.readUInt32LE(20);
  if (state > 1) fail('EIMG_RESERVED', `state ${state} is neither 0 (incomplete) nor 1 (committed)`);
  const withStateCrc = (flags & FLAG_DEVICE_STATE_CRC) !== 0;
  const withHashes = (flags & FLAG_HASHES) !== 0;
  // Reserved: v1 120..127 (v2's dataOffset), the device-state CRC's 4 bytes unless its flag
  // says they hold one, the id and hash fields without their flag, the base reference but in
  // a delta (its path only up to its length), and the rest.
  const pathLength = delta ? b.readUInt32LE(BASE_PATH_LENGTH_AT) : 0;
  if (delta && (pathLength < 1 || pathLength > MAX_BASE_PATH)) fail('EIMG_BOUNDS', `base path length ${pathLength} is not in 1..${MAX_BASE_PATH}`);
  const used = delta ? BASE_PATH_AT + pathLength : withHashes ? BASE_ID_AT : DEVICE_STATE_CRC_AT + 4;
  const reserved = [...(v2 ? [] : [[120, DEVICE_STATE_CRC_AT]]), ...(withStateCrc ? [] : [[DEVICE_STATE_CRC_AT, DEVICE_STATE_CRC_AT + 4]]), [used, CRC_AT]];
  for (const [from, to] of reserved) {
    if (b.subarray(from, to).some((x) => x !== 0)) fail('EIMG_RESERVED', `reserved header bytes ${from}..${to - 1} are not zero`);
  }
  const h: ImageHeader = {
    version,
    flags,
    committed: state === 1,
    pageSize: b.readUInt32LE(24),
    alignment: b.readUInt32LE(28),
    blockCount: b.readUInt32LE(32),
    tableCrc: b.readUInt32LE(36),
    tableOffset: u64(b, 40, 'tableOffset'),
    tableLength: u64(b, 48, 'tableLength'),
    deviceStateOffset: u64(b, 56, 'deviceStateOffset'),
    deviceStateLength: u64(b, 64, 'deviceStateLength', MAX_DEVICE_STATE),
    imageSize: u64(b, 72, 'imageSize'),
    createdMs: u64(b, 80, 'createdMs'),
    creator: decodeCreator(b.subarray(88, 120)),
    dataOffset: v2 ? u64(b, 120, 'dataOffset') : 0,
    deviceStateCrc: withStateCrc ? b.readUInt32LE(DEVICE_STATE_CRC_AT) : 0,
  };
  if (withHashes) h.hashes = decodeHashFields(b, h.pageSize, delta);
  if (delta) h.base = decodeBaseReference(b, pathLength);
  if (!h.committed && !opts.allowUncommitted) fail('EIMG_UNCOMMITTED', 'the image is incomplete: its save never finished (state 0)');
  if (!isPow2(h.pageSize) || h.pageSize < 4096 || h.pageSize > GiB) fail('EIMG_BOUNDS', `pageSize ${h.pageSize} is not a power of two in 4096..1 GiB`);
  if (!isPow2(h.alignment) || h.alignment < 4096 || h.alignment > GiB || (!v2 && h.alignment < h.pageSize)) {
    fail('EIMG_BOUNDS', `alignment ${h.alignment} is not a power of two in 4096..1 GiB${v2 ? '' : ' and >= pageSize'}`);
  }
  if (h.blockCount < 1 || h.blockCount > MAX_BLOCKS) fail('EIMG_BOUNDS', `blockCount ${h.blockCount} is not in 1..${MAX_BLOCKS}`);
  if (h.tableOffset !== HEADER_SIZE) fail('EIMG_BOUNDS', `tableOffset ${h.tableOffset} is not ${HEADER_SIZE}`);
  if (h.tableLength !== h.blockCount * ENTRY_SIZE) fail('EIMG_BOUNDS', `tableLength ${h.tableLength} is not blockCount × ${ENTRY_SIZE}`);
  if (h.deviceStateOffset % h.alignment !== 0) fail('EIMG_BOUNDS', `deviceStateOffset ${h.deviceStateOffset} is not a multiple of the alignment`);
  if (h.imageSize !== h.deviceStateOffset + h.deviceStateLength) {
    fail('EIMG_BOUNDS', `imageSize ${h.imageSize} is not deviceStateOffset + deviceStateLength`);
  }
  if (v2 && (h.dataOffset % h.alignment !== 0 || h.dataOffset > h.deviceStateOffset)) {
    fail('EIMG_BOUNDS', `dataOffset ${h.dataOffset} is not a multiple of the alignment at or before deviceStateOffset ${h.deviceStateOffset}`);
  }
  if (h.committed && fileSize < h.imageSize) fail('EIMG_TRUNCATED', `file has ${fileSize} bytes, the image needs ${h.imageSize}: truncated`);
  if (h.committed && fileSize > h.imageSize) fail('EIMG_BOUNDS', `file has ${fileSize} bytes, more than the image's ${h.imageSize}`);
  if (fileSize < h.tableOffset + h.tableLength) fail('EIMG_TRUNCATED', `file has ${fileSize} bytes, the block table ends at ${h.tableOffset + h.tableLength}`);
  return h;
}

/** Rule H24: the id, the hash unit and algorithm, the depth. */
function decodeHashFields(b: Buffer, pageSize: number, delta: boolean): { imageId: Buffer; unit: number; depth: number } {
  const imageId = Buffer.from(b.subarray(ID_AT, ID_AT + 16));
  if (imageId.every((x) => x === 0)) fail('EIMG_BOUNDS', 'imageId is all zeros');
  const unit = b.readUInt32LE(HASH_UNIT_AT);
  if (!isPow2(unit) || unit < Math.max(4096, pageSize) || unit > MAX_HASH_UNIT) fail('EIMG_BOUNDS', `hashUnit ${unit} is not a power of two in max(4096, pageSize)..64 MiB`);
  const algorithm = b.readUInt32LE(HASH_ALGORITHM_AT);
  if (algorithm !== HASH_SHA256) fail('EIMG_RESERVED', `hash algorithm ${algorithm} is not 1 (SHA-256)`);
  const depth = b.readUInt32LE(DEPTH_AT);
  if (delta ? depth < 1 || depth > MAX_DEPTH : depth !== 0) fail('EIMG_BOUNDS', `depth ${depth} is not ${delta ? `in 1..${MAX_DEPTH} (a delta)` : '0 (not a delta)'}`);
  return { imageId, unit, depth };
}

/** Rule H25: the base reference of a delta. */
function decodeBaseReference(b: Buffer, pathLength: number): BaseReference {
  const raw = b.subarray(BASE_PATH_AT, BASE_PATH_AT + pathLength);
  if (raw.includes(0)) fail('EIMG_NAME', 'base path has a NUL byte');
  let path: string;
  try {
    path = utf8.decode(raw);
  } catch {
    return fail('EIMG_NAME', 'base path is not valid UTF-8');
  }
  return { imageId: Buffer.from(b.subarray(BASE_ID_AT, BASE_ID_AT + 16)), imageSize: u64(b, BASE_SIZE_AT, 'baseImageSize'), headerCrc: b.readUInt32LE(BASE_CRC_AT), path };
}

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

const utf8 = new TextDecoder('utf-8', { fatal: true });

function decodeCreator(raw: Buffer): string {
  const nul = raw.indexOf(0);
  if (nul < 0) fail('EIMG_NAME', 'creator has no NUL within its 32 bytes');
  if (raw.subarray(nul).some((x) => x !== 0)) fail('EIMG_NAME', 'creator padding is not NUL');
  try {
    return utf8.decode(raw.subarray(0, nul));
  } catch {
    return fail('EIMG_NAME', 'creator is not valid UTF-8');
  }
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
 * Checks one block's chunk index (version 2, rules I1–I5) and returns its bytes (24 per chunk),
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
    const kinds = delta ? (h.flags & FLAG_COMPRESSED ? [0, 1, 2, 3] : [0, 1, 3]) : [0, 1, 2];
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

export interface LayoutInput {
  blocks: Array<{ name: string; size: number }>;
  pageSize: number;
  alignment: number;
  chunkSize: number;
  checksums: boolean;
  creator: string;
  /** Version 2: blocks stored as compressed chunks (checksums always on). */
  compressed?: boolean;
  /** Content hashes (every image written now has them): the new image's id and hash unit. */
  hashes?: { imageId: Buffer; unit: number };
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

