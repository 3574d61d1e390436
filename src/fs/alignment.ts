/** The alignment O_DIRECT needs for an fd: statx(STATX_DIOALIGN), else libvirt's safe 64 KiB. */
import { native } from '../native';

const FALLBACK_DIRECT_ALIGNMENT = 64 * 1024;
const PAGE = 4096;

/**
 * Buffer address, file offset and length alignment for O_DIRECT on this fd. Never below a
 * page (our buffers are page-aligned anyway); 64 KiB when the kernel does not report it.
 */
export function directAlignment(fd: number): number {
  const dio = native.dioAlign(fd);
  if (!dio) return FALLBACK_DIRECT_ALIGNMENT;
  return Math.max(PAGE, dio.memAlign, dio.offsetAlign);
}
