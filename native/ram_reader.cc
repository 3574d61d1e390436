#include "ram_reader.h"

#include <linux/magic.h>
#include <sys/vfs.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "retry.h"

namespace iohelper {

const char* RamReadName(RamRead mode) { return mode == RamRead::kMmap ? "mmap" : mode == RamRead::kPread ? "pread" : "auto"; }

RamReader::RamReader(const RamRange& r, uint64_t unit, uint64_t block) : r_(r), unit_(unit), block_(block), mode_(r.ramRead) {}

bool RamReader::Open(CopyOutcome* o) {
  if (mode_ == RamRead::kAuto) {
    struct statfs fs;
    if (fstatfs(r_.ramFd, &fs) != 0) {
      o->Fail(errno, "fstatfs", "ram");
      return false;
    }
    mode_ = static_cast<uint64_t>(fs.f_type) == HUGETLBFS_MAGIC ? RamRead::kMmap : RamRead::kPread;
  }
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
    if (!hasher_->ok()) {
      o->Fail(ENOMEM, "EVP_MD_CTX_new", "ram");
      return false;
    }
  }
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
    o->Fail(ENOMEM, "posix_memalign", "ram");
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

}  // namespace iohelper
