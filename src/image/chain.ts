/**
 * Chains of delta images (docs/FORMAT.md, version 3, rules R1–R7): opens every base of a delta
 * by the path it records, checks that each is the very image the delta was saved against, and
 * resolves, for every hash unit, the layer that stores it into one chunk index the addon reads
 * (native/chunk_codec.cc: an entry's last u32 names its layer). Nothing is written.
 */
import * as fs from 'fs';
import * as path from 'path';
import { systemError } from '../errors';
import { openFile } from '../fs/open-file';
import {
  BaseReference,
  BlockEntry,
  CHUNK_BASE,
  CHUNK_RAW,
 
  ImageFormatError,
  ImageHeader,
  INDEX_ENTRY,
  isChunked,
  MAX_DEPTH,
  VERSION,
  VERSION_DELTA,
} from './format';
import { hex } from '../util/numbers';
import { ImageMetadata, readChunkIndexes, readImageMetadata } from './io/read-image';

interface Layer {
  /** The path the layer was found at (the top: as the user named it). */
  name: string;
  fd: number;
  meta: ImageMetadata;
  /** Chunked layers (versions 2 and 3): each block's checked chunk index. */
  indexes: Buffer[];
}

export interface Chain {
  /** Top first: layers[0] is the image asked for, layers[i + 1] the base of layers[i]. */
  layers: Layer[];
  /** Closes the bases this chain opened (not the top's fd, which the caller owns). */
  close(): void;
}

function refuse(message: string): never {
  throw new ImageFormatError('EIMG_BASE', message);
}

/** Where a delta's relative base path points: its own directory (the top's, through /proc for an fd). */
export function directoryOf(name: string, fd: number): string {
  try {
    return path.dirname(fs.readlinkSync(`/proc/self/fd/${fd}`));
  } catch {
    return path.dirname(path.resolve(name));
  }
}

export interface ChainOptions {
  /**
   * The top's base as the user names it (restore, inspect, convert --base: a chain that was
   * moved), opened instead of the path the top records; the layers below it are found from it.
   */
  base?: string;
}

/**
 * Every layer below `top` (a committed image whose metadata was read), checked; a non-delta is a
 * chain of one. A base found by the path a header records is a file the user did not name: the
 * path is data (an absolute one is refused by rule H25), the file is opened O_NOFOLLOW as a
 * regular file, and until it is known to be the very image the delta was saved against (R3) a
 * refusal says only that, never what the file holds, its size or its type.
 */
export function openChain(top: { fd: number; name: string; meta: ImageMetadata }, o: ChainOptions = {}): Chain {
  const layers: Layer[] = [{ ...top, indexes: isChunked(top.meta.header) ? readChunkIndexes(top.fd, top.name, top.meta.header, top.meta.entries) : [] }];
  const close = () => layers.slice(1).forEach((l) => fs.closeSync(l.fd));
  if (o.base !== undefined && top.meta.header.version !== VERSION_DELTA) refuseBaseOverride(top.name);
  try {
    const seen = new Set([fileKey(top.fd)]);
    for (let child = layers[0]; child.meta.header.version === VERSION_DELTA; child = layers[layers.length - 1]) {
      const named = child === layers[0] && o.base !== undefined;
      const basePath = named ? o.base! : path.resolve(directoryOf(child.name, child.fd), child.meta.header.base!.path);
      const what = named ? `base ${basePath} of ${child.name}` : `the recorded base ${basePath} of ${child.name}`;
      const moved = 'if the chain was moved, name its base with --base (restore, inspect, convert)';
      // The reason a recorded base is refused before R3 passed: nothing about the file itself.
      const notTheBase: (why: () => string) => never = (why) => refuse(named ? why() : `${what} is not the image this delta was saved against; ${moved}`);
      let fd: number;
      try {
        fd = openFile(basePath, fs.constants.O_RDONLY, { noFollow: !named });
      } catch (e) {
        if (!named && (e as NodeJS.ErrnoException).code === 'ENOENT') refuse(`${what} does not exist (ENOENT); ${moved}`);
        notTheBase(() => `${what} cannot be opened: ${(e as Error).message}`);
      }
      // Registered at once so that close() releases it whatever is refused below.
      const layer: Layer = { name: basePath, fd, meta: undefined as unknown as ImageMetadata, indexes: [] };
      layers.push(layer);
      if (seen.has(fileKey(fd))) refuse(`${what} is a file already in the chain: the chain is cyclic`);
      seen.add(fileKey(fd));
      try {
        layer.meta = readImageMetadata(fd, basePath, { skipChecksums: true });
      } catch (e) {
        notTheBase(() => `${what} is not a valid image: ${(e as Error).message}`);
      }
      checkBase(child.meta, layer.meta, what, notTheBase);
      layer.indexes = isChunked(layer.meta.header) ? readChunkIndexes(fd, basePath, layer.meta.header, layer.meta.entries) : [];
    }
  } catch (e) {
    close();
    throw e;
  }
  return { layers, close };
}

