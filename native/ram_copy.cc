#include "ram_copy.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "args.h"
#include "copy_job.h"
#include "crc32c.h"
#include "ram_map.h"
#include "retry.h"
#include "unit_hash.h"

namespace iohelper {
namespace {

struct RangeJob : RamRange {
  uint64_t imageOffset = 0;
  uint64_t zeroUnit = 4096;  // granularity of zero detection and of holes left in the image
  uint64_t maxIo = 8 << 20;
  // Zero runs shorter than this inside data are written as zeros rather than left as holes:
  // one larger write costs less than splitting it (a small O_DIRECT write each side).
  uint64_t minHole = 4096;
  uint32_t* checksums = nullptr;  // one per chunk; filled (save) or checked (restore)
  size_t checksumCount = 0;
};


// RAM -> image. Touches only the RAM file's data extents: reading a tmpfs hole through a shared
// mapping would allocate it in the source VM's memory. The scan steps through units aligned to
// zeroUnit (the O_DIRECT alignment), so writes stay aligned; a unit that a data extent covers
// only in part is checked and written from its data pieces, its hole pieces counting as zeros
// (such runs go through a zero-filled scratch buffer instead of straight from the mapping).
void SaveRange(const RangeJob& j, CopyOutcome* o) {
  RamSource source;
  if (!OpenRamSource(j, &source, o)) return;
  const std::vector<Extent>& extents = source.extents;
  const uint8_t* base = source.map->data();
  for (const Extent& x : extents) Populate(const_cast<uint8_t*>(base) + x.start, x.end - x.start, false);
  UnitHasher* hasher = source.hasher.get();
  // The hashes see the same bytes as the CRCs: data pieces, and zeros for holes.
  auto hashZeros = [&](uint64_t n) {
    if (hasher) hasher->Zeros(n);
  };
  Scratch scratch(j.zeroUnit);
  uint64_t runStart = 0, runLen = 0, zeroRun = 0;
  bool runHasHoles = false, gapHasHoles = false;
  size_t ext = 0;
  // Writes [runStart, runStart + runLen): from the mapping, or assembled when holes are inside.
  auto flush = [&]() -> bool {
    zeroRun = 0;
    gapHasHoles = false;
    if (!runLen) return true;
    const uint8_t* src = base + runStart;
    if (runHasHoles) {
      uint8_t* buf = scratch.get(runLen);
      if (!buf) {
        o->Fail(ENOMEM, "posix_memalign", "image");
        return false;
      }
      memset(buf, 0, runLen);
      uint64_t end = runStart + runLen;
      for (size_t k = 0; k < extents.size() && extents[k].start < end; k++) {
        uint64_t s = std::max(extents[k].start, runStart), e = std::min(extents[k].end, end);
        if (s < e) memcpy(buf + (s - runStart), base + s, e - s);
      }
      src = buf;
    }
    ssize_t n = PwriteAll(j.imageFd, src, runLen, j.imageOffset + runStart);
    if (n < 0) {
      o->Fail(static_cast<int>(-n), "pwrite", "image");
      return false;
    }
    o->dataBytes += runLen;
    runLen = 0;
    runHasHoles = false;
    return true;
  };
  uint64_t chunks = (j.length + j.chunkSize - 1) / j.chunkSize;
  for (uint64_t c = 0; c < chunks; c++) {
    if (Cancelled(j, o)) return;
    uint64_t cs = c * j.chunkSize, ce = std::min(j.length, cs + j.chunkSize);
    uint32_t crc = ~0u;
    for (uint64_t pos = cs; pos < ce;) {
      uint64_t unitEnd = std::min((pos / j.zeroUnit + 1) * j.zeroUnit, ce);
      while (ext < extents.size() && extents[ext].end <= pos) ext++;
      // The unit's data pieces, in order; the rest of the unit is hole.
      uint64_t covered = 0;
      bool zero = true;
      for (size_t k = ext; k < extents.size() && extents[k].start < unitEnd; k++) {
        uint64_t s = std::max(extents[k].start, pos), e = std::min(extents[k].end, unitEnd);
        covered += e - s;
        if (zero && !IsZero(base + s, e - s)) zero = false;
      }
      if (covered == 0) {  // all hole: stays a hole in the image
        if (!flush()) return;
        crc = Crc32cZeros(crc, unitEnd - pos);
        hashZeros(unitEnd - pos);
        pos = unitEnd;
        continue;
      }
      bool partial = covered < unitEnd - pos;
      if (zero) {
        crc = Crc32cZeros(crc, unitEnd - pos);
        hashZeros(unitEnd - pos);
        if (runLen) {
          zeroRun += unitEnd - pos;
          gapHasHoles = gapHasHoles || partial;
          if (zeroRun >= j.minHole && !flush()) return;
        }
      } else {
        uint64_t at = pos;
        for (size_t k = ext; k < extents.size() && extents[k].start < unitEnd; k++) {
          uint64_t s = std::max(extents[k].start, pos), e = std::min(extents[k].end, unitEnd);
          if (s > at) crc = Crc32cZeros(crc, s - at), hashZeros(s - at);
          crc = Crc32cUpdate(crc, base + s, e - s);
          if (hasher) hasher->Data(base + s, e - s);
          at = e;
        }
        if (at < unitEnd) crc = Crc32cZeros(crc, unitEnd - at), hashZeros(unitEnd - at);
        if (runLen && runStart + runLen + zeroRun != pos && !flush()) return;
        if (runLen) {
          runLen += zeroRun;  // a short zero gap: write it rather than split the write
          runHasHoles = runHasHoles || gapHasHoles;
          zeroRun = 0;
          gapHasHoles = false;
        }
        if (!runLen) runStart = pos;
        runLen += unitEnd - pos;
        runHasHoles = runHasHoles || partial;
        if (runLen >= j.maxIo && !flush()) return;
      }
      pos = unitEnd;
    }
    if (c < j.checksumCount && j.checksums) j.checksums[c] = ~crc;
  }
  if (flush()) HashFailed(source, o);
}

// The CRC of each chunk, fed with the range's bytes in order (data pieces, and zeros for what
// lies between them); Check() compares every chunk completed so far with the recorded value.
class ChunkChecker {
 public:
  explicit ChunkChecker(const RangeJob& j) : j_(j) {}
  // Feeds [pos_, to): from `data` (holding the bytes from `dataStart` on), or zeros when null.
  // Returns false once a chunk did not match (recorded in *o).
  bool Feed(uint64_t to, const uint8_t* data, uint64_t dataStart, CopyOutcome* o) {
    while (pos_ < to) {
      uint64_t chunk = pos_ / j_.chunkSize;
      uint64_t end = std::min({to, (chunk + 1) * j_.chunkSize, j_.length});
      crc_ = data ? Crc32cUpdate(crc_, data + (pos_ - dataStart), end - pos_) : Crc32cZeros(crc_, end - pos_);
      pos_ = end;
      if (pos_ == std::min((chunk + 1) * j_.chunkSize, j_.length)) {
        if (chunk < j_.checksumCount && ~crc_ != j_.checksums[chunk]) {
          o->badChunk = static_cast<int64_t>(chunk);
          o->badCrc = ~crc_;
          return false;
        }
        crc_ = ~0u;
      }
    }
    return true;
  }

