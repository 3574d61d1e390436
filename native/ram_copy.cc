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
#include "limits.h"
#include "ram_map.h"
#include "ram_reader.h"
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


// RAM -> image, block by block through the reader (ram_reader.h), scanned in units of zeroUnit
// (the O_DIRECT alignment, so writes stay aligned): all-hole units stay holes in the image,
// zero units too unless a short gap inside data (below minHole) is cheaper written; runs of
// data are written straight from the block. The CRCs and hashes see the same bytes: data, and
// zeros for holes.
void SaveRange(const RangeJob& j, CopyOutcome* o) {
  RamReader reader(j, j.zeroUnit, std::max(j.zeroUnit, std::min<uint64_t>(j.maxIo, kMaxChunk) / j.zeroUnit * j.zeroUnit));
  if (!reader.Open(o)) return;
  UnitHasher* hasher = reader.hasher();
  uint64_t runStart = 0, runLen = 0, zeroRun = 0;
  uint32_t crc = ~0u;
  // Data units not yet fed to the CRC and the hash: fed as one piece when something else
  // follows (zeros, a chunk's end, the block's end), as the CRC's three-stream loop needs 12 KiB
  // and more to run at full speed, and each hash call has a cost of its own.
  uint64_t feedStart = 0, feedLen = 0;
  auto feed = [&]() {
    if (!feedLen) return;
    crc = Crc32cUpdate(crc, reader.At(feedStart), feedLen);
    if (hasher) hasher->Data(reader.At(feedStart), feedLen);
    feedLen = 0;
  };
  // Writes [runStart, runStart + runLen), which lies in the current block.
  auto flush = [&]() -> bool {
    zeroRun = 0;
    if (!runLen) return true;
    ssize_t n = PwriteAll(j.imageFd, reader.At(runStart), runLen, j.imageOffset + runStart);
    if (n < 0) {
      o->Fail(static_cast<int>(-n), "pwrite", "image");
      return false;
    }
    o->dataBytes += runLen;
    runLen = 0;
    return true;
  };
  for (uint64_t bs, be; reader.Next(&bs, &be, o);) {  // one block per turn, at most maxIo
    if (Cancelled(j, o)) return;
    for (uint64_t pos = bs; pos < be;) {
      uint64_t unitEnd = std::min(pos + j.zeroUnit, be), len = unitEnd - pos;
      bool hole = reader.Covered(pos, unitEnd) == 0;
      if (hole || IsZero(reader.At(pos), len)) {
        feed();
        crc = Crc32cZeros(crc, len);
        if (hasher) hasher->Zeros(len);
        // A hole is always left; a zero run inside data only from minHole on.
        if (hole || (runLen && (zeroRun += len) >= j.minHole)) {
          if (!flush()) return;
        }
      } else {
        if (!feedLen) feedStart = pos;
        feedLen += len;
        if (runLen) {
          runLen += zeroRun;  // a short zero gap: write it rather than split the write
          zeroRun = 0;
        } else {
          runStart = pos;
        }
        runLen += len;
      }
      pos = unitEnd;
      if (pos % j.chunkSize == 0 || pos == j.length) {
        feed();
        uint64_t c = (pos - 1) / j.chunkSize;
        if (j.checksums && c < j.checksumCount) j.checksums[c] = ~crc;
        crc = ~0u;
      }
    }
    feed();
    if (!flush()) return;  // the next block reuses the buffer
  }
  if (!o->err) reader.HashFailed(o);
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
    o->Fail(ENOMEM, "mmap", "ram");
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
  ChunkChecker check(j);
  for (const Extent& x : extents) {
    if (!check.Feed(x.start, nullptr, 0, o) || !check.Feed(x.end, base, 0, o)) return;
  }
  check.Feed(j.length, nullptr, 0, o);
}

bool ReadJob(const Napi::CallbackInfo& info, RangeJob* j, bool save) {
  Napi::Env env = info.Env();
  Napi::Object o;
  if (!JobObject(info, &o)) return false;
  auto num = [&](const char* key, uint64_t* out, bool required) { return JobField(env, o, key, out, required); };
  if (!ReadRamRange(env, o, save, false, false, j) || !num("imageOffset", &j->imageOffset, true) ||
      !num("zeroUnit", &j->zeroUnit, false) || !num("maxIo", &j->maxIo, false) || !num("minHole", &j->minHole, false))
    return false;
  if (!IsPow2(j->zeroUnit) || j->zeroUnit < 512 || j->chunkSize < j->zeroUnit || j->maxIo < j->zeroUnit || j->length % j->zeroUnit ||
      j->imageOffset % j->zeroUnit) {
    Napi::RangeError::New(env, "job: zeroUnit must be a power of two (chunkSize >= zeroUnit >= 512), "
                               "length and imageOffset multiples of zeroUnit")
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
