// EINTR/EAGAIN-safe primitives used by both the JS-facing wrappers and the native copy loops.
#pragma once
#include <sys/types.h>

#include <cstddef>
#include <cstdint>

namespace iohelper {

// Waits until fd is readable (events = POLLIN) or writable (POLLOUT), at most timeoutMs
// (-1: no limit). Returns 0, ETIMEDOUT or errno.
int WaitFd(int fd, short events, int timeoutMs = -1);

// One read()/write() on a pipe or socket; EINTR retried, EAGAIN waited out with poll().
// Return the byte count, or -errno.
ssize_t ReadSome(int fd, void* buf, size_t len);
ssize_t WriteSome(int fd, const void* buf, size_t len);

// What ends a wait on a quiet pipe early: the caller's cancel word, or a copy's own word set by
// the first error of any of its threads (so the others stop without waiting for the peer).
// Either non-zero stops the wait; both are read between poll() slices of 100 ms.
struct StopWords {
  const uint64_t* cancel = nullptr;
  const int* failed = nullptr;
};

// Reads until len bytes or end of stream. Returns bytes read or -errno. With stop words, waits
// in poll() slices and returns -ECANCELED once one is non-zero, so a blocked read can be
// interrupted (a thread stuck in read() would also keep the process from exiting).
ssize_t ReadFull(int fd, void* buf, size_t len, StopWords stop = {});
// Writes all len bytes. Returns 0 or -errno; `stop` as for ReadFull.
int WriteAll(int fd, const void* buf, size_t len, StopWords stop = {});

// pread/pwrite with EINTR retried. pwrite loops over short writes; pread returns what one
// call gave (short only at end of file). Return the byte count or -errno.
ssize_t PreadOnce(int fd, void* buf, size_t len, uint64_t off);
ssize_t PwriteAll(int fd, const void* buf, size_t len, uint64_t off);

}  // namespace iohelper
