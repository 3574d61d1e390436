#include "copy_job.h"

#include "errno_error.h"

namespace iohelper {

bool JobField(Napi::Env env, Napi::Object job, const char* key, uint64_t* out, bool required) {
  Napi::Value v = job.Get(key);
  if (v.IsUndefined() && !required) return true;
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
  if (!(d >= 0 && d <= 9007199254740991.0) || d != static_cast<double>(static_cast<uint64_t>(d))) {
    Napi::TypeError::New(env, std::string("job.") + key + " must be a non-negative safe integer").ThrowAsJavaScriptException();
    return false;
  }
  *out = static_cast<uint64_t>(d);
  return true;
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
