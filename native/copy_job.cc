#include "copy_job.h"

#include <cerrno>
#include <cstring>

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

namespace {

// job[key] as a Uint8Array of at least `bytes` bytes, or null when absent.
bool HashArray(Napi::Env env, Napi::Object job, const char* key, uint64_t bytes, uint8_t** out) {
  Napi::Value v = job.Get(key);
  if (v.IsUndefined() || v.IsNull()) return true;
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    Napi::TypeError::New(env, std::string("job.") + key + " must be a Uint8Array").ThrowAsJavaScriptException();
    return false;
  }
  Napi::Uint8Array a = v.As<Napi::Uint8Array>();
  if (a.ByteLength() < bytes) {
    Napi::RangeError::New(env, std::string("job.") + key + " is too short (16 bytes of key, or 16 bytes per hash unit of the range)").ThrowAsJavaScriptException();
    return false;
  }
  *out = a.Data();
  return true;
}

}  // namespace

bool JobHashes(Napi::Env env, Napi::Object job, uint64_t ramOffset, uint64_t length, bool withBase, HashSpec* out) {
  if (job.Get("hashes").IsUndefined() || job.Get("hashes").IsNull()) return true;
  uint64_t unit = 0;
  if (!JobField(env, job, "hashUnit", &unit)) return false;
  if (unit < 4096 || unit > (64ull << 20) || (unit & (unit - 1)) || ramOffset % unit) {
    Napi::RangeError::New(env, "job.hashUnit must be a power of two from 4 KiB to 64 MiB that divides job.ramOffset").ThrowAsJavaScriptException();
    return false;
  }
  uint64_t bytes = (length + unit - 1) / unit * kHashBytes;
  uint8_t* base = nullptr;
  uint8_t* key = nullptr;
  if (!HashArray(env, job, "hashes", bytes, &out->out) || (withBase && !HashArray(env, job, "baseHashes", bytes, &base))) return false;
  if (!HashArray(env, job, "hashKey", kHashKeyBytes, &key)) return false;
  if (!key) {
    Napi::TypeError::New(env, "job.hashKey (16 bytes) is required with job.hashes").ThrowAsJavaScriptException();
    return false;
  }
  memcpy(out->key, key, kHashKeyBytes);
  out->unit = unit;
  out->base = base;
  return true;
}

bool ReadRamRange(Napi::Env env, Napi::Object job, bool save, bool chunkRequired, bool withBase, RamRange* r) {
  if (!JobFd(env, job, "ramFd", &r->ramFd) || !JobField(env, job, "ramOffset", &r->ramOffset) || !JobField(env, job, "length", &r->length) ||
      !JobFd(env, job, "imageFd", &r->imageFd) || !JobField(env, job, "chunkSize", &r->chunkSize, chunkRequired))
    return false;
  Napi::Value cancel = job.Get("cancel");
  if (!cancel.IsUndefined()) {
    if (!cancel.IsTypedArray() || cancel.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array ||
        cancel.As<Napi::TypedArray>().ElementLength() < 1) {
      Napi::TypeError::New(env, "job.cancel must be an Int32Array (on a SharedArrayBuffer) of at least one element").ThrowAsJavaScriptException();
      return false;
    }
    r->cancel = cancel.As<Napi::Int32Array>().Data();
  }
  if (save) return JobHashes(env, job, r->ramOffset, r->length, withBase, &r->hash);
  uint64_t ramWrite = 0;
  if (!JobField(env, job, "ramWrite", &ramWrite, false)) return false;
  r->ramWrite = ramWrite != 0;
  return true;
}

bool Cancelled(const RamRange& r, CopyOutcome* o) {
  if (!r.cancel || !__atomic_load_n(r.cancel, __ATOMIC_RELAXED)) return false;
  o->Fail(ECANCELED, "copy", "ram");
  return true;
}

bool OpenRamSource(const RamRange& r, RamSource* s, CopyOutcome* o) {
  if (int e = DataExtents(r.ramFd, r.ramOffset, r.length, &s->extents)) {
    o->Fail(e, "lseek", "ram");
    return false;
  }
  s->map = std::make_unique<Mapping>(r.ramFd, r.ramOffset, r.length, false);
  if (s->map->err()) {
    o->Fail(s->map->err(), "mmap", "ram");
    return false;
  }
  if (r.hash.out) {
    s->hasher = std::make_unique<UnitHasher>(r.hash.unit, r.length, r.hash.key, r.hash.out);
    if (HashFailed(*s, o)) return false;
  }
  return true;
}

bool HashFailed(const RamSource& s, CopyOutcome* o) {
  if (!s.hasher || s.hasher->ok()) return false;
  o->Fail(EIO, s.hasher->failedCall(), "ram");
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
