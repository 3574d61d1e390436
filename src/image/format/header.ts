/** The 4096-byte header, all versions (docs/FORMAT.md: Header, rules H1–H25). */
import { native } from '../../native';
import { hex, isPowerOfTwo as isPow2 } from '../../util/numbers';
import {
  BASE_CRC_AT, BASE_ID_AT, BASE_PATH_AT, BASE_PATH_LENGTH_AT, BASE_SIZE_AT, BaseReference, CRC_AT, DEPTH_AT, DEVICE_STATE_CRC_AT, ENTRY_SIZE, fail, FLAG_CHECKSUMS,
  FLAG_COMPRESSED, FLAG_DEVICE_STATE_CRC, FLAG_HASHES, GiB, HASH_ALGORITHM_AT, HASH_GMAC, HASH_KEY_BYTES, HASH_UNIT_AT, HEADER_SIZE, ID_AT, ImageHeader, KEY_AT, MAGIC, MAX_BASE_PATH,
  MAX_BLOCKS, MAX_DEPTH, MAX_DEVICE_STATE, MAX_HASH_UNIT, u64, utf8, VERSION, VERSION_COMPRESSED, VERSION_DELTA, view,
} from './common';

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
    b.writeUInt32LE(HASH_GMAC, HASH_ALGORITHM_AT);
    b.writeUInt32LE(h.hashes.depth, DEPTH_AT);
    h.hashes.key.copy(b, KEY_AT);
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
function decodeHashFields(b: Buffer, pageSize: number, delta: boolean): { imageId: Buffer; unit: number; depth: number; key: Buffer } {
  const imageId = Buffer.from(b.subarray(ID_AT, ID_AT + 16));
  if (imageId.every((x) => x === 0)) fail('EIMG_BOUNDS', 'imageId is all zeros');
  const unit = b.readUInt32LE(HASH_UNIT_AT);
  if (!isPow2(unit) || unit < Math.max(4096, pageSize) || unit > MAX_HASH_UNIT) fail('EIMG_BOUNDS', `hashUnit ${unit} is not a power of two in max(4096, pageSize)..64 MiB`);
  const algorithm = b.readUInt32LE(HASH_ALGORITHM_AT);
  if (algorithm !== HASH_GMAC) fail('EIMG_RESERVED', `hash algorithm ${algorithm} is not 1 (AES-128-GMAC)`);
  const depth = b.readUInt32LE(DEPTH_AT);
  if (delta ? depth < 1 || depth > MAX_DEPTH : depth !== 0) fail('EIMG_BOUNDS', `depth ${depth} is not ${delta ? `in 1..${MAX_DEPTH} (a delta)` : '0 (not a delta)'}`);
  const key = Buffer.from(b.subarray(KEY_AT, KEY_AT + HASH_KEY_BYTES));
  if (key.every((x) => x === 0)) fail('EIMG_BOUNDS', 'hashKey is all zeros');
  return { imageId, unit, depth, key };
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
  // Writers record a path relative to the delta's directory: an absolute one is a crafted header
  // that would make a reader (often root) open any file. '..' stays legal: a base in a sibling
  // directory is a real layout.
  if (path.startsWith('/')) fail('EIMG_BASE', `base path ${JSON.stringify(path)} is absolute; a delta records its base relative to its own directory`);
  return { imageId: Buffer.from(b.subarray(BASE_ID_AT, BASE_ID_AT + 16)), imageSize: u64(b, BASE_SIZE_AT, 'baseImageSize'), headerCrc: b.readUInt32LE(BASE_CRC_AT), path };
}


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

