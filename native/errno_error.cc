#include "errno_error.h"

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>

namespace iohelper {
namespace {

// The symbolic names of errno values ("ENOSPC"), as Node's error codes use them: given by the
// JavaScript layer at load (util.getSystemErrorMap(), setErrnoNames) rather than a table of
// our own (glibc's strerrorname_np needs 2.32; the addon must load on glibc 2.28, RHEL 8).
// Every worker thread's copy of the module sets it again, hence the lock. Both live until the
// process ends, never destroyed: a worker thread may still be loading while exit() runs the
// destructors of statics.
std::mutex& namesLock = *new std::mutex;
std::unordered_map<int, std::string>& names = *new std::unordered_map<int, std::string>;

std::string ErrnoName(int err) {
  std::lock_guard<std::mutex> hold(namesLock);
  auto it = names.find(err);
  return it != names.end() ? it->second : "E" + std::to_string(err);
}

Napi::Value SetErrnoNames(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) {
    Napi::TypeError::New(env, "setErrnoNames: expected an object of errno -> name").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Object o = info[0].As<Napi::Object>();
  Napi::Array keys = o.GetPropertyNames();
  std::unordered_map<int, std::string> given;
  for (uint32_t i = 0; i < keys.Length(); i++) {
    std::string key = keys.Get(i).ToString();
    Napi::Value v = o.Get(key);
    char* end = nullptr;
    long n = strtol(key.c_str(), &end, 10);
    if (*end || !v.IsString() || n < -4096 || n > 4096) continue;  // not an errno entry
    given[static_cast<int>(n < 0 ? -n : n)] = v.As<Napi::String>().Utf8Value();
  }
  std::lock_guard<std::mutex> hold(namesLock);
  names.swap(given);
  return env.Undefined();
}

}  // namespace

void InitErrnoNames(Napi::Env env, Napi::Object exports) {
  exports.Set("setErrnoNames", Napi::Function::New(env, SetErrnoNames, "setErrnoNames"));
}

Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const std::string& path) {
  std::string code = ErrnoName(err);
  std::string text = strerror(err);
  if (!text.empty()) text[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(text[0])));
  std::string message = code + ": " + text + ", " + syscall;
  if (!path.empty()) message += " '" + path + "'";
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, code));
  error.Set("errno", Napi::Number::New(env, -err));
  error.Set("syscall", Napi::String::New(env, syscall));
  if (!path.empty()) error.Set("path", Napi::String::New(env, path));
  return error;
}

Napi::Value ThrowErrno(Napi::Env env, int err, const char* syscall, const std::string& path) {
  ErrnoError(env, err, syscall, path).ThrowAsJavaScriptException();
  return env.Undefined();
}

}  // namespace iohelper
