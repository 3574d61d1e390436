#include "file_syscalls.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <linux/stat.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <dirent.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <string>
#include <vector>

#include "args.h"
#include "errno_error.h"
#include "retry.h"

namespace iohelper {
namespace {

using Info = Napi::CallbackInfo;

Napi::Value Count(Napi::Env env, ssize_t n, const char* syscall) {
  if (n < 0) return ThrowErrno(env, static_cast<int>(-n), syscall);
  return U64Value(env, static_cast<uint64_t>(n));
}

Napi::Value Pread(const Info& info) {
  int fd; ByteView b; uint64_t off;
  if (!ArgFd(info, 0, &fd) || !ArgBytes(info, 1, &b) || !ArgU64(info, 2, "offset", &off)) return info.Env().Undefined();
  return Count(info.Env(), PreadOnce(fd, b.data, b.length, off), "pread");
}

Napi::Value Pwrite(const Info& info) {
  int fd; ByteView b; uint64_t off;
  if (!ArgFd(info, 0, &fd) || !ArgBytes(info, 1, &b) || !ArgU64(info, 2, "offset", &off)) return info.Env().Undefined();
  return Count(info.Env(), PwriteAll(fd, b.data, b.length, off), "pwrite");
}

Napi::Value Read(const Info& info) {
  int fd; ByteView b;
  if (!ArgFd(info, 0, &fd) || !ArgBytes(info, 1, &b)) return info.Env().Undefined();
  return Count(info.Env(), ReadSome(fd, b.data, b.length), "read");
}

Napi::Value Write(const Info& info) {
  int fd; ByteView b;
  if (!ArgFd(info, 0, &fd) || !ArgBytes(info, 1, &b)) return info.Env().Undefined();
  return Count(info.Env(), WriteSome(fd, b.data, b.length), "write");
}

Napi::Value GetFlags(const Info& info) {
  int fd;
  if (!ArgFd(info, 0, &fd)) return info.Env().Undefined();
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return ThrowErrno(info.Env(), errno, "fcntl");
  return Napi::Number::New(info.Env(), fl);
}

Napi::Value SetFlags(const Info& info) {
  int fd, fl;
  if (!ArgFd(info, 0, &fd) || !ToInteger(info.Env(), info[1], "flags", 0, INT_MAX, &fl)) return info.Env().Undefined();
  if (fcntl(fd, F_SETFL, fl) < 0) return ThrowErrno(info.Env(), errno, "fcntl");
  return info.Env().Undefined();
}

// statx(STATX_DIOALIGN): {memAlign, offsetAlign}, or null when the kernel or filesystem does
// not report it (then both are 0 or the mask bit is missing).
Napi::Value DioAlign(const Info& info) {
  int fd;
  if (!ArgFd(info, 0, &fd)) return info.Env().Undefined();
#ifdef STATX_DIOALIGN
  struct statx stx = {};
  if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) < 0) {
    if (errno == ENOSYS || errno == EINVAL) return info.Env().Null();
    return ThrowErrno(info.Env(), errno, "statx");
  }
  if (!(stx.stx_mask & STATX_DIOALIGN) || stx.stx_dio_offset_align == 0) return info.Env().Null();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("memAlign", Napi::Number::New(info.Env(), stx.stx_dio_mem_align));
  o.Set("offsetAlign", Napi::Number::New(info.Env(), stx.stx_dio_offset_align));
  return o;
#else
  return info.Env().Null();
#endif
}

Napi::Value Ftruncate(const Info& info) {
  int fd; uint64_t len;
  if (!ArgFd(info, 0, &fd) || !ArgU64(info, 1, "length", &len)) return info.Env().Undefined();
  int rc;
  do rc = ftruncate(fd, static_cast<off_t>(len));
  while (rc < 0 && errno == EINTR);
  if (rc < 0) return ThrowErrno(info.Env(), errno, "ftruncate");
  return info.Env().Undefined();
}

