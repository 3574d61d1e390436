// Mapping and scanning guest RAM files, shared by the plain copy (ram_copy.cc) and the
// compressed one (chunk_codec.cc): data extents from SEEK_DATA/SEEK_HOLE, zero checks, page
// population, and the owned mapping and scratch buffers a copy job uses.
#pragma once
#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace iohelper {

struct Extent {
  uint64_t start;  // relative to the range
  uint64_t end;
};

// Data extents of fd within [base, base + length), relative to base. Filesystems without hole
// support report one extent covering everything. Returns 0 or errno.
int DataExtents(int fd, uint64_t base, uint64_t length, std::vector<Extent>* out);

bool IsZero(const uint8_t* p, size_t n);

// Maps the pages of a range in one system call instead of one page fault per page (faults are
// expensive, above all in a VM). Kernels before 5.14 say EINVAL: the copy then faults. Returns
// 0 or the errno of a real failure: EFAULT when the filesystem behind the mapping cannot supply
// a page (a full tmpfs, no huge page left), ENOMEM.
int Populate(uint8_t* p, uint64_t len, bool write);

// A shared mapping of a file range, unmapped with its owner.
class Mapping {
 public:
  Mapping(int fd, uint64_t off, uint64_t len, bool writable);
  ~Mapping();
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  int err() const { return err_; }
  uint8_t* data() const { return static_cast<uint8_t*>(addr_); }

 private:
  void* addr_;
  uint64_t len_;
  int err_ = 0;
};

// An aligned scratch buffer that grows on demand, freed with its owner.
// Alignment of the buffers a thread keeps for O_DIRECT reads: above any O_DIRECT unit an image
// uses (the filesystem's, at most 1 MiB here), so one buffer serves every job of the thread.
constexpr size_t kBufferAlign = 2 << 20;

class Scratch {
 public:
  explicit Scratch(size_t align);
  ~Scratch();
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  // nullptr when the allocation failed.
  uint8_t* get(size_t n);

 private:
  size_t align_;
  void* p_ = nullptr;
  size_t cap_ = 0;
};

}  // namespace iohelper
