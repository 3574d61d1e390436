/**
 * Typed view of the C++ addon (native/). node-gyp-build loads build/Release first, then
 * prebuilds/. Every function is synchronous except streamCopy; failures throw Node-style
 * errors ({code, errno, syscall}).
 */
import { getSystemErrorMap } from 'util';
import nodeGypBuild = require('node-gyp-build');
import { packageRoot } from './package-root';
import type { RamReadPath } from './image/ram-read';

type Bytes = Uint8Array;
/** A u64 argument: a Number, or a BigInt for values above 2^53. Results are always Numbers: above 2^53 - 1 the addon throws EOVERFLOW rather than round. */
type U64 = number | bigint;

interface DioAlign {
  memAlign: number;
  offsetAlign: number;
}

export interface StreamCopyOptions {
  /** true: pipe -> file; false: file -> pipe. */
  toFile: boolean;
  pipeFd: number;
  fileFd: number;
  /** File offset of the first byte; must be aligned when the file is O_DIRECT. */
  offset: number;
  bufferSize: number;
  align: number;
  /** Writers (toFile) or readers (from file) running at once. */
  threads: number;
  /** Buffers in the ring (at least threads + 1). */
  slots: number;
  /** O_DIRECT: pad the last partial buffer to `align` (the caller truncates afterwards). */
  padTail: boolean;
  /** Buffered fallback: write back and drop each range from the page cache. */
  dropCache: boolean;
}

interface StreamCopyResult {
  /** Stream bytes moved. */
  bytes: number;
  /** Bytes written to the destination (includes tail padding). */
  written: number;
  /** CRC-32C of the stream bytes moved, in stream order. */
  crc: number;
}

/** One range of a RAM file and its fixed place in the image (native/ram_copy.cc). */
export interface RangeJob {
  ramFd: number;
  ramOffset: number;
  length: number;
  imageFd: number;
  imageOffset: number;
  /** Checksum granularity (power of two); the range starts on a chunk boundary. */
  chunkSize?: number;
  /** Zero-detection unit and hole granularity in the image (power of two >= 512). */
  zeroUnit?: number;
  /** Largest single pread/pwrite. */
  maxIo?: number;
  /** Save: zero runs shorter than this (inside data) are written as zeros instead of holes. */
  minHole?: number;
  /** One CRC-32C per chunk: filled by saveRange, checked by restoreRange. */
  checksums?: Uint32Array | null;
  /** restoreRange: 1 fills the RAM file with pwrite() (any filesystem but hugetlbfs), 0 through a shared mapping. */
  ramWrite?: 0 | 1;
  /** saveRange: filled with each hash unit's AES-128-GMAC tag (16 bytes per unit of the range). */
  hashes?: Uint8Array;
  /** [0] set non-zero stops the job at its next chunk or I/O with ECANCELED (an Int32Array on a SharedArrayBuffer, shared by the jobs of one copy). */
  cancel?: Int32Array;
  /** saveRange: how the RAM file is read (default mmap; src/image/ram-read.ts chooses). */
  ramRead?: RamReadPath;
  /** With hashes: the chain's 16-byte secret key. */
  hashKey?: Uint8Array;
  /** With hashes: a power of two, 4 KiB .. 64 MiB, dividing ramOffset. */
  hashUnit?: number;
}

interface RangeResult {
  /** Bytes actually written to (save) or read from (restore) the image. */
  dataBytes: number;
  /** Restore: index of the first chunk whose checksum did not match, else -1. */
  badChunk: number;
  badCrc: number;
  /** saveRange, saveChunks: how the RAM file was read. */
  ramRead?: RamReadPath;
}

/** One range of a RAM file to or from the chunk area of a compressed image (docs/FORMAT.md, version 2). */
export interface ChunkJob {
  ramFd: number;
  /** A multiple of chunkSize. */
  ramOffset: number;
  length: number;
  imageFd: number;
  /** Power of two, 4 KiB .. 64 MiB. */
  chunkSize: number;
  /** The image's O_DIRECT unit: stored chunks start on and are padded to it. */
  unit: number;
  /** The range's chunk index entries, 24 bytes each: filled by saveChunks, read by restoreChunks. */
  index: Uint8Array;
  /** saveChunks: zstd level (0: store every chunk raw). */
  level?: number;
  /** saveChunks: [0] = next free byte of the chunk area, advanced atomically by every worker (on a SharedArrayBuffer). */
  cursor?: BigInt64Array;
  /** restoreChunks: check each chunk's CRC (default true). */
  verify?: boolean;
  /** restoreChunks: 1 fills the RAM file with pwrite() (any filesystem but hugetlbfs), 0 through a shared mapping. */
  ramWrite?: 0 | 1;
  /** restoreChunks of a chain: the fds of layers 1.. (the bases); an index entry's last u32 names its layer (0: imageFd). */
  layerFds?: number[];
  /** saveChunks: filled with each hash unit's AES-128-GMAC tag (16 bytes per unit of the range). */
  hashes?: Uint8Array;
  /** As RangeJob.cancel. */
  cancel?: Int32Array;
  /** saveChunks: as RangeJob.ramRead. */
  ramRead?: RamReadPath;
  hashKey?: Uint8Array;
  hashUnit?: number;
  /** saveChunks of a delta (hashUnit = chunkSize): the base's hashes of the same units; a unit with the same digest is stored as BASE. */
  baseHashes?: Uint8Array;
}

