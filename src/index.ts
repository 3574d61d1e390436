/**
 * The iohelper library: what the CLI is a thin layer over.
 *
 *   streamCopy()  the stream helper (libvirt_iohelper's job, overlapped, O_DIRECT)
 *   save()        guest RAM files + QEMU's device-state stream -> one image (parallel)
 *   restore()     image -> RAM files (parallel, checksummed) + device-state stream
 *   inspect()     what a file is and what it holds
 *   QmpClient, saveVmToImage(), startImageRestore()/finishImageRestore(),
 *   saveThroughHelper()/restoreThroughHelper()   drive QEMU for these flows
 */
export { streamCopy } from './stream/copy';
export type { StreamCopyRequest, StreamCopyOutcome, DirectMode } from './stream/copy';
export { save, DEFAULT_JOBS, DEFAULT_MIN_HOLE } from './image/save';
export type { SaveOptions, SaveResult } from './image/save';
export { restore } from './image/restore';
export type { RestoreOptions, RestoreResult } from './image/restore';
export { inspect } from './image/inspect';
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
