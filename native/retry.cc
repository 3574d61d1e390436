#include "retry.h"

#include <cerrno>
#include <poll.h>
#include <unistd.h>

namespace iohelper {

int WaitFd(int fd, short events) {
  struct pollfd p = {fd, events, 0};
  for (;;) {
    int rc = poll(&p, 1, -1);
    if (rc >= 0) return 0;
    if (errno != EINTR) return errno;
  }
}

ssize_t ReadSome(int fd, void* buf, size_t len) {
  for (;;) {
    ssize_t n = read(fd, buf, len);
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      int err = WaitFd(fd, POLLIN);
      if (err) return -err;
      continue;
    }
    return -errno;
  }
}

ssize_t WriteSome(int fd, const void* buf, size_t len) {
  for (;;) {
    ssize_t n = write(fd, buf, len);
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      int err = WaitFd(fd, POLLOUT);
      if (err) return -err;
      continue;
    }
    return -errno;
  }
}

namespace {
// Waits until fd is ready or a stop word is set. Returns 0, -ECANCELED or -errno.
int WaitCancellable(int fd, short events, StopWords stop) {
  if (!stop.cancel && !stop.failed) return 0;
  for (;;) {
    if ((stop.cancel && __atomic_load_n(stop.cancel, __ATOMIC_RELAXED)) ||
        (stop.failed && __atomic_load_n(stop.failed, __ATOMIC_ACQUIRE)))
      return -ECANCELED;
    struct pollfd p = {fd, events, 0};
    int rc = poll(&p, 1, 100);
    if (rc > 0) return 0;
    if (rc < 0 && errno != EINTR) return -errno;
  }
}
}  // namespace

ssize_t ReadFull(int fd, void* buf, size_t len, StopWords stop) {
  size_t got = 0;
  while (got < len) {
    if (int w = WaitCancellable(fd, POLLIN, stop)) return w;
    ssize_t n = ReadSome(fd, static_cast<char*>(buf) + got, len - got);
    if (n < 0) return n;
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  return static_cast<ssize_t>(got);
}

int WriteAll(int fd, const void* buf, size_t len, StopWords stop) {
  size_t done = 0;
  while (done < len) {
    if (int w = WaitCancellable(fd, POLLOUT, stop)) return w;
    ssize_t n = WriteSome(fd, static_cast<const char*>(buf) + done, len - done);
    if (n < 0) return static_cast<int>(n);
    done += static_cast<size_t>(n);
  }
  return 0;
}

ssize_t PreadOnce(int fd, void* buf, size_t len, uint64_t off) {
  for (;;) {
    ssize_t n = pread(fd, buf, len, static_cast<off_t>(off));
    if (n >= 0) return n;
    if (errno != EINTR) return -errno;
  }
}

ssize_t PwriteAll(int fd, const void* buf, size_t len, uint64_t off) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = pwrite(fd, static_cast<const char*>(buf) + done, len - done, static_cast<off_t>(off + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      // After a short O_DIRECT write the rest starts unaligned and the kernel answers EINVAL;
      // the short write itself meant the device ran out of space.
      if (errno == EINVAL && done > 0) return -ENOSPC;
      return -errno;
    }
    if (n == 0) return -EIO;
    done += static_cast<size_t>(n);
  }
  return static_cast<ssize_t>(done);
}

}  // namespace iohelper