/** A base named (--base) for an image that is not a delta. */
export function refuseBaseOverride(image: string): never {
  throw systemError('EINVAL', `${image} is not a delta: --base names the base of a delta`, { path: image });
}

function fileKey(fd: number): string {
  const st = fs.fstatSync(fd, { bigint: true });
  return `${st.dev}:${st.ino}`;
}

/**
 * The chain a delta is saved against: `base` (named by the user, open on `fd`: committed, with
 * content hashes, not too deep) and every layer below it, checked with the rules a restore of
 * the delta applies (R1–R7), the base's own R5 included: no delta is written that no reader
 * could read.
 */
export function openBaseChain(fd: number, name: string): Chain {
  const meta = readImageMetadata(fd, name, { skipChecksums: true });
  const h = meta.header;
  if (!h.hashes) refuse(`${name} has no content hashes (saved by an older iohelper): save a full image first and deltas against that one`);
  if (h.hashes.depth >= MAX_DEPTH) refuse(`${name} is already ${h.hashes.depth} deltas deep; a chain holds at most ${MAX_DEPTH}: flatten it first (iohelper convert --flatten ${name} FULL) and save against the full image`);
  const chain = openChain({ fd, name, meta });
  try {
    checkUnitsReadable(meta, h.hashes.unit, name);
    resolveChain(chain);
  } catch (e) {
    chain.close();
    throw e;
  }
  return chain;
}

/**
 * The checks of a save by path to `image` against `base` that need no RAM (vm save makes them
 * before the guest is stopped): the base's chain can be read (openBaseChain), and `image` is
 * not the base or any layer below it, which the rename of the new image would take away.
 */
export function checkDeltaPlan(image: string, base: string): void {
  const fd = openFile(base, fs.constants.O_RDONLY);
  let chain: Chain | undefined;
  try {
    chain = openBaseChain(fd, base);
    let target: fs.BigIntStats | undefined;
    try {
      target = fs.statSync(image, { bigint: true });
    } catch {
      // a new name: nothing is replaced
    }
    if (target) refuseLayer(chain, [target], image);
  } finally {
    chain?.close();
    fs.closeSync(fd);
  }
}

/**
 * Just before a delta is committed: the path it records (resolved as a reader will) still names
 * the base it was computed against, the same file (device, inode) with the same header (id, size,
 * header CRC). A save of the base that ran meanwhile renamed a new file over that path, or a copy
 * wrote over it; committing then would leave a delta no reader accepts.
 */
export function checkBaseUnchanged(delta: { fd: number; name: string }, base: { fd: number; name: string }, ref: BaseReference): void {
  const basePath = path.resolve(directoryOf(delta.name, delta.fd), ref.path);
  const changed = (): never => refuse(`the base ${base.name} changed while ${delta.name} was saved against it (it was saved again or replaced); the delta was not committed`);
  let fd: number;
  try {
    fd = openFile(basePath, fs.constants.O_RDONLY, { noFollow: true });
  } catch {
    return changed();
  }
  try {
    const now = fs.fstatSync(fd, { bigint: true });
    const then = fs.fstatSync(base.fd, { bigint: true });
    let meta: ImageMetadata | undefined;
    try {
      meta = readImageMetadata(fd, basePath, { skipChecksums: true });
    } catch {
      // not an image any more: changed
    }
    const same = meta && now.dev === then.dev && now.ino === then.ino && meta.header.hashes?.imageId.equals(ref.imageId) && meta.fileSize === ref.imageSize && meta.headerCrc === ref.headerCrc;
    if (!same) changed();
  } finally {
    fs.closeSync(fd);
  }
}

/** Refuses (EINVAL) when one of `files` (the file a save writes, or replaces) is a layer of `chain`, a base's chain. */
export function refuseLayer(chain: Chain, files: Array<{ dev: bigint; ino: bigint }>, image: string): void {
  for (const l of chain.layers) {
    const st = fs.fstatSync(l.fd, { bigint: true });
    if (files.some((f) => f.dev === st.dev && f.ino === st.ino)) {
      throw systemError('EINVAL', `${image} is ${l.name} (${l === chain.layers[0] ? 'the base' : 'a layer of the base'}): a delta never replaces an image of its own chain (the delta needs it); save the delta under another name`, { path: image });
    }
  }
}

/** The blocks of two images (or of an image and RAM files) are the same: names in order, sizes, page sizes. */
export function sameBlocks(a: Array<Pick<BlockEntry, 'name' | 'size' | 'pageSize'>>, b: Array<Pick<BlockEntry, 'name' | 'size' | 'pageSize'>>): boolean {
  return a.length === b.length && a.every((e, i) => e.name === b[i].name && e.size === b[i].size && e.pageSize === b[i].pageSize);
}

/** Blocks as messages show them. */
export function describeBlocks(es: Array<Pick<BlockEntry, 'name' | 'size' | 'pageSize'>>): string {
  return es.map((e) => `${e.name} (${e.size} bytes, ${e.pageSize}-byte pages)`).join(', ');
}

/**
 * Rules R2–R5: the base is the image the delta was saved against, one level down, of the same
 * layout. Until R3 passed, a refusal goes through `notTheBase` (which may hide the details).
 */