interface ChunkResult extends RangeResult {
  /** restoreChunks: why chunk badChunk's stored bytes do not decode (then badCrc is 0). */
  badFrame?: string;
}

export interface NativeBinding {
  allocAligned(size: number, alignment: number): ArrayBuffer;
  pread(fd: number, buf: Bytes, offset: U64): number;
  pwrite(fd: number, buf: Bytes, offset: U64): number;
  read(fd: number, buf: Bytes): number;
  write(fd: number, buf: Bytes): number;
  getFlags(fd: number): number;
  setFlags(fd: number, flags: number): void;
  dioAlign(fd: number): DioAlign | null;
  ftruncate(fd: number, length: U64): void;
  /** Returns -1 for SEEK_DATA/SEEK_HOLE past the last data (ENXIO). */
  lseek(fd: number, offset: U64, whence: number): number;
  /** fallocate(PUNCH_HOLE | KEEP_SIZE): the range reads as zeros again and frees its pages. */
  punchHole(fd: number, offset: U64, length: U64): void;
  /** Whether no other open file description refers to fd's file (a write lease could be taken; released at once). Throws where leases are unsupported. */
  writeLeaseFree(fd: number): boolean;
  setPipeSize(fd: number, size: number): number;
  blockDeviceSize(fd: number): number;
  pipe(): [number, number];
  /** Every entry name of the directory open on dirFd ("." and ".." left out), as the bytes they are. */
  readDirectory(dirFd: number): Buffer[];
  /** fstatat(AT_SYMLINK_NOFOLLOW) of one entry of the directory open on dirFd. */
  statAt(dirFd: number, name: Buffer): { mode: number; uid: number; size: number; blocks: number };
  /** unlinkat(dirFd, name, 0): the entry itself (a link, never its target); a directory fails with EISDIR. */
  unlinkAt(dirFd: number, name: Buffer): void;
  /** sendmsg with SCM_RIGHTS: the fds travel with the bytes (QMP getfd). */
  /** Sends on the JS thread; a peer that stops reading fails it with ETIMEDOUT after timeoutMs. */
  sendWithFds(socketFd: number, bytes: Bytes, fds: number[], timeoutMs: number): number;
  saveRange(job: RangeJob): RangeResult;
  restoreRange(job: RangeJob): RangeResult;
  saveChunks(job: ChunkJob): ChunkResult;
  restoreChunks(job: ChunkJob): ChunkResult;
  /** The linked libzstd's version, or null when the addon was built without it. */
  zstd: string | null;
  /** Reads [offset, offset + length) pairs of fd through the page cache (prefetch); returns bytes read. Stops at EOF. */
  readRanges(fd: number, ranges: Float64Array): number;
  /** CPU time (user + sys, this thread) of reading [offset, offset + length) of fd through a fresh mapping and by pread; best of three (native/ram_reader.cc). */
  ramReadCost(fd: number, offset: number, length: number): { mmapNs: number; preadNs: number };
  /** CRC-32C; a previous result as `seed` continues it: crc32c(b, crc32c(a)) === crc32c(a ++ b). */
  crc32c(bytes: Bytes, seed?: number): number;
  /** progress[0] counts bytes moved; set progress[1] = 1n to cancel. */
  streamCopy(options: StreamCopyOptions, progress: BigUint64Array): Promise<StreamCopyResult>;
  /** Names of errno values for the errors the addon throws (given once, at load). */
  setErrnoNames(names: Record<number, string>): void;
  /** Bounds the addon applies itself, compared with the TypeScript layer's when it loads. */
  limits: NativeLimits;
  constants: {
    O_DIRECT: number;
    O_ACCMODE: number;
    O_RDONLY: number;
    O_WRONLY: number;
    O_RDWR: number;
    O_NONBLOCK: number;
    O_NOFOLLOW: number;
    O_APPEND: number;
    O_DIRECTORY: number;
    SEEK_SET: number;
    SEEK_CUR: number;
    SEEK_END: number;
    SEEK_DATA: number;
    SEEK_HOLE: number;
  };
}

export interface NativeLimits {
  indexEntry: number;
  maxCompressedChunk: number;
  maxBufferSize: number;
  maxRingBytes: number;
  maxLayers: number;
}

export const native = nodeGypBuild(packageRoot()) as NativeBinding;
/** Node's own names of errno values (ENOSPC), which the addon gives its errors. */
export function errnoNames(): Record<number, string> {
  return Object.fromEntries([...getSystemErrorMap()].map(([errno, [name]]) => [errno, name]));
}
native.setErrnoNames(errnoNames());

/**
 * The addon's copies of the shared bounds must equal the ones the TypeScript layer checks
 * against (src/util/limits.ts, src/image/format/): a build from other sources would refuse
 * valid jobs, or accept ones this layer never planned for.
 */
export function checkNativeLimits(want: NativeLimits): void {
  const got = native.limits ?? {};
  const differ = (Object.keys(want) as Array<keyof NativeLimits>).filter((k) => got[k] !== want[k]);
  if (differ.length) {
    throw new Error(`the iohelper addon was built from other sources: its ${differ.map((k) => `${k} is ${got[k]}, not ${want[k]}`).join('; ')}; rebuild it (npm run build:native)`);
  }
}
