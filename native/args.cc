#include "args.h"

#include <cerrno>
#include <cmath>
#include <string>

#include "errno_error.h"

namespace iohelper {
namespace {
bool Fail(Napi::Env env, const std::string& msg) {
  Napi::TypeError::New(env, msg).ThrowAsJavaScriptException();
  return false;
}
}  // namespace

bool IsIntegerIn(double d, int64_t lo, int64_t hi) {
  // The bounds are compared as doubles first (NaN fails both), so the cast below is defined.
  return d >= static_cast<double>(lo) && d <= static_cast<double>(hi) && std::trunc(d) == d;
}

bool ToInteger(Napi::Env env, Napi::Value v, const std::string& what, int64_t lo, int64_t hi, int64_t* out) {
  if (!v.IsNumber()) return Fail(env, what + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::trunc(d) != d) return Fail(env, what + " must be an integer (got " + v.ToString().Utf8Value() + ")");
  if (!IsIntegerIn(d, lo, hi)) {
    Napi::RangeError::New(env, what + " is out of range (" + std::to_string(lo) + ".." + std::to_string(hi) + ", got " +
                                   v.ToString().Utf8Value() + ")")
        .ThrowAsJavaScriptException();
    return false;
  }
  *out = static_cast<int64_t>(d);
  return true;
}

bool ArgFd(const Napi::CallbackInfo& info, size_t i, int* out) {
  return ToInteger(info.Env(), info[i], "fd", 0, kMaxFd, out);
}

bool ArgU64(const Napi::CallbackInfo& info, size_t i, const char* what, uint64_t* out) {
  if (info.Length() <= i) return Fail(info.Env(), std::string(what) + " is required");
  if (info[i].IsBigInt()) {
    bool lossless = false;
    *out = info[i].As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) return Fail(info.Env(), std::string(what) + " out of range");
    return true;
  }
  return ToInteger(info.Env(), info[i], what, 0, kMaxSafeInteger, out);
}

bool ArgBytes(const Napi::CallbackInfo& info, size_t i, ByteView* out) {
  if (info.Length() > i && info[i].IsTypedArray()) {
    Napi::TypedArray t = info[i].As<Napi::TypedArray>();
    Napi::ArrayBuffer ab = t.ArrayBuffer();
    out->data = static_cast<uint8_t*>(ab.Data()) + t.ByteOffset();
    out->length = t.ByteLength();
    return true;
  }
  if (info.Length() > i && info[i].IsArrayBuffer()) {
    Napi::ArrayBuffer ab = info[i].As<Napi::ArrayBuffer>();
    out->data = static_cast<uint8_t*>(ab.Data());
    out->length = ab.ByteLength();
    return true;
  }
  return Fail(info.Env(), "buffer must be a TypedArray, Buffer or ArrayBuffer");
}

Napi::Value U64Value(Napi::Env env, uint64_t v) {
  if (v <= 9007199254740991ull) return Napi::Number::New(env, static_cast<double>(v));
  // Not a Number without rounding: refused rather than cast (no size or offset here comes near 8 PiB).
  Napi::Error e = ErrnoError(env, EOVERFLOW, "u64");
  e.ThrowAsJavaScriptException();
  return env.Undefined();
}

}  // namespace iohelper
