// EINTR/EAGAIN-safe primitives used by both the JS-facing wrappers and the native copy loops.
#pragma once
#include <sys/types.h>

#include <cstddef>
#include <cstdint>

namespace iohelper {

// Waits until fd is readable (events = POLLIN) or writable (POLLOUT). Returns 0 or errno.
int WaitFd(int fd, short events);

// One read()/write() on a pipe or socket; EINTR retried, EAGAIN waited out with poll().
// Return the byte count, or -errno.
ssize_t ReadSome(int fd, void* buf, size_t len);
ssize_t WriteSome(int fd, const void* buf, size_t len);

// Reads until len bytes or end of stream. Returns bytes read or -errno. With `cancel`, waits
// in poll() slices and returns -ECANCELED once *cancel is non-zero, so a blocked read can be
// interrupted (a thread stuck in read() would also keep the process from exiting).
ssize_t ReadFull(int fd, void* buf, size_t len, const uint64_t* cancel = nullptr);
// Writes all len bytes. Returns 0 or -errno; `cancel` as for ReadFull.
int WriteAll(int fd, const void* buf, size_t len, const uint64_t* cancel = nullptr);

// pread/pwrite with EINTR retried. pwrite loops over short writes; pread returns what one
// call gave (short only at end of file). Return the byte count or -errno.
ssize_t PreadOnce(int fd, void* buf, size_t len, uint64_t off);
ssize_t PwriteAll(int fd, const void* buf, size_t len, uint64_t off);

}  // namespace iohelper
