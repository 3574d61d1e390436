#include "file_syscalls.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <linux/stat.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
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

bool ArgIovecs(const Info& info, size_t i, std::vector<struct iovec>* iov) {
  if (info.Length() <= i || !info[i].IsArray()) {
    Napi::TypeError::New(info.Env(), "buffers must be an array").ThrowAsJavaScriptException();
    return false;
  }
  Napi::Array arr = info[i].As<Napi::Array>();
  for (uint32_t k = 0; k < arr.Length(); k++) {
    Napi::Value v = arr.Get(k);
    ByteView b;
    if (v.IsTypedArray()) {
      Napi::TypedArray t = v.As<Napi::TypedArray>();
      b.data = static_cast<uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset();
      b.length = t.ByteLength();
    } else {
      Napi::TypeError::New(info.Env(), "buffers must hold TypedArrays").ThrowAsJavaScriptException();
      return false;
    }
    iov->push_back({b.data, b.length});
  }
  return true;
}

Napi::Value Preadv(const Info& info) {
  int fd; uint64_t off; std::vector<struct iovec> iov;
  if (!ArgFd(info, 0, &fd) || !ArgIovecs(info, 1, &iov) || !ArgU64(info, 2, "offset", &off)) return info.Env().Undefined();
  ssize_t n;
  do n = preadv(fd, iov.data(), static_cast<int>(iov.size()), static_cast<off_t>(off));
  while (n < 0 && errno == EINTR);
  return Count(info.Env(), n < 0 ? -errno : n, "preadv");
}