 private:
  const RangeJob& j_;
  uint64_t pos_ = 0;
  uint32_t crc_ = ~0u;
};

// Image -> RAM by write(): each piece is read (O_DIRECT when the image fd has it) into a buffer
// this thread reuses, its CRC taken there while it is hot, then written into the RAM file.
// On a VM (measured on the 2-core dev box), the first user-space access to a RAM page the kernel
// just allocated costs microseconds per 4 KiB page; the kernel's own copy does not pay it, so
// a verified restore through pwrite takes about half the time of reading into a mapping and
// checking there. hugetlbfs has no write(): those targets take the mapping path below.
void RestoreRangeByWrite(const RangeJob& j, const std::vector<Extent>& extents, CopyOutcome* o) {
  thread_local Scratch scratch(kBufferAlign);
  uint8_t* buf = scratch.get(j.maxIo);
  if (!buf) {
    o->Fail(ENOMEM, "posix_memalign", "ram");
    return;
  }
  ChunkChecker check(j);
  for (const Extent& x : extents) {
    uint64_t s = x.start / j.zeroUnit * j.zeroUnit;
    uint64_t e = std::min(j.length, (x.end + j.zeroUnit - 1) / j.zeroUnit * j.zeroUnit);
    if (j.checksums && !check.Feed(s, nullptr, 0, o)) return;
    for (uint64_t pos = s; pos < e;) {
      if (Cancelled(j, o)) return;
      uint64_t n = std::min(j.maxIo, e - pos);
      ssize_t got = PreadOnce(j.imageFd, buf, n, j.imageOffset + pos);
      if (got < 0) {
        o->Fail(static_cast<int>(-got), "pread", "image");
        return;
      }
      if (got == 0) {
        o->Fail(EIO, "pread", "image");  // the image ends inside a RAM block: truncated
        return;
      }
      if (j.checksums && !check.Feed(pos + got, buf, pos, o)) return;
      ssize_t put = PwriteAll(j.ramFd, buf, static_cast<size_t>(got), j.ramOffset + pos);
      if (put < 0) {
        o->Fail(static_cast<int>(-put), "pwrite", "ram");
        return;
      }
      pos += static_cast<uint64_t>(got);
      o->dataBytes += static_cast<uint64_t>(got);
    }
  }
  if (j.checksums) check.Feed(j.length, nullptr, 0, o);
}

// Image -> RAM. Reads the image's data extents (O_DIRECT when the image fd has it) into the RAM
// file, through write() or straight into a shared mapping of it; holes stay holes. Checks each
// chunk's CRC.
void RestoreRange(const RangeJob& j, CopyOutcome* o) {
  std::vector<Extent> extents;
  if (int e = DataExtents(j.imageFd, j.imageOffset, j.length, &extents)) {
    o->Fail(e, "lseek", "image");
    return;
  }
  if (j.ramWrite) {
    RestoreRangeByWrite(j, extents, o);
    return;
  }
  Mapping map(j.ramFd, j.ramOffset, j.length, true);
  if (map.err()) {
    o->Fail(map.err(), "mmap", "ram");
    return;
  }
  uint8_t* base = map.data();
  for (const Extent& x : extents) {
    // O_DIRECT reads need aligned offsets; extents from SEEK_DATA are block-aligned.
    uint64_t s = x.start / j.zeroUnit * j.zeroUnit;
    uint64_t e = std::min(j.length, (x.end + j.zeroUnit - 1) / j.zeroUnit * j.zeroUnit);
    if (int err = Populate(base + s, e - s, true)) {
      o->Fail(err, "madvise", "ram");
      return;
    }
    for (uint64_t pos = s; pos < e;) {
      if (Cancelled(j, o)) return;
      uint64_t n = std::min(j.maxIo, e - pos);
      ssize_t got = PreadOnce(j.imageFd, base + pos, n, j.imageOffset + pos);
      if (got < 0) {
        // EFAULT: the destination, our mapping of the RAM file, could not take the page.
        o->Fail(static_cast<int>(-got), "pread", -got == EFAULT ? "ram" : "image");
        return;
      }
      if (got == 0) {
        o->Fail(EIO, "pread", "image");  // the image ends inside a RAM block: truncated
        return;
      }
      pos += static_cast<uint64_t>(got);
      o->dataBytes += static_cast<uint64_t>(got);
    }
  }
  if (!j.checksums) return;
  uint64_t chunks = (j.length + j.chunkSize - 1) / j.chunkSize;
  size_t ext = 0;
  for (uint64_t c = 0; c < chunks && c < j.checksumCount; c++) {
    uint64_t cs = c * j.chunkSize, ce = std::min(j.length, cs + j.chunkSize);
    uint32_t crc = ~0u;
    for (uint64_t pos = cs; pos < ce;) {
      while (ext < extents.size() && extents[ext].end <= pos) ext++;
      if (ext < extents.size() && extents[ext].start <= pos) {
        uint64_t e = std::min(extents[ext].end, ce);
        crc = Crc32cUpdate(crc, base + pos, e - pos);
        pos = e;
      } else {
        uint64_t e = ext < extents.size() ? std::min(extents[ext].start, ce) : ce;
        crc = Crc32cZeros(crc, e - pos);
        pos = e;
      }
    }
    if (~crc != j.checksums[c]) {
      o->badChunk = static_cast<int64_t>(c);
      o->badCrc = ~crc;
      return;
    }
  }
}

bool ReadJob(const Napi::CallbackInfo& info, RangeJob* j, bool save) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) {
    Napi::TypeError::New(env, "expected a job object").ThrowAsJavaScriptException();
    return false;
  }
  Napi::Object o = info[0].As<Napi::Object>();
  auto num = [&](const char* key, uint64_t* out, bool required) { return JobField(env, o, key, out, required); };
  if (!ReadRamRange(env, o, save, false, false, j) || !num("imageOffset", &j->imageOffset, true) ||
      !num("zeroUnit", &j->zeroUnit, false) || !num("maxIo", &j->maxIo, false) || !num("minHole", &j->minHole, false))
    return false;
  auto pow2 = [](uint64_t v) { return v && !(v & (v - 1)); };
  if (!pow2(j->zeroUnit) || j->zeroUnit < 512 || !pow2(j->chunkSize) || j->chunkSize < j->zeroUnit ||
      j->maxIo < j->zeroUnit || j->length % j->zeroUnit || j->ramOffset % 4096 || j->imageOffset % j->zeroUnit) {
    Napi::RangeError::New(env, "job: zeroUnit and chunkSize must be powers of two (chunkSize >= zeroUnit >= 512), "
                               "length and imageOffset multiples of zeroUnit, ramOffset page-aligned")
        .ThrowAsJavaScriptException();
    return false;
  }
  Napi::Value cs = o.Get("checksums");
  if (!cs.IsUndefined() && !cs.IsNull()) {
    if (!cs.IsTypedArray() || cs.As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array) {
      Napi::TypeError::New(env, "job.checksums must be a Uint32Array").ThrowAsJavaScriptException();
      return false;
    }
    Napi::Uint32Array a = cs.As<Napi::Uint32Array>();
    j->checksums = a.Data();
    j->checksumCount = a.ElementLength();
    if (j->checksumCount < (j->length + j->chunkSize - 1) / j->chunkSize) {
      Napi::RangeError::New(env, "job.checksums has fewer entries than the range has chunks").ThrowAsJavaScriptException();
      return false;
    }
  }
  return true;
}


