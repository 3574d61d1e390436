/** The tests use the bench's libvirtd helpers (bench/lib/libvirtd.ts): one way to start and drive it. */
export { domainRamFile, ensureLibvirtd, libvirtdUnavailable, memoryBackingOnTmpfs, virsh, virshResult } from '../../bench/lib/libvirtd';
export type { Libvirtd } from '../../bench/lib/libvirtd';
