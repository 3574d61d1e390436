// Argument checking shared by the native functions: fds, 64-bit offsets and byte views.
#pragma once
#include <napi.h>

#include <cstddef>
#include <cstdint>

namespace iohelper {

struct ByteView {
  uint8_t* data;
  size_t length;
};

// Each returns false after throwing a TypeError/RangeError naming `what`.
bool ArgFd(const Napi::CallbackInfo& info, size_t i, int* out);
bool ArgU64(const Napi::CallbackInfo& info, size_t i, const char* what, uint64_t* out);
bool ArgBytes(const Napi::CallbackInfo& info, size_t i, ByteView* out);

// Numbers above 2^53 are returned as BigInt so no offset is ever rounded.
Napi::Value U64Value(Napi::Env env, uint64_t v);

}  // namespace iohelper
