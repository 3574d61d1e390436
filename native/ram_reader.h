// The one reader of guest RAM for every save (ram_copy.cc's raw ranges, chunk_codec.cc's
// compressed and delta chunks): the range's data extents (SEEK_DATA/SEEK_HOLE), read block by
// block into a buffer the worker thread keeps, holes inside data-bearing units filled with
// zeros, so the zero scan, the CRC, the hash and the image write all run on the same bytes.
//
// Two ways to get the bytes (the images are byte-identical):
// - pread: the kernel copies the data extents into the thread's reused, aligned buffer; no
//   page table is built for the RAM file. Costs a copy (~0.18 CPU-s per GB on the dev box).
// - mmap: a shared read-only mapping, populated per block (MADV_POPULATE_READ); a block whose
//   data-bearing units are all whole data is used in place (no copy), else assembled in the
//   buffer. Costs a page table entry per page: ~0.04 CPU-s per GB on the dev box when the
//   reader was measured, though issue 26 measured ~10 µs a page (5.6 s for 2 GiB) there on
//   another day, as some hypervisors' MMUs charge. On hugetlbfs one fault maps 2 MiB.
// Which is cheaper depends on the host: the TypeScript layer chooses per RAM file, by
// ramReadCost() below (src/image/ram-read.ts; bench/RESULTS.md, "RAM read path").
#pragma once
#include <napi.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "copy_job.h"
#include "ram_map.h"
#include "unit_hash.h"

namespace iohelper {

// The most a reader takes at once when the caller has no bound of its own (chunk_codec.cc: a
// chunk may be larger): 8 MiB, the size of one O_DIRECT write.
constexpr uint64_t kReadBlock = 8 << 20;

const char* RamReadName(RamRead mode);

// Exports ramReadCost(), the calibration src/image/ram-read.ts chooses a path by.
void InitRamReader(Napi::Env env, Napi::Object exports);

class RamReader {
 public:
  // `unit`: the granularity the caller scans by (zero unit or chunk); the bytes of every unit
  // that holds any data are valid in a block, those of all-hole units are not (never read
  // them: Covered() says 0). `block`: a multiple of unit, the most read at once.
  RamReader(const RamRange& r, uint64_t unit, uint64_t block);
  RamReader(const RamReader&) = delete;
  RamReader& operator=(const RamReader&) = delete;
  // Extents, the mapping (mmap), the hasher (when the job asks). False with o's error set.
  bool Open(CopyOutcome* o);
  RamRead mode() const { return mode_; }
  UnitHasher* hasher() const { return hasher_.get(); }
  // True, with o's error set (EIO naming the OpenSSL call), once the hasher has failed: its
  // tags may be stale, so the job must stop before it uses one (a delta would skip a changed unit).
  bool HashFailed(CopyOutcome* o) const;
  // Reads the next block [start, end) of the range (start = previous end; relative to the
  // range). False at the end (start == length) or with o's error set.
  bool Next(uint64_t* start, uint64_t* end, CopyOutcome* o);
  // Bytes of data (not hole) in [s, e), inside the current block; s never decreases.
  uint64_t Covered(uint64_t s, uint64_t e);
  // The current block's bytes from range offset `pos` on; only for units Covered() says hold data.
  const uint8_t* At(uint64_t pos) const { return data_ + (pos - start_); }

 private:
  bool Fill(uint64_t s, uint64_t e, CopyOutcome* o);
  const RamRange& r_;
  uint64_t unit_, block_;
  RamRead mode_;
  std::vector<Extent> extents_;
  std::unique_ptr<Mapping> map_;
  std::unique_ptr<UnitHasher> hasher_;
  size_t ext_ = 0;   // first extent that may reach the current block
  size_t scan_ = 0;  // Covered()'s cursor
  uint64_t start_ = 0, end_ = 0;
  const uint8_t* data_ = nullptr;
};

}  // namespace iohelper
