// Node-style system errors (code, errno, syscall, path) built from a C errno value.
#pragma once
#include <napi.h>
#include <string>

namespace iohelper {

// Returns an Error shaped like Node's fs errors:
//   message "ENOSPC: no space left on device, pwrite '/path'"
//   code 'ENOSPC', errno -28, syscall 'pwrite', path '/path' (when given).
Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const std::string& path = "");

// Registers setErrnoNames(object of errno -> name), which src/native.ts calls at load.
void InitErrnoNames(Napi::Env env, Napi::Object exports);

// Throws ErrnoError and returns an undefined value, for `return ThrowErrno(...)`.
Napi::Value ThrowErrno(Napi::Env env, int err, const char* syscall, const std::string& path = "");

}  // namespace iohelper
