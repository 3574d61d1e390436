/**
 * The image format's constants, types and error (docs/FORMAT.md), shared by its encoders and
 * validating decoders (header.ts, block-table.ts, tables.ts, layout.ts). Pure: bytes in, bytes
 * out. Every u64 is read as a BigInt and range-checked before it becomes a Number.
 */
import { checkNativeLimits } from '../../native';
import { BUFFER_SIZE, HASH_UNIT, MAX_RING_BYTES } from '../../util/limits';

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
/** The image has an id, a secret hash key and a keyed hash (AES-128-GMAC) per hash unit of every block (images written since version 3 existed). */
export const FLAG_HASHES = 8;
/** Header offset of `deviceStateCrc` (reserved, zero, without FLAG_DEVICE_STATE_CRC). */
export const DEVICE_STATE_CRC_AT = 128;
/** Version 2: bytes of one chunk index entry. */
export const INDEX_ENTRY = 24;
export const CHUNK_ZERO = 0;
export const CHUNK_RAW = 1;
export const CHUNK_ZSTD = 2;
/** Version 3: the unit is the base's (nothing stored). */
export const CHUNK_BASE = 3;
/** Bytes of one unit's tag (AES-128-GMAC). */
export const HASH_BYTES = 16;
/** hashAlgorithm 1: AES-128-GMAC under the chain's secret key, fixed zero IV (docs/FORMAT.md). */
export const HASH_GMAC = 1;
export const HASH_KEY_BYTES = 16;
/**
 * Hash unit of new images, measured on the real profile (bench/RESULTS.md, "hash unit for
 * incremental saves"): after a 5 % scattered rewrite the changed units hold 1.50x the rewritten
 * bytes at 64 KiB, 2.47x at 256 KiB; the table is HASH_BYTES (16) per unit (1 MiB for 4 GiB).
 */
export const DEFAULT_HASH_UNIT = 64 << 10;
export const MAX_HASH_UNIT = HASH_UNIT.max;
/** Hash units in all blocks: a reader holds the tables in memory (2^21 x HASH_BYTES = 32 MiB). */
export const MAX_HASH_UNITS = 2 ** 21;
/** Layers of a chain below a delta: depth 1 .. MAX_DEPTH. */
export const MAX_DEPTH = 16;
export const MAX_BASE_PATH = 1024;
export const ID_AT = 132;
export const HASH_UNIT_AT = 148;
export const HASH_ALGORITHM_AT = 152;
export const DEPTH_AT = 156;
export const KEY_AT = 160;
export const BASE_ID_AT = 176;
export const BASE_SIZE_AT = 192;
export const BASE_CRC_AT = 200;
export const BASE_PATH_LENGTH_AT = 204;
export const BASE_PATH_AT = 208;
/** Version 2: a reader holds one stored chunk per worker, so chunks are at most 64 MiB. */
export const MAX_COMPRESSED_CHUNK = 64 << 20;
/** Version 2: chunk index entries in all blocks (48 MiB of index in memory). */
export const MAX_INDEX_ENTRIES = 2 ** 21;
// The addon reads chunk indexes and chains itself: its bounds must be these.
checkNativeLimits({ indexEntry: INDEX_ENTRY, maxCompressedChunk: MAX_COMPRESSED_CHUNK, maxBufferSize: BUFFER_SIZE.max, maxRingBytes: MAX_RING_BYTES, maxLayers: MAX_DEPTH });
export const MAX_BLOCK_SIZE = 2n ** 50n;
export const MAX_DEVICE_STATE = 2n ** 48n;
/** Readers hold checksum tables in memory: 16 Mi entries (128 TiB of RAM at 8 MiB chunks) at most. */
export const MAX_CHECKSUMS = 2 ** 24;
export const GiB = 2 ** 30;
export const CRC_AT = HEADER_SIZE - 4;

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
  /** With FLAG_HASHES: 16 random bytes naming this image, a hash unit, a depth (0 but in deltas) and the chain's secret hash key. */
  hashes?: { imageId: Buffer; unit: number; depth: number; key: Buffer };
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
  /** With FLAG_HASHES: file offset of the block's hash table (16 bytes per hash unit), else 0. */
  hashOffset: number;
}

/** Hash units of a block (0 without hashes). */
export const hashCountOf = (h: ImageHeader, e: { size: number }) => (h.hashes ? Math.ceil(e.size / h.hashes.unit) : 0);
/** Versions 2 and 3 store blocks as chunks with an index (no fixed place: not mappable). */
export const isChunked = (h: ImageHeader) => h.version !== VERSION;


export function fail(code: ImageErrorCode, message: string): never {
  throw new ImageFormatError(code, message);
}

/** A u64 as a Number, refusing values that are not exact. */
export function u64(buf: Buffer, at: number, field: string, max: bigint = BigInt(Number.MAX_SAFE_INTEGER)): number {
  const v = buf.readBigUInt64LE(at);
  if (v > max) fail('EIMG_BOUNDS', `${field} = ${v} is out of range (max ${max})`);
  return Number(v);
}

export function view(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}


/** Decodes UTF-8, refusing invalid sequences (names, creator, base path). */
export const utf8 = new TextDecoder('utf-8', { fatal: true });
