/** inspect(): what a file is (our image, a libvirt save image, a raw QEMU stream) and its facts. */
import * as fs from 'fs';
import { openFile, sizeOfFd } from '../fs/open-file';
import { deviceStateCrc } from './io/device-state';
import { ChainOptions, openChain, refuseBaseOverride, resolveChain } from './chain';
import { CHUNK_BASE, CHUNK_RAW, CHUNK_ZERO, hasChecksums, hasDeviceStateCrc, ImageFormatError, INDEX_ENTRY, isChunked, VERSION_DELTA } from './format';
import { hex } from '../util/numbers';
import { readChunkIndexes, readImageMetadata } from './io/read-image';
import { SNIFF_BYTES, sniffImage } from './format/sniff';

export interface InspectResult {
  path: string;
  kind: 'iohelper' | 'libvirt' | 'qemu-stream' | 'unknown';
  fileSize: number;
  allocatedBytes: number;
  /** iohelper images */
  committed?: boolean;
  version?: number;
  pageSize?: number;
  alignment?: number;
  checksums?: boolean;
  creator?: string;
  createdAt?: string;
  /** Versions 2 and 3: RAM stored as chunks (not mappable by clones or --lazy). */
  compressed?: boolean;
  /** Images with content hashes: the image's id (hex), hash unit, and depth (0: a full image). */
  imageId?: string;
  hashUnit?: number;
  depth?: number;
  /**
   * A committed delta: its layers top first (this image, then each base as resolved), with the
   * units and bytes of the restored RAM each supplies; or why the chain is refused.
   */
  chain?: Array<{ path: string; version: number; depth: number; imageId: string; units: number; bytes: number }>;
  chainError?: { code: string; message: string };
  blocks?: Array<{
    name: string;
    size: number;
    offset: number;
    dataBytes: number;
    chunkSize: number;
    checksumCount: number;
    /** Compressed images and deltas: the chunks by kind (base: the base's) and size / stored bytes. */
    chunks?: { zero: number; raw: number; zstd: number; base: number; ratio: number };
  }>;
  deviceStateBytes?: number;
  /**
   * Committed images: the device state's CRC-32C as recorded and as read now (hex), or null when
   * the image records none (saved by an iohelper before the device-state CRC existed).
   */
  deviceStateCrc?: { recorded: string; computed: string; ok: boolean } | null;
  /** Why a file that looks like our image is refused. */
  invalid?: { code: string; message: string };
  /** libvirt save images */
  libvirt?: { complete: boolean; version: number; xmlLength: number; wasRunning: boolean; format: number };
  /** raw QEMU streams */
  qemuStreamVersion?: number;
}

/** `o.base`: a delta's base at this path instead of the one it records (a moved chain). */
export function inspect(path: string, o: ChainOptions = {}): InspectResult {
  const fd = openFile(path, fs.constants.O_RDONLY, { block: true });
  try {
    const st = fs.fstatSync(fd);
    const base: InspectResult = { path, kind: 'unknown', fileSize: sizeOfFd(fd), allocatedBytes: st.blocks * 512 };
    const head = Buffer.alloc(SNIFF_BYTES);
    const n = fs.readSync(fd, head, 0, head.length, 0);
    const kind = sniffImage(head.subarray(0, n));
    if (kind.kind === 'iohelper') return { ...base, ...describeImage(fd, path, o) };
    if (o.base !== undefined) refuseBaseOverride(path);
    if (kind.kind === 'libvirt') {
      const { complete, version, xmlLength, wasRunning, format } = kind;
      return { ...base, kind: 'libvirt', libvirt: { complete, version, xmlLength, wasRunning, format } };
    }
    if (kind.kind === 'qemu-stream') return { ...base, kind: 'qemu-stream', qemuStreamVersion: kind.version };
    return base;
  } finally {
    fs.closeSync(fd);
  }
}

