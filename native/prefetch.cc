#include "prefetch.h"

#include <algorithm>
#include <cerrno>
#include <string>

#include "args.h"
#include "errno_error.h"
#include "ram_map.h"
#include "retry.h"

namespace iohelper {
namespace {

constexpr uint64_t kPiece = 8ull << 20;  // one pread at most; also the scratch buffer's size

// readRanges(fd, ranges: Float64Array [offset0, length0, offset1, length1, ...]) -> bytes read.
// Stops at the end of the file without error (a range past it has nothing to prefetch).
Napi::Value ReadRangesJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd)) return env.Undefined();
  if (info.Length() < 2 || !info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
    Napi::TypeError::New(env, "readRanges(fd, Float64Array of offset/length pairs)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Float64Array r = info[1].As<Napi::Float64Array>();
  size_t n = r.ElementLength();
  if (n % 2) {
    Napi::RangeError::New(env, "readRanges: ranges come in offset/length pairs").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  for (size_t i = 0; i < n; i++) {
    if (!IsIntegerIn(r[i], 0, kMaxSafeInteger)) {
      Napi::RangeError::New(env, "readRanges: offsets and lengths must be non-negative safe integers").ThrowAsJavaScriptException();
      return env.Undefined();
    }
  }
  Scratch scratch(4096);
  uint8_t* buf = scratch.get(kPiece);
  if (!buf) return ThrowErrno(env, ENOMEM, "mmap");
  uint64_t total = 0;
  for (size_t i = 0; i < n; i += 2) {
    uint64_t off = static_cast<uint64_t>(r[i]), end = off + static_cast<uint64_t>(r[i + 1]);
    while (off < end) {
      ssize_t got = PreadOnce(fd, buf, std::min(kPiece, end - off), off);
      if (got < 0) return ThrowErrno(env, static_cast<int>(-got), "pread");
      if (got == 0) break;  // end of file
      off += static_cast<uint64_t>(got);
      total += static_cast<uint64_t>(got);
    }
  }
  return Napi::Number::New(env, static_cast<double>(total));
}

}  // namespace

void InitPrefetch(Napi::Env env, Napi::Object exports) {
  exports.Set("readRanges", Napi::Function::New(env, ReadRangesJs, "readRanges"));
}

}  // namespace iohelper
