#include "copy_job.h"

#include "args.h"
#include "errno_error.h"

namespace iohelper {

bool JobField(Napi::Env env, Napi::Object job, const char* key, uint64_t* out, bool required) {
  Napi::Value v = job.Get(key);
  if (v.IsUndefined() && !required) return true;
  return ToInteger(env, v, std::string("job.") + key, 0, kMaxSafeInteger, out);
}

bool JobFd(Napi::Env env, Napi::Object job, const char* key, int* out) {
  return ToInteger(env, job.Get(key), std::string("job.") + key, 0, kMaxFd, out);
}

Napi::Value OutcomeValue(Napi::Env env, const CopyOutcome& o) {
  if (o.err) {
    Napi::Error e = ErrnoError(env, o.err, o.syscall);
    e.Set("side", Napi::String::New(env, o.side));
    e.ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Object r = Napi::Object::New(env);
  r.Set("dataBytes", Napi::Number::New(env, static_cast<double>(o.dataBytes)));
  r.Set("badChunk", Napi::Number::New(env, static_cast<double>(o.badChunk)));
  r.Set("badCrc", Napi::Number::New(env, o.badCrc));
  if (!o.badFrame.empty()) r.Set("badFrame", Napi::String::New(env, o.badFrame));
  return r;
}

}  // namespace iohelper
