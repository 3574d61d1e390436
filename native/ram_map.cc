#include "ram_map.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>

namespace iohelper {

int DataExtents(int fd, uint64_t base, uint64_t length, std::vector<Extent>* out) {
  uint64_t pos = base, end = base + length;
  while (pos < end) {
    off_t d = lseek(fd, static_cast<off_t>(pos), SEEK_DATA);
    if (d < 0) {
      if (errno == ENXIO) break;
      return errno;
    }
    if (static_cast<uint64_t>(d) >= end) break;
    off_t h = lseek(fd, d, SEEK_HOLE);
    if (h < 0) return errno;
    uint64_t e = std::min<uint64_t>(static_cast<uint64_t>(h), end);
    out->push_back({static_cast<uint64_t>(d) - base, e - base});
    pos = e;
  }
  return 0;
}

bool IsZero(const uint8_t* p, size_t n) {
  const uint64_t* w = reinterpret_cast<const uint64_t*>(p);
  size_t words = n / 8;
  for (size_t i = 0; i < words; i += 8) {
    uint64_t acc = 0;
    for (size_t k = 0; k < 8 && i + k < words; k++) acc |= w[i + k];
    if (acc) return false;
  }
  return true;
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#define MADV_POPULATE_WRITE 23
#endif

int Populate(uint8_t* p, uint64_t len, bool write) {
  if (!len || madvise(p, len, write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ) == 0) return 0;
  return errno == EINVAL ? 0 : errno;
}

Mapping::Mapping(int fd, uint64_t off, uint64_t len, bool writable) : len_(len) {
  addr_ = mmap(nullptr, len, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, fd, static_cast<off_t>(off));
  if (addr_ == MAP_FAILED) err_ = errno;
}

Mapping::~Mapping() {
  if (addr_ != MAP_FAILED) munmap(addr_, len_);
}

Scratch::Scratch(size_t align) : align_(std::max<size_t>(align, 4096)) {}

Scratch::~Scratch() {
  if (p_) munmap(p_, cap_);
}

// An anonymous mapping of its own, trimmed to the alignment and unmapped when freed: these
// MiB-sized buffers are not left to malloc, whose dynamic mmap threshold may move them into a
// per-thread arena that keeps its size.
uint8_t* Scratch::get(size_t n) {
  n = (n + 4095) / 4096 * 4096;
  if (n > cap_) {
    if (p_) munmap(p_, cap_);
    p_ = nullptr;
    cap_ = 0;
    void* q = mmap(nullptr, n + align_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (q == MAP_FAILED) return nullptr;
    uintptr_t start = reinterpret_cast<uintptr_t>(q), aligned = (start + align_ - 1) / align_ * align_;
    if (aligned > start) munmap(q, aligned - start);
    if (start + align_ > aligned) munmap(reinterpret_cast<void*>(aligned + n), start + align_ - aligned);
    p_ = reinterpret_cast<void*>(aligned);
    cap_ = n;
  }
  return static_cast<uint8_t*>(p_);
}

}  // namespace iohelper
