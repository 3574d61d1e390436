#include "ram_reader.h"

#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "args.h"
#include "errno_error.h"
#include "limits.h"
#include "retry.h"

namespace iohelper {

const char* RamReadName(RamRead mode) { return mode == RamRead::kPread ? "pread" : "mmap"; }

RamReader::RamReader(const RamRange& r, uint64_t unit, uint64_t block) : r_(r), unit_(unit), block_(block), mode_(r.ramRead) {}

bool RamReader::Open(CopyOutcome* o) {
  o->ramRead = RamReadName(mode_);
  if (int e = DataExtents(r_.ramFd, r_.ramOffset, r_.length, &extents_)) {
    o->Fail(e, "lseek", "ram");
    return false;
  }
  if (mode_ == RamRead::kMmap && r_.length) {
    map_ = std::make_unique<Mapping>(r_.ramFd, r_.ramOffset, r_.length, false);
    if (map_->err()) {
      o->Fail(map_->err(), "mmap", "ram");
      return false;
    }
  }
  if (r_.hash.out) {
    hasher_ = std::make_unique<UnitHasher>(r_.hash.unit, r_.length, r_.hash.key, r_.hash.out);
    if (HashFailed(o)) return false;
  }
  return true;
}

bool RamReader::HashFailed(CopyOutcome* o) const {
  if (!hasher_ || hasher_->ok()) return false;
  o->Fail(EIO, hasher_->failedCall(), "ram");
  return true;
}

bool RamReader::Next(uint64_t* start, uint64_t* end, CopyOutcome* o) {
  if (end_ >= r_.length) return false;
  start_ = end_;
  end_ = std::min(r_.length, start_ + block_);
  if (!Fill(start_, end_, o)) return false;
  scan_ = ext_;
  *start = start_;
  *end = end_;
  return true;
}

uint64_t RamReader::Covered(uint64_t s, uint64_t e) {
  while (scan_ < extents_.size() && extents_[scan_].end <= s) scan_++;
  uint64_t covered = 0;
  for (size_t k = scan_; k < extents_.size() && extents_[k].start < e; k++) covered += std::min(extents_[k].end, e) - std::max(extents_[k].start, s);
  return covered;
}

// The bytes of [s, e): only the data extents are read (reading a tmpfs hole through a shared
// mapping would allocate it in the guest's memory); hole pieces of units that also hold data
// are zeroed; all-hole units are left as they are.
bool RamReader::Fill(uint64_t s, uint64_t e, CopyOutcome* o) {
  const size_t n = extents_.size();
  while (ext_ < n && extents_[ext_].end <= s) ext_++;
  data_ = nullptr;
  if (ext_ == n || extents_[ext_].start >= e) return true;  // all hole
  const uint8_t* base = map_ ? map_->data() : nullptr;
  if (map_) {
    // In place when no unit is part data, part hole (always so on hugetlbfs: no holes there).
    bool inPlace = true;
    for (size_t k = ext_; k < n && extents_[k].start < e; k++) {
      uint64_t a = std::max(extents_[k].start, s), b = std::min(extents_[k].end, e);
      Populate(const_cast<uint8_t*>(base) + a, b - a, false);  // a failure leaves it to the faults
      if (a % unit_ || (b % unit_ && b != r_.length)) inPlace = false;
    }
    if (inPlace) {
      data_ = base + s;
      return true;
    }
  }
  // Each thread keeps its buffer across jobs: aligned for O_DIRECT writes straight from it.
  thread_local Scratch buffer(kBufferAlign);
  uint8_t* buf = buffer.get(block_);
  if (!buf) {
    o->Fail(ENOMEM, "mmap", "ram");
    return false;
  }
  uint64_t valid = s;  // [s, valid) is filled (or all hole)
  for (size_t k = ext_; k < n && extents_[k].start < e; k++) {
    uint64_t a = std::max(extents_[k].start, s), b = std::min(extents_[k].end, e);
    uint64_t from = std::max(valid, a / unit_ * unit_);
    if (from < a) memset(buf + (from - s), 0, a - from);
    if (map_) {
      memcpy(buf + (a - s), base + a, b - a);
    } else {
      for (uint64_t at = a; at < b;) {
        ssize_t got = PreadOnce(r_.ramFd, buf + (at - s), b - at, r_.ramOffset + at);
        if (got <= 0) {
          o->Fail(got < 0 ? static_cast<int>(-got) : EIO, "pread", "ram");  // EIO: the file shrank under us
          return false;
        }
        at += static_cast<uint64_t>(got);
      }
    }
    uint64_t next = k + 1 < n ? extents_[k + 1].start : e;
    uint64_t to = std::min({(b + unit_ - 1) / unit_ * unit_, e, next});
    if (b < to) memset(buf + (b - s), 0, to - b);
    valid = std::max(b, to);
  }
  data_ = buf;
  return true;
}

namespace {

uint64_t ThreadCpuNs() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<uint64_t>(t.tv_sec) * 1000000000ull + static_cast<uint64_t>(t.tv_nsec);
}

// The two ways of reading [off, off + len) of fd, each timed in this thread's CPU time (user +
// sys: what other processes do on the box does not count): a fresh mapping populated and read
// one word a page, as the reader's mmap path does, and a pread into a buffer already touched,
// as a worker's kept buffer is. Returns 0 or errno.
int Cost(int fd, uint64_t off, uint64_t len, uint8_t* buf, uint64_t* mmapNs, uint64_t* preadNs) {
  uint64_t t0 = ThreadCpuNs(), sum = 0;
  Mapping map(fd, off, len, false);
  if (map.err()) return map.err();
  Populate(map.data(), len, false);
  for (uint64_t k = 0; k < len; k += 4096) sum += *reinterpret_cast<const volatile uint64_t*>(map.data() + k);
  uint64_t t1 = ThreadCpuNs();
  for (uint64_t at = 0; at < len;) {
    ssize_t got = PreadOnce(fd, buf + at, len - at, off + at);
    if (got <= 0) return got < 0 ? static_cast<int>(-got) : EIO;
    at += static_cast<uint64_t>(got);
  }
  for (uint64_t k = 0; k < len; k += 4096) sum += *reinterpret_cast<const volatile uint64_t*>(buf + k);
  uint64_t t2 = ThreadCpuNs();
  *mmapNs = std::min(*mmapNs, t1 - t0);
  *preadNs = std::min(*preadNs, t2 - t1);
  (void)sum;  // the volatile reads are the point
  return 0;
}

// ramReadCost(fd, offset, length): {mmapNs, preadNs}, the CPU time each read path takes for
// that range (page-aligned, at most 64 MiB), best of three alternating tries.
Napi::Value RamReadCostJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = -1;
  uint64_t off = 0, len = 0;
  if (!ToInteger(env, info[0], "fd", 0, kMaxFd, &fd) || !ToInteger(env, info[1], "offset", 0, kMaxSafeInteger, &off) ||
      !ToInteger(env, info[2], "length", 4096, kMaxChunk, &len))
    return env.Undefined();
  if (off % 4096 || len % 4096) {
    Napi::RangeError::New(env, "offset and length must be multiples of 4096").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Scratch scratch(kBufferAlign);
  uint8_t* buf = scratch.get(len);
  if (!buf) {
    ErrnoError(env, ENOMEM, "mmap").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  memset(buf, 0, len);  // the buffer a worker keeps is warm after its first block
  uint64_t mmapNs = UINT64_MAX, preadNs = UINT64_MAX;
  for (int i = 0; i < 3; i++) {
    if (int e = Cost(fd, off, len, buf, &mmapNs, &preadNs)) {
      ErrnoError(env, e, "ramReadCost").ThrowAsJavaScriptException();
      return env.Undefined();
    }
  }
  Napi::Object r = Napi::Object::New(env);
  r.Set("mmapNs", Napi::Number::New(env, static_cast<double>(mmapNs)));
  r.Set("preadNs", Napi::Number::New(env, static_cast<double>(preadNs)));
  return r;
}

}  // namespace

void InitRamReader(Napi::Env env, Napi::Object exports) { exports.Set("ramReadCost", Napi::Function::New(env, RamReadCostJs, "ramReadCost")); }

}  // namespace iohelper
