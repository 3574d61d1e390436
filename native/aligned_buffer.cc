// allocAligned(size, alignment) -> ArrayBuffer whose memory comes from posix_memalign and is
// freed by the finalizer when the ArrayBuffer is collected. Suitable for O_DIRECT I/O.
#include "aligned_buffer.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "errno_error.h"

namespace iohelper {
namespace {

Napi::Value AllocAligned(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) {
    Napi::TypeError::New(env, "allocAligned(size, alignment): numbers expected").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  double size = info[0].As<Napi::Number>().DoubleValue();
  double align = info[1].As<Napi::Number>().DoubleValue();
  size_t a = static_cast<size_t>(align);
  if (size < 0 || size > (1ull << 40) || align < sizeof(void*) || (a & (a - 1)) != 0) {
    Napi::RangeError::New(env, "allocAligned: size must be >= 0 and alignment a power of two >= 8")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  size_t n = static_cast<size_t>(size);
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