Napi::Value Pwritev(const Info& info) {
  int fd; uint64_t off; std::vector<struct iovec> iov;
  if (!ArgFd(info, 0, &fd) || !ArgIovecs(info, 1, &iov) || !ArgU64(info, 2, "offset", &off)) return info.Env().Undefined();
  ssize_t n;
  do n = pwritev(fd, iov.data(), static_cast<int>(iov.size()), static_cast<off_t>(off));
  while (n < 0 && errno == EINTR);
  return Count(info.Env(), n < 0 ? -errno : n, "pwritev");
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
  int fd; uint64_t fl;
  if (!ArgFd(info, 0, &fd) || !ArgU64(info, 1, "flags", &fl)) return info.Env().Undefined();
  if (fcntl(fd, F_SETFL, static_cast<int>(fl)) < 0) return ThrowErrno(info.Env(), errno, "fcntl");
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

Napi::Value Fdatasync(const Info& info) {
  int fd;
  if (!ArgFd(info, 0, &fd)) return info.Env().Undefined();
  int rc;
  do rc = fdatasync(fd);
  while (rc < 0 && errno == EINTR);
  if (rc < 0) return ThrowErrno(info.Env(), errno, "fdatasync");
  return info.Env().Undefined();
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

Napi::Value Fallocate(const Info& info) {
  int fd; uint64_t mode, off, len;
  if (!ArgFd(info, 0, &fd) || !ArgU64(info, 1, "mode", &mode) || !ArgU64(info, 2, "offset", &off) ||
      !ArgU64(info, 3, "length", &len))
    return info.Env().Undefined();
  int rc;
  do rc = fallocate(fd, static_cast<int>(mode), static_cast<off_t>(off), static_cast<off_t>(len));
  while (rc < 0 && errno == EINTR);
  if (rc < 0) return ThrowErrno(info.Env(), errno, "fallocate");
  return info.Env().Undefined();
}

// lseek(fd, offset, whence). SEEK_DATA/SEEK_HOLE past the last data answer ENXIO: returned as
// -1 rather than thrown, since that is the normal end of a scan.
Napi::Value Lseek(const Info& info) {
  int fd; uint64_t off, whence;
  if (!ArgFd(info, 0, &fd) || !ArgU64(info, 1, "offset", &off) || !ArgU64(info, 2, "whence", &whence))
    return info.Env().Undefined();
  off_t r = lseek(fd, static_cast<off_t>(off), static_cast<int>(whence));
  if (r < 0) {
    if (errno == ENXIO && (whence == SEEK_DATA || whence == SEEK_HOLE)) return Napi::Number::New(info.Env(), -1);
    return ThrowErrno(info.Env(), errno, "lseek");
  }
  return U64Value(info.Env(), static_cast<uint64_t>(r));
}

Napi::Value Sendfile(const Info& info) {
  int out, in; uint64_t off, count;
  if (!ArgFd(info, 0, &out) || !ArgFd(info, 1, &in) || !ArgU64(info, 2, "offset", &off) ||
      !ArgU64(info, 3, "count", &count))
    return info.Env().Undefined();
  off_t o = static_cast<off_t>(off);
  ssize_t n;
  do n = sendfile(out, in, &o, count);
  while (n < 0 && errno == EINTR);
  return Count(info.Env(), n < 0 ? -errno : n, "sendfile");
}

Napi::Value CopyFileRange(const Info& info) {
  int in, out; uint64_t inOff, outOff, len;
  if (!ArgFd(info, 0, &in) || !ArgU64(info, 1, "inOffset", &inOff) || !ArgFd(info, 2, &out) ||
      !ArgU64(info, 3, "outOffset", &outOff) || !ArgU64(info, 4, "length", &len))
    return info.Env().Undefined();
  loff_t io = static_cast<loff_t>(inOff), oo = static_cast<loff_t>(outOff);
  ssize_t n;
  do n = copy_file_range(in, &io, out, &oo, len, 0);
  while (n < 0 && errno == EINTR);
  return Count(info.Env(), n < 0 ? -errno : n, "copy_file_range");
}

Napi::Value SetPipeSize(const Info& info) {
  int fd; uint64_t size;
  if (!ArgFd(info, 0, &fd) || !ArgU64(info, 1, "size", &size)) return info.Env().Undefined();
  int rc = fcntl(fd, F_SETPIPE_SZ, static_cast<int>(size));
  if (rc < 0) return ThrowErrno(info.Env(), errno, "fcntl");
  return Napi::Number::New(info.Env(), rc);
}

Napi::Value GetPipeSize(const Info& info) {
  int fd;
  if (!ArgFd(info, 0, &fd)) return info.Env().Undefined();
  int rc = fcntl(fd, F_GETPIPE_SZ);
  if (rc < 0) return ThrowErrno(info.Env(), errno, "fcntl");
  return Napi::Number::New(info.Env(), rc);
}

Napi::Value Fadvise(const Info& info) {
  int fd; uint64_t off, len, advice;
  if (!ArgFd(info, 0, &fd) || !ArgU64(info, 1, "offset", &off) || !ArgU64(info, 2, "length", &len) ||
      !ArgU64(info, 3, "advice", &advice))
    return info.Env().Undefined();
  int rc = posix_fadvise(fd, static_cast<off_t>(off), static_cast<off_t>(len), static_cast<int>(advice));
  if (rc != 0) return ThrowErrno(info.Env(), rc, "posix_fadvise");
  return info.Env().Undefined();
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

// A mapping handed to JavaScript. The finalizer unmaps it unless munmap() already did.
struct Mapping {
  void* addr;
  size_t length;
  bool mapped;
};

Napi::Value Mmap(const Info& info) {
  Napi::Env env = info.Env();
  int fd; uint64_t off, len;
  if (!ArgFd(info, 0, &fd) || !ArgU64(info, 1, "offset", &off) || !ArgU64(info, 2, "length", &len))
    return env.Undefined();
  bool writable = info.Length() > 3 && info[3].ToBoolean();
  bool shared = info.Length() <= 4 || info[4].ToBoolean();
  if (len == 0) {
    Napi::RangeError::New(env, "mmap: length must be > 0").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int prot = PROT_READ | (writable ? PROT_WRITE : 0);
  void* p = mmap(nullptr, len, prot, shared ? MAP_SHARED : MAP_PRIVATE, fd, static_cast<off_t>(off));
  if (p == MAP_FAILED) return ThrowErrno(env, errno, "mmap");
  auto* m = new Mapping{p, len, true};
  return Napi::ArrayBuffer::New(env, p, len, [](Napi::Env, void*, Mapping* hint) {
    if (hint->mapped) munmap(hint->addr, hint->length);
    delete hint;
  }, m);
}

// munmap(arrayBuffer): unmaps now and detaches the ArrayBuffer so JavaScript cannot touch the
// memory afterwards. Never call it while a native operation still uses the mapping.
Napi::Value Munmap(const Info& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArrayBuffer()) {
    Napi::TypeError::New(env, "munmap(arrayBuffer) expects the ArrayBuffer mmap returned").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  if (ab.IsDetached()) return env.Undefined();
  void* addr = ab.Data();
  size_t len = ab.ByteLength();
  if (munmap(addr, len) < 0) return ThrowErrno(env, errno, "munmap");
  ab.Detach();
  return env.Undefined();
}

}  // namespace

void InitFileSyscalls(Napi::Env env, Napi::Object exports) {
  struct Fn { const char* name; Napi::Function::Callback cb; };
  const Fn fns[] = {
      {"pread", Pread}, {"pwrite", Pwrite}, {"preadv", Preadv}, {"pwritev", Pwritev},
      {"read", Read}, {"write", Write}, {"getFlags", GetFlags}, {"setFlags", SetFlags},
      {"dioAlign", DioAlign}, {"fdatasync", Fdatasync}, {"ftruncate", Ftruncate},
      {"fallocate", Fallocate}, {"lseek", Lseek}, {"sendfile", Sendfile},
      {"copyFileRange", CopyFileRange}, {"setPipeSize", SetPipeSize}, {"getPipeSize", GetPipeSize},
      {"fadvise", Fadvise}, {"blockDeviceSize", BlockDeviceSize}, {"pipe", Pipe},
      {"mmap", Mmap}, {"munmap", Munmap},
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
  c.Set("SEEK_SET", SEEK_SET);
  c.Set("SEEK_CUR", SEEK_CUR);
  c.Set("SEEK_END", SEEK_END);
  c.Set("SEEK_DATA", SEEK_DATA);
  c.Set("SEEK_HOLE", SEEK_HOLE);
  c.Set("FALLOC_FL_KEEP_SIZE", FALLOC_FL_KEEP_SIZE);
  c.Set("FALLOC_FL_PUNCH_HOLE", FALLOC_FL_PUNCH_HOLE);
  c.Set("POSIX_FADV_DONTNEED", POSIX_FADV_DONTNEED);
  c.Set("POSIX_FADV_SEQUENTIAL", POSIX_FADV_SEQUENTIAL);
  exports.Set("constants", c);
}

}  // namespace iohelper
