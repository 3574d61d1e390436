// What the RAM copy jobs (ram_copy.cc, chunk_codec.cc) share: reading a job object's numeric
// fields, and the outcome a job reports (an errno naming its side, or bytes moved and the first
// chunk that failed its check).
#pragma once
#include <napi.h>

#include <cstdint>
#include <string>

#include "unit_hash.h"

namespace iohelper {

struct CopyOutcome {
  int err = 0;
  const char* syscall = "";
  const char* side = "";  // "ram" or "image"
  uint64_t dataBytes = 0;
  int64_t badChunk = -1;
  uint32_t badCrc = 0;
  std::string badFrame;  // why a stored chunk does not decode (compressed images)
  const char* ramRead = nullptr;  // save: how the RAM was read ("pread" or "mmap")
  void Fail(int e, const char* call, const char* where) {
    err = e;
    syscall = call;
    side = where;
  }
};

// The job object's field `key` as a non-negative safe integer into *out. An absent optional
// field leaves *out as it is. Returns false after throwing a TypeError/RangeError naming the field.
bool JobField(Napi::Env env, Napi::Object job, const char* key, uint64_t* out, bool required = true);
// The job object's field `key` as an fd (0 .. 2^31 - 1).
bool JobFd(Napi::Env env, Napi::Object job, const char* key, int* out);

// A save job's content hashes (docs/FORMAT.md, "Content hashes"): job.hashes, a Uint8Array of
// 16 bytes per hash unit of the range, filled with each unit's AES-128-GMAC tag under
// job.hashKey (16 bytes); job.hashUnit, a power
// of two from 4 KiB to 64 MiB that divides job.ramOffset; with `withBase`, job.baseHashes
// (optional, same size): a unit whose digest equals its base's is not stored. Absent
// job.hashes: no hashing (out stays null).
struct HashSpec {
  uint64_t unit = 0;
  uint8_t key[16] = {};  // the chain's AES-128-GMAC key (job.hashKey)
  uint8_t* out = nullptr;
  const uint8_t* base = nullptr;
};
bool JobHashes(Napi::Env env, Napi::Object job, uint64_t ramOffset, uint64_t length, bool withBase, HashSpec* out);

// How a save reads the RAM file (ram_reader.h): job.ramRead "mmap" (default) or "pread"; the
// TypeScript layer chooses (src/image/ram-read.ts).
enum class RamRead { kMmap, kPread };

// What every RAM copy job has (ram_copy.cc's ranges at fixed places, chunk_codec.cc's chunks).
struct RamRange {
  int ramFd = -1;
  uint64_t ramOffset = 0;
  uint64_t length = 0;
  int imageFd = -1;
  uint64_t chunkSize = 8 << 20;
  bool ramWrite = false;  // restore: fill the RAM file with pwrite() instead of through a mapping
  HashSpec hash;          // save: each hash unit's keyed hash, when asked
  RamRead ramRead = RamRead::kMmap;  // save
  // job.cancel: an Int32Array on a SharedArrayBuffer that every job of one copy shares; the
  // pool sets [0] on an abort or on the first failure of any job (src/image/exec/pool.ts).
  const int32_t* cancel = nullptr;
};

// Whether the job was cancelled: if so, fails it with ECANCELED. The copy loops ask once per
// block, chunk or I/O, so a cancelled job stops after the one in hand instead of running out its range.
bool Cancelled(const RamRange& r, CopyOutcome* o);

inline bool IsPow2(uint64_t v) { return v && !(v & (v - 1)); }

// The job object, the first argument of every RAM copy call; false after throwing a TypeError.
bool JobObject(const Napi::CallbackInfo& info, Napi::Object* job);

// Reads a job object's RamRange fields: ramFd, ramOffset (page-aligned), length, imageFd,
// chunkSize (a power of two; required or optional), cancel (optional), and for a restore ramWrite, for a save
// ramRead and the hashes (with base hashes when `withBase`). False after throwing a
// TypeError/RangeError naming the field.
bool ReadRamRange(Napi::Env env, Napi::Object job, bool save, bool chunkRequired, bool withBase, RamRange* r);

// Throws the outcome's errno (with `side`) or returns {dataBytes, badChunk, badCrc[, badFrame][, ramRead]}.
Napi::Value OutcomeValue(Napi::Env env, const CopyOutcome& o);

}  // namespace iohelper
