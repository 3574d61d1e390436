/** inspect(): what a file is (our image, a libvirt save image, a raw QEMU stream) and its facts. */
import * as fs from 'fs';
import { ImageFormatError } from './format';
import { readImageMetadata } from './read-image';
import { SNIFF_BYTES, sniffImage } from './sniff';

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
  blocks?: Array<{ name: string; size: number; offset: number; dataBytes: number; chunkSize: number; checksumCount: number }>;
  deviceStateBytes?: number;
  /** Why a file that looks like our image is refused. */
  invalid?: { code: string; message: string };
  /** libvirt save images */
  libvirt?: { complete: boolean; version: number; xmlLength: number; wasRunning: boolean; format: number };
  /** raw QEMU streams */
  qemuStreamVersion?: number;
}

export function inspect(path: string): InspectResult {
  const fd = fs.openSync(path, fs.constants.O_RDONLY);
  try {
    const st = fs.fstatSync(fd);
    const base: InspectResult = { path, kind: 'unknown', fileSize: st.size, allocatedBytes: st.blocks * 512 };
    const head = Buffer.alloc(SNIFF_BYTES);
    const n = fs.readSync(fd, head, 0, head.length, 0);
    const kind = sniffImage(head.subarray(0, n));
    if (kind.kind === 'iohelper') return { ...base, ...describeImage(fd) };
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

function describeImage(fd: number): Partial<InspectResult> {
  try {
    const { header: h, entries } = readImageMetadata(fd, '', { allowUncommitted: true, skipChecksums: true });
    return {
      kind: 'iohelper',
      committed: h.committed,
      version: h.version,
      pageSize: h.pageSize,
      alignment: h.alignment,
      checksums: h.flags !== 0,
      creator: h.creator,
      createdAt: isoTime(h.createdMs),
      blocks: entries.map((e) => ({ name: e.name, size: e.size, offset: e.offset, dataBytes: e.dataBytes, chunkSize: e.chunkSize, checksumCount: e.checksumCount })),
      deviceStateBytes: h.committed ? h.deviceStateLength : undefined,
    };
  } catch (e) {
    if (!(e instanceof ImageFormatError)) throw e;
    return { kind: 'iohelper', committed: false, invalid: { code: e.code, message: e.message } };
  }
}

/** The header's timestamp as ISO text; a value no Date can hold (a hostile image) says so instead of throwing. */
function isoTime(ms: number): string {
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? `invalid (${ms} ms)` : d.toISOString();
}