Napi::Value SaveRangeJs(const Napi::CallbackInfo& info) {
  RangeJob j;
  if (!ReadJob(info, &j, true)) return info.Env().Undefined();
  CopyOutcome o;
  SaveRange(j, &o);
  return OutcomeValue(info.Env(), o);
}

Napi::Value RestoreRangeJs(const Napi::CallbackInfo& info) {
  RangeJob j;
  if (!ReadJob(info, &j, false)) return info.Env().Undefined();
  CopyOutcome o;
  RestoreRange(j, &o);
  return OutcomeValue(info.Env(), o);
}

Napi::Value Crc32cJs(const Napi::CallbackInfo& info) {
  ByteView b;
  if (!ArgBytes(info, 0, &b)) return info.Env().Undefined();
  // An optional previous result continues it: crc32c(b, crc32c(a)) == crc32c(a ++ b), so a
  // long range is checked in bounded pieces.
  uint32_t seed = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().Uint32Value() : 0;
  return Napi::Number::New(info.Env(), ~Crc32cUpdate(~seed, b.data, b.length));
}

}  // namespace

void InitRamCopy(Napi::Env env, Napi::Object exports) {
  exports.Set("saveRange", Napi::Function::New(env, SaveRangeJs, "saveRange"));
  exports.Set("restoreRange", Napi::Function::New(env, RestoreRangeJs, "restoreRange"));
  exports.Set("crc32c", Napi::Function::New(env, Crc32cJs, "crc32c"));
}

}  // namespace iohelper