// lseek(fd, offset, whence). SEEK_DATA/SEEK_HOLE past the last data answer ENXIO: returned as
// -1 rather than thrown, since that is the normal end of a scan.
Napi::Value Lseek(const Info& info) {
  int fd, whence; uint64_t off;
  if (!ArgFd(info, 0, &fd) || !ArgU64(info, 1, "offset", &off) || !ToInteger(info.Env(), info[2], "whence", 0, INT_MAX, &whence))
    return info.Env().Undefined();
  off_t r = lseek(fd, static_cast<off_t>(off), whence);
  if (r < 0) {
    if (errno == ENXIO && (whence == SEEK_DATA || whence == SEEK_HOLE)) return Napi::Number::New(info.Env(), -1);
    return ThrowErrno(info.Env(), errno, "lseek");
  }
  return U64Value(info.Env(), static_cast<uint64_t>(r));
}

// fallocate(PUNCH_HOLE | KEEP_SIZE): gives [offset, offset + length) back to the filesystem,
// which then reads as zeros; the file's size is kept. Used to undo an in-place fill.
Napi::Value PunchHole(const Info& info) {
  int fd; uint64_t off, len;
  if (!ArgFd(info, 0, &fd) || !ArgU64(info, 1, "offset", &off) || !ArgU64(info, 2, "length", &len))
    return info.Env().Undefined();
  int rc;
  do rc = fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off), static_cast<off_t>(len));
  while (rc < 0 && errno == EINTR);
  if (rc < 0) return ThrowErrno(info.Env(), errno, "fallocate");
  return info.Env().Undefined();
}

// Whether a write lease could be taken on fd's file right now, i.e. no other open file
// description (and so no other process's fd or mapping) refers to it. The lease is released at
// once: holding it would make other processes' opens wait for us. EAGAIN/EBUSY answer false;
// other errors (a filesystem without leases, a file we do not own) are thrown for the caller
// to try another way.
Napi::Value WriteLeaseFree(const Info& info) {
  int fd;
  if (!ArgFd(info, 0, &fd)) return info.Env().Undefined();
  if (fcntl(fd, F_SETLEASE, F_WRLCK) < 0) {
    if (errno == EAGAIN || errno == EBUSY) return Napi::Boolean::New(info.Env(), false);
    return ThrowErrno(info.Env(), errno, "fcntl");
  }
  if (fcntl(fd, F_SETLEASE, F_UNLCK) < 0) return ThrowErrno(info.Env(), errno, "fcntl");
  return Napi::Boolean::New(info.Env(), true);
}

Napi::Value SetPipeSize(const Info& info) {
  int fd, size;
  if (!ArgFd(info, 0, &fd) || !ToInteger(info.Env(), info[1], "size", 0, INT_MAX, &size)) return info.Env().Undefined();
  int rc = fcntl(fd, F_SETPIPE_SZ, size);
  if (rc < 0) return ThrowErrno(info.Env(), errno, "fcntl");
  return Napi::Number::New(info.Env(), rc);
}

Napi::Value BlockDeviceSize(const Info& info) {
  int fd;
  if (!ArgFd(info, 0, &fd)) return info.Env().Undefined();
  uint64_t size = 0;
  if (ioctl(fd, BLKGETSIZE64, &size) < 0) return ThrowErrno(info.Env(), errno, "ioctl");
  return U64Value(info.Env(), size);
}

Napi::Value Pipe(const Info& info) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) < 0) return ThrowErrno(info.Env(), errno, "pipe2");
  Napi::Array a = Napi::Array::New(info.Env(), 2);
  a.Set(0u, Napi::Number::New(info.Env(), fds[0]));
  a.Set(1u, Napi::Number::New(info.Env(), fds[1]));
  return a;
}

// The directory-fd calls of the leftover cleanup (src/fs/stale-temporaries.ts). Names are
// Buffers, never strings: a name that is not UTF-8 is handled as the bytes it is, so the entry
// checked is the entry removed. A name is one path component (no '/', no NUL, not "." or ".."):
// nothing here ever resolves a path through another directory or a link.
bool ArgName(const Info& info, size_t i, std::string* out) {
  ByteView b;
  if (!ArgBytes(info, i, &b)) return false;
  std::string name(reinterpret_cast<const char*>(b.data), b.length);
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos || name.find('\0') != std::string::npos) {
    ThrowErrno(info.Env(), EINVAL, "name");
    return false;
  }
  *out = std::move(name);
  return true;
}

