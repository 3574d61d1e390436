#include "retry.h"

#include <cerrno>
#include <poll.h>
#include <time.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

namespace iohelper {

int WaitFd(int fd, short events, int timeoutMs) {
  struct pollfd p = {fd, events, 0};
  struct timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (int left = timeoutMs;;) {
    int rc = poll(&p, 1, left);
    if (rc > 0 || (rc == 0 && timeoutMs < 0)) return 0;
    if (rc == 0) return ETIMEDOUT;
    if (errno != EINTR) return errno;
    if (timeoutMs >= 0) {  // what is left of the whole wait, not a new one after each signal
      struct timespec now;
      clock_gettime(CLOCK_MONOTONIC, &now);
      int64_t spent = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
      if (spent >= timeoutMs) return ETIMEDOUT;
      left = static_cast<int>(timeoutMs - spent);
    }
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

namespace {
// The errno to report when a write fails after a short one. A short write to a regular file
// means the kernel stopped partway: the filesystem ran out of room, or a quota or the file size
// limit was reached. With O_DIRECT the rest may then start unaligned, and the kernel can reject
// that with EINVAL before it looks for space, hiding the cause. Call it ENOSPC only when the
// filesystem says so: a regular file whose filesystem has no room left for the rest (root may
// use the reserved blocks: f_bfree for root, f_bavail for others). Anything else keeps its
// errno (a quota or a size limit is not "no space"; a full ext4 on this box answered an
// O_DIRECT write with ENOSPC itself, not EINVAL). A block device needs no rule: its short write stops at its end, which is
// aligned, and the next write there answers ENOSPC.
int ErrnoAfterShortWrite(int fd, int err, size_t rest) {
  if (err != EINVAL) return err;
  struct stat st;
  struct statfs fs;
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || fstatfs(fd, &fs) < 0) return err;
  uint64_t freeBlocks = geteuid() == 0 ? fs.f_bfree : fs.f_bavail;
  return freeBlocks * static_cast<uint64_t>(fs.f_bsize) < rest ? ENOSPC : err;
}
}  // namespace

ssize_t PwriteAll(int fd, const void* buf, size_t len, uint64_t off) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = pwrite(fd, static_cast<const char*>(buf) + done, len - done, static_cast<off_t>(off + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (done > 0) return -ErrnoAfterShortWrite(fd, errno, len - done);
      return -errno;
    }
    if (n == 0) return -EIO;
    done += static_cast<size_t>(n);
  }
  return static_cast<ssize_t>(done);
}

}  // namespace iohelper