function describeImage(fd: number, path: string, o: ChainOptions): Partial<InspectResult> {
  try {
    const meta = readImageMetadata(fd, '', { allowUncommitted: true, skipChecksums: true });
    const { header: h, entries } = meta;
    if (o.base !== undefined && h.version !== VERSION_DELTA) refuseBaseOverride(path);
    const compressed = isChunked(h);
    // An incomplete compressed image's indexes may name chunks past its provisional device-state
    // offset: they are read (and checked) only once committed.
    const indexes = compressed && h.committed ? readChunkIndexes(fd, '', h, entries) : [];
    return {
      compressed,
      kind: 'iohelper',
      committed: h.committed,
      version: h.version,
      pageSize: h.pageSize,
      alignment: h.alignment,
      checksums: hasChecksums(h),
      creator: h.creator,
      createdAt: isoTime(h.createdMs),
      blocks: entries.map((e, i) => ({
        name: e.name,
        size: e.size,
        offset: e.offset,
        dataBytes: e.dataBytes,
        chunkSize: e.chunkSize,
        checksumCount: e.checksumCount,
        chunks: compressed && h.committed ? chunkKinds(indexes[i], e.size, e.dataBytes) : undefined,
      })),
      imageId: h.hashes?.imageId.toString('hex'),
      hashUnit: h.hashes?.unit,
      depth: h.hashes?.depth,
      ...(h.version === VERSION_DELTA && h.committed ? describeChain(fd, path, meta, o) : {}),
      deviceStateBytes: h.committed ? h.deviceStateLength : undefined,
      deviceStateCrc: h.committed ? checkedCrc(h.deviceStateCrc, hasDeviceStateCrc(h) ? deviceStateCrc(fd, h, '') : undefined) : undefined,
    };
  } catch (e) {
    if (!(e instanceof ImageFormatError)) throw e;
    return { kind: 'iohelper', committed: false, invalid: { code: e.code, message: e.message } };
  }
}

/** The layers of a delta and what each supplies, or why a restore would refuse the chain. */
function describeChain(fd: number, path: string, meta: ReturnType<typeof readImageMetadata>, o: ChainOptions): Pick<InspectResult, 'chain' | 'chainError'> {
  let chain;
  try {
    chain = openChain({ fd, name: path, meta }, o);
  } catch (e) {
    if (!(e instanceof ImageFormatError)) throw e;
    return { chainError: { code: e.code, message: e.message } };
  }
  try {
    const { shares } = resolveChain(chain);
    return {
      chain: chain.layers.map((l, i) => ({ path: l.name, version: l.meta.header.version, depth: l.meta.header.hashes!.depth, imageId: l.meta.header.hashes!.imageId.toString('hex'), ...shares[i] })),
    };
  } catch (e) {
    if (!(e instanceof ImageFormatError)) throw e;
    return { chainError: { code: e.code, message: e.message } };
  } finally {
    chain.close();
  }
}

function checkedCrc(recorded: number, computed: number | undefined): InspectResult['deviceStateCrc'] {
  if (computed === undefined) return null;
  return { recorded: hex(recorded), computed: hex(computed), ok: recorded === computed };
}

function chunkKinds(index: Buffer, size: number, stored: number) {
  const counts = { zero: 0, raw: 0, zstd: 0, base: 0, ratio: stored ? Number((size / stored).toFixed(2)) : Infinity };
  for (let at = 0; at < index.length; at += INDEX_ENTRY) {
    const kind = index.readUInt32LE(at + 16);
    if (kind === CHUNK_ZERO) counts.zero++;
    else if (kind === CHUNK_RAW) counts.raw++;
    else if (kind === CHUNK_BASE) counts.base++;
    else counts.zstd++;
  }
  return counts;
}

/** The header's timestamp as ISO text; a value no Date can hold (a hostile image) says so instead of throwing. */
function isoTime(ms: number): string {
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? `invalid (${ms} ms)` : d.toISOString();
}
