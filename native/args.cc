#include "args.h"

#include <cmath>
#include <string>

namespace iohelper {
namespace {
bool Fail(Napi::Env env, const std::string& msg) {
  Napi::TypeError::New(env, msg).ThrowAsJavaScriptException();
  return false;
}
}  // namespace

bool ArgFd(const Napi::CallbackInfo& info, size_t i, int* out) {
  if (info.Length() <= i || !info[i].IsNumber()) return Fail(info.Env(), "fd must be a number");
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!(v >= 0 && v <= 0x7fffffff) || std::floor(v) != v) return Fail(info.Env(), "fd must be a non-negative integer");
  *out = static_cast<int>(v);
  return true;
}

bool ArgU64(const Napi::CallbackInfo& info, size_t i, const char* what, uint64_t* out) {
  if (info.Length() <= i) return Fail(info.Env(), std::string(what) + " is required");
  if (info[i].IsBigInt()) {
    bool lossless = false;
    *out = info[i].As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) return Fail(info.Env(), std::string(what) + " out of range");
    return true;
  }
  if (!info[i].IsNumber()) return Fail(info.Env(), std::string(what) + " must be a number or bigint");
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!(v >= 0 && v <= 9007199254740991.0) || std::floor(v) != v)
    return Fail(info.Env(), std::string(what) + " must be a non-negative safe integer");
  *out = static_cast<uint64_t>(v);
  return true;
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
  return Napi::BigInt::New(env, v);
}

}  // namespace iohelper
