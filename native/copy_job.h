// What the RAM copy jobs (ram_copy.cc, chunk_codec.cc) share: reading a job object's numeric
// fields, and the outcome a job reports (an errno naming its side, or bytes moved and the first
// chunk that failed its check).
#pragma once
#include <napi.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ram_map.h"
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

// What every RAM copy job has (ram_copy.cc's ranges at fixed places, chunk_codec.cc's chunks).
struct RamRange {
  int ramFd = -1;
  uint64_t ramOffset = 0;
  uint64_t length = 0;
  int imageFd = -1;
  uint64_t chunkSize = 8 << 20;
  bool ramWrite = false;  // restore: fill the RAM file with pwrite() instead of through a mapping
  HashSpec hash;          // save: each hash unit's keyed hash, when asked
  // job.cancel: an Int32Array on a SharedArrayBuffer that every job of one copy shares; the
  // pool sets [0] on an abort or on the first failure of any job (src/image/exec/pool.ts).
  const int32_t* cancel = nullptr;
};

// Whether the job was cancelled: if so, fails it with ECANCELED. The copy loops ask once per
// chunk or I/O, so a cancelled job stops after the block in hand instead of running out its range.
bool Cancelled(const RamRange& r, CopyOutcome* o);

// Reads a job object's RamRange fields: ramFd, ramOffset, length, imageFd, chunkSize (required
// or optional), cancel (optional), and for a restore ramWrite, for a save the hashes (with base
// hashes when `withBase`). False after throwing a TypeError/RangeError naming the field.
bool ReadRamRange(Napi::Env env, Napi::Object job, bool save, bool chunkRequired, bool withBase, RamRange* r);

// The source side of a save: the range's data extents in the RAM file and a read-only mapping
// of it, and the hasher when the job asks for hashes. False with o's error set.
struct RamSource {
  std::vector<Extent> extents;
  std::unique_ptr<Mapping> map;
  std::unique_ptr<UnitHasher> hasher;
};
bool OpenRamSource(const RamRange& r, RamSource* s, CopyOutcome* o);
// True, with o's error set (EIO naming the OpenSSL call), once the source's hasher has failed:
// its tags may be stale, so the job must stop before it uses one (a delta would skip a changed unit).
bool HashFailed(const RamSource& s, CopyOutcome* o);

// Throws the outcome's errno (with `side`) or returns {dataBytes, badChunk, badCrc[, badFrame]}.
Napi::Value OutcomeValue(Napi::Env env, const CopyOutcome& o);

}  // namespace iohelper
