/**
 * The iohelper library: what the CLI is a thin layer over.
 *
 *   streamCopy()  the stream helper (libvirt_iohelper's job, overlapped, O_DIRECT)
 *   save()        guest RAM files + QEMU's device-state stream -> one image (parallel)
 *   restore()     image -> RAM files (parallel, checksummed) + device-state stream
 *   inspect()     what a file is and what it holds
 *   convert()     one image into another form (mappable, compressed, flattened chain)
 *   saveVm(), restoreVm(), cloneVm()   a QEMU's whole save, restore and clone (what `iohelper vm` runs)
 *   QmpClient, saveVmToImage(), startImageRestore()/finishImageRestore(),
 *   saveThroughHelper()/restoreThroughHelper()   the QEMU-facing steps of these flows
 */
export { streamCopy } from './stream/copy';
export type { StreamCopyRequest, StreamCopyOutcome, DirectMode } from './stream/copy';
export { save, DEFAULT_JOBS, DEFAULT_MIN_HOLE } from './image/save';
export type { SaveOptions, SaveResult } from './image/save';
export { restore } from './image/restore';
export type { RestoreOptions, RestoreResult } from './image/restore';
export { inspect } from './image/inspect';
export { convert } from './image/convert';
export type { ConvertOptions, ConvertResult } from './image/convert';
export { saveVm, saveVmStream, restoreVm, cloneVm } from './vm/manager';
export type { SaveVmOptions, StartOptions, PrefetchOptions, CheckOptions } from './vm/manager';
export type { QemuInstance } from './vm/qemu-launch';
export type { InspectResult } from './image/inspect';
export { ImageFormatError } from './image/format';
export type { RamSource } from './image/ram-files';
export type { Progress, ProgressListener } from './progress';
export { QmpClient, QmpError, waitForMigration } from './qmp/client';
export type { QmpConnectOptions } from './qmp/client';
export { startImageRestore, finishImageRestore, enableIgnoreShared } from './vm/image-migration';
export { saveVmToImage } from './vm/image-save';
export { saveThroughHelper, restoreThroughHelper } from './vm/stream-migration';
export { UsageError } from './errors';
export type { SystemError } from './errors';