// Every name in the directory open on fd (without "." and ".."), as Buffers. Reads through a
// dup so the caller's fd stays open and its offset is not ours to keep.
Napi::Value ReadDirectory(const Info& info) {
  int fd;
  if (!ArgFd(info, 0, &fd)) return info.Env().Undefined();
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) return ThrowErrno(info.Env(), errno, "fcntl");
  DIR* d = fdopendir(copy);
  if (!d) {
    int err = errno;
    close(copy);
    return ThrowErrno(info.Env(), err, "fdopendir");
  }
  rewinddir(d);
  Napi::Array names = Napi::Array::New(info.Env());
  uint32_t n = 0;
  for (;;) {
    errno = 0;
    struct dirent* e = readdir(d);
    if (!e) break;
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    names.Set(n++, Napi::Buffer<char>::Copy(info.Env(), e->d_name, strlen(e->d_name)));
  }
  int err = errno;
  closedir(d);
  if (err) return ThrowErrno(info.Env(), err, "readdir");
  return names;
}

// fstatat(dirFd, name, AT_SYMLINK_NOFOLLOW): what the entry itself is (a link is reported as
// a link), as {mode, uid, size, blocks}.
Napi::Value StatAt(const Info& info) {
  int fd; std::string name;
  if (!ArgFd(info, 0, &fd) || !ArgName(info, 1, &name)) return info.Env().Undefined();
  struct stat st;
  if (fstatat(fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) return ThrowErrno(info.Env(), errno, "fstatat");
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("mode", Napi::Number::New(info.Env(), st.st_mode));
  o.Set("uid", Napi::Number::New(info.Env(), st.st_uid));
  o.Set("size", U64Value(info.Env(), static_cast<uint64_t>(st.st_size)));
  o.Set("blocks", U64Value(info.Env(), static_cast<uint64_t>(st.st_blocks)));
  return o;
}

// unlinkat(dirFd, name, 0): removes the entry itself, never what a link points at, and never a
// directory (EISDIR): it cannot recurse.
Napi::Value UnlinkAt(const Info& info) {
  int fd; std::string name;
  if (!ArgFd(info, 0, &fd) || !ArgName(info, 1, &name)) return info.Env().Undefined();
  if (unlinkat(fd, name.c_str(), 0) < 0) return ThrowErrno(info.Env(), errno, "unlinkat");
  return info.Env().Undefined();
}

}  // namespace

void InitFileSyscalls(Napi::Env env, Napi::Object exports) {
  struct Fn { const char* name; Napi::Function::Callback cb; };
  const Fn fns[] = {
      {"pread", Pread}, {"pwrite", Pwrite}, {"read", Read}, {"write", Write},
      {"getFlags", GetFlags}, {"setFlags", SetFlags}, {"dioAlign", DioAlign},
      {"ftruncate", Ftruncate}, {"lseek", Lseek},
      {"punchHole", PunchHole}, {"writeLeaseFree", WriteLeaseFree}, {"setPipeSize", SetPipeSize}, {"blockDeviceSize", BlockDeviceSize}, {"pipe", Pipe},
      {"readDirectory", ReadDirectory}, {"statAt", StatAt}, {"unlinkAt", UnlinkAt},
  };
  for (const Fn& f : fns) exports.Set(f.name, Napi::Function::New(env, f.cb, f.name));

  Napi::Object c = Napi::Object::New(env);
  c.Set("O_DIRECT", O_DIRECT);
  c.Set("O_ACCMODE", O_ACCMODE);
  c.Set("O_RDONLY", O_RDONLY);
  c.Set("O_WRONLY", O_WRONLY);
  c.Set("O_RDWR", O_RDWR);
  c.Set("O_NONBLOCK", O_NONBLOCK);
  c.Set("O_NOFOLLOW", O_NOFOLLOW);
  c.Set("O_APPEND", O_APPEND);
  c.Set("O_DIRECTORY", O_DIRECTORY);
  c.Set("SEEK_SET", SEEK_SET);
  c.Set("SEEK_CUR", SEEK_CUR);
  c.Set("SEEK_END", SEEK_END);
  c.Set("SEEK_DATA", SEEK_DATA);
  c.Set("SEEK_HOLE", SEEK_HOLE);
  exports.Set("constants", c);
}

}  // namespace iohelper
