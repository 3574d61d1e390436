// Argument checking shared by the native functions: integers, fds, 64-bit offsets and byte views.
#pragma once
#include <napi.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace iohelper {

constexpr int64_t kMaxSafeInteger = 9007199254740991;  // 2^53 - 1: every integer up to it is exact in a double
constexpr int64_t kMaxFd = 0x7fffffff;

struct ByteView {
  uint8_t* data;
  size_t length;
};

// True when d is an integer in [lo, hi], so converting it to a C integer loses nothing.
// False for NaN, infinities and fractions.
bool IsIntegerIn(double d, int64_t lo, int64_t hi);

// The one way a JS number becomes a C integer here: v must be a finite integer in [lo, hi].
// Otherwise throws a TypeError (not a number, NaN, infinite, fractional) or a RangeError (an
// integer outside [lo, hi]) naming `what`, and returns false. Nothing is ever cast into range.
bool ToInteger(Napi::Env env, Napi::Value v, const std::string& what, int64_t lo, int64_t hi, int64_t* out);

// The same into a narrower type; [lo, hi] must fit in T.
template <typename T>
bool ToInteger(Napi::Env env, Napi::Value v, const std::string& what, int64_t lo, int64_t hi, T* out) {
  int64_t x;
  if (!ToInteger(env, v, what, lo, hi, &x)) return false;
  *out = static_cast<T>(x);
  return true;
}

// Each returns false after throwing a TypeError/RangeError naming `what`.
bool ArgFd(const Napi::CallbackInfo& info, size_t i, int* out);
// A number up to 2^53 - 1, or a BigInt up to 2^64 - 1.
bool ArgU64(const Napi::CallbackInfo& info, size_t i, const char* what, uint64_t* out);
bool ArgBytes(const Napi::CallbackInfo& info, size_t i, ByteView* out);

// A u64 result as a Number; above 2^53 - 1 (which a Number cannot hold exactly) it throws
// EOVERFLOW instead of rounding.
Napi::Value U64Value(Napi::Env env, uint64_t v);

}  // namespace iohelper
