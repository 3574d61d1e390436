// allocAligned(size, alignment) -> ArrayBuffer whose memory comes from posix_memalign and is
// freed by the finalizer when the ArrayBuffer is collected. Suitable for O_DIRECT I/O.
#include "aligned_buffer.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "args.h"
#include "errno_error.h"

namespace iohelper {
namespace {

Napi::Value AllocAligned(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t n, a;
  if (!ToInteger(env, info[0], "allocAligned: size", 0, int64_t{1} << 40, &n) ||
      !ToInteger(env, info[1], "allocAligned: alignment", sizeof(void*), int64_t{1} << 30, &a))
    return env.Undefined();
  if ((a & (a - 1)) != 0) {
    Napi::RangeError::New(env, "allocAligned: alignment a power of two >= 8").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  void* p = nullptr;
  int rc = posix_memalign(&p, a, n == 0 ? a : n);
  if (rc != 0) return ThrowErrno(env, rc, "posix_memalign");
  memset(p, 0, n == 0 ? a : n);
  return Napi::ArrayBuffer::New(env, p, n, [](Napi::Env, void* data) { free(data); });
}

}  // namespace

void InitAlignedBuffer(Napi::Env env, Napi::Object exports) {
  exports.Set("allocAligned", Napi::Function::New(env, AllocAligned, "allocAligned"));
}

}  // namespace iohelper