function checkBase(child: ImageMetadata, base: ImageMetadata, what: string, notTheBase: (why: () => string) => never = (why) => refuse(why())): void {
  const ref = child.header.base!;
  const h = base.header;
  if (!h.hashes) notTheBase(() => `${what} has no content hashes (saved by an older iohelper), so it is not the image the delta was saved against`);
  const differs: string[] = [];
  if (!h.hashes.imageId.equals(ref.imageId)) differs.push(`its id is ${h.hashes.imageId.toString('hex')}, the delta's base was ${ref.imageId.toString('hex')}`);
  if (base.fileSize !== ref.imageSize) differs.push(`its size is ${base.fileSize} bytes, the delta's base had ${ref.imageSize}`);
  if (base.headerCrc !== ref.headerCrc) differs.push(`its header CRC-32C is ${hex(base.headerCrc)}, the delta's base had ${hex(ref.headerCrc)}`);
  if (differs.length) notTheBase(() => `${what} is not the image the delta was saved against (it was replaced or saved again): ${differs.join('; ')}`);
  if (h.hashes.depth !== child.header.hashes!.depth - 1) refuse(`${what} has depth ${h.hashes.depth}, the delta ${child.header.hashes!.depth}: a base is one level below its delta`);
  checkSameLayout(child, base, what);
}

/** Rules R4–R5: the same blocks, page sizes, hash unit and hash key; a compressed base stores whole units. */
function checkSameLayout(child: { header: ImageHeader; entries: BlockEntry[] }, base: { header: ImageHeader; entries: BlockEntry[] }, what: string): void {
  const unit = child.header.hashes!.unit;
  if (base.header.hashes!.unit !== unit) refuse(`${what} has hash unit ${base.header.hashes!.unit}, the delta ${unit}`);
  if (!base.header.hashes!.key.equals(child.header.hashes!.key)) refuse(`${what} has another hash key than the delta: not of its chain`);
  if (!sameBlocks(base.entries, child.entries)) refuse(`${what} has other RAM blocks: ${describeBlocks(base.entries)}; the delta has ${describeBlocks(child.entries)}`);
  checkUnitsReadable(base, unit, what);
}

/** Rule R5's second half: each `unit`-byte unit of the base can be read alone (a version-2 base stores whole units). */
function checkUnitsReadable(base: { header: ImageHeader; entries: BlockEntry[] }, unit: number, what: string): void {
  if (isChunked(base.header) && base.header.version !== VERSION_DELTA && base.entries.some((e) => e.chunkSize !== unit)) {
    refuse(`${what} is compressed in ${base.entries[0].chunkSize}-byte chunks, so a ${unit}-byte unit cannot be read alone: convert it to a mappable image (iohelper convert) and save the delta against that`);
  }
}

/** How many units, and bytes, of the resolved image each layer supplies. */
export interface LayerShare {
  units: number;
  bytes: number;
}

/**
 * One chunk index per block, in units of the top's hash unit, each entry naming the layer that
 * stores the unit (its last u32) with the CRC the top recorded for it (rule R6). A chain of
 * one returns the top's own indexes.
 */
export function resolveChain(chain: Chain): { indexes: Buffer[]; shares: LayerShare[] } {
  const [top, ...bases] = chain.layers;
  const shares = chain.layers.map(() => ({ units: 0, bytes: 0 }));
  if (!bases.length) return { indexes: top.indexes, shares };
  if (bases.length > MAX_DEPTH) refuse(`${top.name}: the chain has ${bases.length} bases, more than ${MAX_DEPTH}`);
  const indexes = top.meta.entries.map((e, block) => {
    const out = Buffer.from(top.indexes[block]);
    for (let u = 0; u < e.checksumCount; u++) {
      const at = u * INDEX_ENTRY;
      const length = Math.min(e.chunkSize, e.size - u * e.chunkSize);
      let layer = 0;
      while (layer < chain.layers.length && chain.layers[layer].meta.header.version === VERSION_DELTA && chain.layers[layer].indexes[block].readUInt32LE(at + 16) === CHUNK_BASE) layer++;
      if (layer === chain.layers.length) refuse(`${chain.layers[layer - 1].name}: block '${e.name}' unit ${u} is a base unit in the last layer of the chain`);
      const l = chain.layers[layer];
      if (layer > 0) {
        const crc = out.readUInt32LE(at + 12);
        if (l.meta.header.version === VERSION) {
          const le = l.meta.entries[block];
          out.writeBigUInt64LE(BigInt(le.offset + u * e.chunkSize), at);
          out.writeUInt32LE(length, at + 8);
          out.writeUInt32LE(CHUNK_RAW, at + 16);
        } else {
          l.indexes[block].copy(out, at, at, at + INDEX_ENTRY);
        }
        out.writeUInt32LE(crc, at + 12);
        out.writeUInt32LE(layer, at + 20);
      }
      shares[layer].units++;
      shares[layer].bytes += out.readUInt32LE(at + 8);
    }
    return out;
  });
  return { indexes, shares };
}
