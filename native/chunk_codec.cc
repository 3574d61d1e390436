#include "chunk_codec.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#ifdef IOHELPER_ZSTD
#include <zstd.h>
#include <zstd_errors.h>
#endif

#include "args.h"
#include "copy_job.h"
#include "crc32c.h"
#include "limits.h"
#include "ram_map.h"
#include "retry.h"
#include "unit_hash.h"

namespace iohelper {
namespace {

// kBase (delta images, version 3): the unit is its base's; the restore's resolved index never
// holds it (src/image/chain.ts replaces it with the layer that stores the unit).
constexpr uint32_t kZero = 0, kRaw = 1, kZstd = 2, kBase = 3;

struct ChunkJob : RamRange {
  // restore: the image of each layer of a chain (imageFds[0] = imageFd); an index entry's last
  // u32 names its layer.
  std::vector<int> layerFds;
  uint64_t unit = 4096;  // O_DIRECT unit of the image and alignment of stored chunks
  int level = 1;
  int64_t* cursor = nullptr;  // save: next free byte of the chunk area, shared by all workers
  uint8_t* index = nullptr;   // kIndexEntry bytes per chunk: filled (save) or read (restore)
  size_t indexBytes = 0;
  bool verify = true;
};


uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

void PutU32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void PutU64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t GetU32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}
uint64_t GetU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

void PutEntry(uint8_t* e, uint64_t offset, uint32_t stored, uint32_t crc, uint32_t kind) {
  // (bytes 20..23 are reserved in the stored format)
  PutU64(e, offset);
  PutU32(e + 8, stored);
  PutU32(e + 12, crc);
  PutU32(e + 16, kind);
  PutU32(e + 20, 0);
}

#ifdef IOHELPER_ZSTD
// One compression and one decompression context per thread, reused by every job it runs and
// freed when the thread ends (a context holds about a MiB of tables at low levels).
struct Contexts {
  ZSTD_CCtx* c = nullptr;
  ZSTD_DCtx* d = nullptr;
  ~Contexts() {
    ZSTD_freeCCtx(c);
    ZSTD_freeDCtx(d);
  }
};
thread_local Contexts contexts;
#endif

// RAM -> chunk area. Touches only the RAM file's data extents (reading a tmpfs hole through a
// shared mapping would allocate it in the source VM's memory): a chunk with holes inside is
// assembled in a zero-filled buffer first.
void SaveChunks(const ChunkJob& j, CopyOutcome* o) {
  RamSource source;
  if (!OpenRamSource(j, &source, o)) return;
  const std::vector<Extent>& extents = source.extents;
  const uint8_t* base = source.map->data();
  // With base hashes (a delta: chunkSize = hash unit), a unit whose digest equals its base's is kBase.
  UnitHasher* hasher = source.hasher.get();
  // Every data page mapped in one call per extent (not one per chunk: a delta's chunks are 64 KiB).
  for (const Extent& x : extents) Populate(const_cast<uint8_t*>(base) + x.start, x.end - x.start, false);
  Scratch assembled(j.unit), out(j.unit);
  uint64_t chunks = (j.length + j.chunkSize - 1) / j.chunkSize;
  size_t ext = 0;
  for (uint64_t c = 0; c < chunks; c++) {
    if (Cancelled(j, o)) return;
    uint64_t cs = c * j.chunkSize, ce = std::min(j.length, cs + j.chunkSize), len = ce - cs;
    uint8_t* entry = j.index + c * kIndexEntry;
    while (ext < extents.size() && extents[ext].end <= cs) ext++;
    uint64_t covered = 0;
    bool zero = true;
    for (size_t k = ext; k < extents.size() && extents[k].start < ce; k++) {
      uint64_t s = std::max(extents[k].start, cs), e = std::min(extents[k].end, ce);
      covered += e - s;
      if (zero && !IsZero(base + s, e - s)) zero = false;
    }
    if (zero) {
      if (hasher) hasher->Zeros(len);
      if (HashFailed(source, o)) return;
      PutEntry(entry, 0, 0, ~Crc32cZeros(~0u, len), kZero);
      continue;
    }
    const uint8_t* src = base + cs;
    if (covered < len) {
      uint8_t* buf = assembled.get(len);
      if (!buf) {
        o->Fail(ENOMEM, "posix_memalign", "ram");
        return;
      }
      memset(buf, 0, len);
      for (size_t k = ext; k < extents.size() && extents[k].start < ce; k++) {
        uint64_t s = std::max(extents[k].start, cs), e = std::min(extents[k].end, ce);
        memcpy(buf + (s - cs), base + s, e - s);
      }
      src = buf;
    }
    uint32_t crc = Crc32c(src, len);
    if (hasher) {
      hasher->Data(src, len);
      if (HashFailed(source, o)) return;
      // A delta (chunkSize = hash unit): the same digest as the base's unit, so the base holds it.
      if (j.hash.base && memcmp(j.hash.out + c * kHashBytes, j.hash.base + c * kHashBytes, kHashBytes) == 0) {
        PutEntry(entry, 0, 0, crc, kBase);
        continue;
      }
    }
    uint8_t* dst = out.get(AlignUp(len, j.unit));
    if (!dst) {
      o->Fail(ENOMEM, "posix_memalign", "image");
      return;
    }
    uint32_t kind = kRaw;
    uint64_t stored = len;
    const uint8_t* payload = src;
#ifdef IOHELPER_ZSTD
    if (j.level != 0) {
      if (!contexts.c && !(contexts.c = ZSTD_createCCtx())) {
        o->Fail(ENOMEM, "ZSTD_createCCtx", "image");
        return;
      }
      if (ZSTD_isError(ZSTD_CCtx_reset(contexts.c, ZSTD_reset_session_and_parameters)) ||
          ZSTD_isError(ZSTD_CCtx_setParameter(contexts.c, ZSTD_c_compressionLevel, j.level)) ||
          ZSTD_isError(ZSTD_CCtx_setParameter(contexts.c, ZSTD_c_contentSizeFlag, 1))) {
        o->Fail(EINVAL, "ZSTD_CCtx_setParameter", "image");  // a level this libzstd refuses
        return;
      }
      // Capacity one byte short of the chunk: a frame that does not make it smaller fails with
      // dstSize_tooSmall and the chunk is stored raw (FORMAT.md, I4).
      size_t r = ZSTD_compress2(contexts.c, dst, len - 1, src, len);
      if (!ZSTD_isError(r)) {
        kind = kZstd;
        stored = r;
        payload = dst;
      } else if (ZSTD_getErrorCode(r) != ZSTD_error_dstSize_tooSmall) {
        // Allocation is the only way compressing valid input fails; the name says which.
        o->Fail(ZSTD_getErrorCode(r) == ZSTD_error_memory_allocation ? ENOMEM : EIO, "ZSTD_compress2", "image");
        return;
      }
    }
#endif
    uint64_t span = AlignUp(stored, j.unit);
    if (kind == kRaw && span != stored) {  // a unit larger than the chunk's tail: pad a copy
      memcpy(dst, src, stored);
      payload = dst;
    }
    if (payload == dst) memset(dst + stored, 0, span - stored);
    // Otherwise a raw chunk is written from the mapping (page-aligned) or the assembled buffer.
    int64_t at = __atomic_fetch_add(j.cursor, static_cast<int64_t>(span), __ATOMIC_SEQ_CST);
    ssize_t n = PwriteAll(j.imageFd, payload, span, static_cast<uint64_t>(at));
    if (n < 0) {
      o->Fail(static_cast<int>(-n), "pwrite", "image");
      return;
    }
    PutEntry(entry, static_cast<uint64_t>(at), static_cast<uint32_t>(stored), crc, kind);
    o->dataBytes += stored;
  }
}

// Reads [off, off + len) of the image into buf, whole units at a time (O_DIRECT); buf holds
// AlignUp(len + (off % unit), unit) bytes. Returns where the wanted bytes start in buf, or
// -errno (-EIO when the image ends first).
int64_t ReadStored(const ChunkJob& j, int fd, uint64_t off, uint64_t len, uint8_t* buf) {
  uint64_t head = off % j.unit, start = off - head, want = AlignUp(head + len, j.unit);
  uint64_t got = 0;
  while (got < head + len) {
    ssize_t n = PreadOnce(fd, buf + got, want - got, start + got);
    if (n < 0) return n;
    if (n == 0) return -EIO;
    got += static_cast<uint64_t>(n);
  }
  return static_cast<int64_t>(head);
}

// Reads a stored chunk into a bounce buffer and decodes it into dst (len bytes): a raw copy,
// or one zstd frame that must declare and produce exactly len bytes. Returns false with
// o->badFrame set (a chunk that does not decode) or o->err set (an I/O failure).
bool DecodeInto(const ChunkJob& j, int fd, uint64_t off, uint32_t stored, uint32_t kind, uint8_t* dst, uint64_t len, Scratch* in, CopyOutcome* o) {
  uint8_t* buf = in->get(AlignUp(stored + j.unit, j.unit));
  if (!buf) {
    o->Fail(ENOMEM, "posix_memalign", "ram");
    return false;
  }
  int64_t at = ReadStored(j, fd, off, stored, buf);
  if (at < 0) {
    o->Fail(static_cast<int>(-at), "pread", "image");
    return false;
  }
  const uint8_t* src = buf + at;
  if (kind == kRaw) {
    memcpy(dst, src, len);
    return true;
  }
#ifdef IOHELPER_ZSTD
  unsigned long long declared = ZSTD_getFrameContentSize(src, stored);
  if (declared != len) {
    o->badFrame = declared == ZSTD_CONTENTSIZE_ERROR     ? "not a zstd frame"
                  : declared == ZSTD_CONTENTSIZE_UNKNOWN ? "the zstd frame does not declare its size"
                                                         : "the zstd frame declares " + std::to_string(declared) + " bytes, the chunk has " + std::to_string(len);
    return false;
  }
  size_t frame = ZSTD_findFrameCompressedSize(src, stored);
  if (ZSTD_isError(frame) || frame != stored) {
    o->badFrame = ZSTD_isError(frame) ? std::string("the zstd frame is cut short (") + ZSTD_getErrorName(frame) + ")" : "bytes follow the zstd frame";
    return false;
  }
  if (!contexts.d && !(contexts.d = ZSTD_createDCtx())) {
    o->Fail(ENOMEM, "ZSTD_createDCtx", "ram");
    return false;
  }
  size_t r = ZSTD_decompressDCtx(contexts.d, dst, len, src, stored);
  if (ZSTD_isError(r) || r != len) {
    o->badFrame = ZSTD_isError(r) ? std::string("zstd: ") + ZSTD_getErrorName(r) : "the zstd frame gave " + std::to_string(r) + " bytes, the chunk has " + std::to_string(len);
    return false;
  }
  return true;
#else
  o->Fail(ENOTSUP, "zstd", "image");
  return false;
#endif
}

// Largest run of raw chunks restored with one read and one write.
constexpr uint64_t kMaxRun = 8 << 20;

// One chunk's index entry, checked against the chunk it describes.
struct StoredChunk {
  uint64_t start, len, off;
  uint32_t stored, crc, kind;
  int fd;  // the layer's image
};

// Reads entry c; false (with badChunk and badFrame set) when it cannot describe chunk c.
bool ReadEntry(const ChunkJob& j, uint64_t c, StoredChunk* e, CopyOutcome* o) {
  const uint8_t* entry = j.index + c * kIndexEntry;
  e->start = c * j.chunkSize;
  e->len = std::min(j.length, e->start + j.chunkSize) - e->start;
  e->off = GetU64(entry);
  e->stored = GetU32(entry + 8);
  e->crc = GetU32(entry + 12);
  e->kind = GetU32(entry + 16);
  uint32_t layer = GetU32(entry + 20);
  if (e->kind == kZero) return true;
  if (layer >= j.layerFds.size()) {
    o->badChunk = static_cast<int64_t>(c);
    o->badFrame = "index entry names no layer of the chain";
    return false;
  }
  e->fd = j.layerFds[layer];
  if ((e->kind != kRaw && e->kind != kZstd) || e->stored == 0 || e->stored > e->len || (e->kind == kRaw && e->stored != e->len)) {
    o->badChunk = static_cast<int64_t>(c);
    o->badFrame = "index entry out of bounds";
    return false;
  }
  return true;
}

// Chunk area -> RAM: zero chunks are left as holes (the fresh file reads as zeros; the plan
// checked their CRC), raw chunks read, zstd frames decompressed (the output can never exceed the
// chunk's place), each chunk's CRC checked before the job ends. Two destinations:
// - ramWrite: into a buffer this thread reuses, CRC taken there while hot, then pwrite()n into
//   the RAM file (see RestoreRangeByWrite in ram_copy.cc for why this wins on a VM);
// - otherwise (hugetlbfs, O_APPEND fds): straight into a shared mapping of the RAM file.
void RestoreChunks(const ChunkJob& j, CopyOutcome* o) {
  std::unique_ptr<Mapping> map;
  if (!j.ramWrite) {
    map = std::make_unique<Mapping>(j.ramFd, j.ramOffset, j.length, true);
    if (map->err()) {
      o->Fail(map->err(), "mmap", "ram");
      return;
    }
  }
  thread_local Scratch in(kBufferAlign);
  thread_local Scratch out(kBufferAlign);
  uint64_t chunks = (j.length + j.chunkSize - 1) / j.chunkSize;
  for (uint64_t c = 0; c < chunks; c++) {
    if (Cancelled(j, o)) return;
    StoredChunk e;
    if (!ReadEntry(j, c, &e, o)) return;
    if (e.kind == kZero) continue;
    // A run of raw chunks stored back to back in one layer (a version-1 base, or a chunk area
    // written in order) is read with one pread and written with one pwrite: a chain resolved
    // at 64 KiB units would otherwise cost a pair of system calls per unit.
    uint64_t last = c, len = e.len;
    if (e.kind == kRaw) {
      for (uint64_t next = e.off + e.stored; last + 1 < chunks && len < kMaxRun; last++) {
        StoredChunk n;
        if (!ReadEntry(j, last + 1, &n, o)) return;
        if (n.kind != kRaw || n.fd != e.fd || n.off != next || len + n.len > kMaxRun) break;
        len += n.len;
        next += n.stored;
      }
    }
    uint8_t* dst = map ? map->data() + e.start : out.get(len);
    if (!dst) {
      o->Fail(ENOMEM, "posix_memalign", "ram");
      return;
    }
    if (map) {
      if (int err = Populate(dst, len, true)) {
        o->Fail(err, "madvise", "ram");
        return;
      }
    }
    const uint8_t* data = dst;
    if (e.kind == kRaw && (map ? e.off % j.unit == 0 && len % j.unit == 0 : true)) {
      // The stored bytes are the chunks: read straight into place when aligned (mapping), else
      // into the bounce buffer and used where they landed (no copy).
      uint8_t* buf = map ? dst : in.get(AlignUp(len + j.unit, j.unit));
      if (!buf) {
        o->Fail(ENOMEM, "posix_memalign", "ram");
        return;
      }
      int64_t at = ReadStored(j, e.fd, e.off, len, buf);
      if (at < 0) {
        o->Fail(static_cast<int>(-at), "pread", -at == EFAULT ? "ram" : "image");
        return;
      }
      data = buf + at;
    } else if (e.kind == kRaw) {  // unaligned raw chunks into a mapping: through the bounce buffer
      uint8_t* buf = in.get(AlignUp(len + j.unit, j.unit));
      int64_t at = buf ? ReadStored(j, e.fd, e.off, len, buf) : -ENOMEM;
      if (at < 0) {
        o->Fail(static_cast<int>(-at), at == -ENOMEM ? "posix_memalign" : "pread", "image");
        return;
      }
      memcpy(dst, buf + at, len);
    } else if (!DecodeInto(j, e.fd, e.off, e.stored, e.kind, dst, e.len, &in, o)) {
      if (!o->err) o->badChunk = static_cast<int64_t>(c);
      return;
    }
    if (j.verify) {
      for (uint64_t k = c, at = 0; k <= last; k++) {
        StoredChunk v;
        ReadEntry(j, k, &v, o);  // checked above
        uint32_t got = Crc32c(data + at, v.len);
        if (got != v.crc) {
          o->badChunk = static_cast<int64_t>(k);
          o->badCrc = got;
          return;
        }
        at += v.len;
      }
    }
    if (!map) {
      ssize_t put = PwriteAll(j.ramFd, data, len, j.ramOffset + e.start);
      if (put < 0) {
        o->Fail(static_cast<int>(-put), "pwrite", "ram");
        return;
      }
    }
    o->dataBytes += e.kind == kRaw ? len : e.stored;
    c = last;
  }
}

bool ReadJob(const Napi::CallbackInfo& info, ChunkJob* j, bool save) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) {
    Napi::TypeError::New(env, "expected a job object").ThrowAsJavaScriptException();
    return false;
  }
  Napi::Object o = info[0].As<Napi::Object>();
  if (!ReadRamRange(env, o, save, true, true, j) || !JobField(env, o, "unit", &j->unit)) return false;
  j->layerFds.assign(1, j->imageFd);
  Napi::Value layers = o.Get("layerFds");
  if (!save && !layers.IsUndefined()) {
    // Every layer of a chain after the top one (docs/FORMAT.md, version 3: at most 16 bases).
    if (!layers.IsArray() || layers.As<Napi::Array>().Length() > kMaxLayers) {
      Napi::TypeError::New(env, "job.layerFds must be an array of at most 16 fds").ThrowAsJavaScriptException();
      return false;
    }
    Napi::Array a = layers.As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); i++) {
      int fd = -1;
      if (!ToInteger(env, a.Get(i), "job.layerFds[]", 0, kMaxFd, &fd)) return false;
      j->layerFds.push_back(fd);
    }
  }
  auto pow2 = [](uint64_t v) { return v && !(v & (v - 1)); };
  if (!pow2(j->unit) || j->unit < 512 || !pow2(j->chunkSize) || j->chunkSize < 4096 || j->chunkSize > kMaxChunk || j->length == 0 ||
      j->length % 4096 || j->ramOffset % j->chunkSize) {
    Napi::RangeError::New(env, "job: unit and chunkSize must be powers of two (4 KiB <= chunkSize <= 64 MiB), length a positive "
                               "multiple of 4096, ramOffset a multiple of chunkSize")
        .ThrowAsJavaScriptException();
    return false;
  }
  uint64_t chunks = (j->length + j->chunkSize - 1) / j->chunkSize;
  Napi::Value idx = o.Get("index");
  if (!idx.IsTypedArray() || idx.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    Napi::TypeError::New(env, "job.index must be a Uint8Array").ThrowAsJavaScriptException();
    return false;
  }
  Napi::Uint8Array a = idx.As<Napi::Uint8Array>();
  j->index = a.Data();
  j->indexBytes = a.ByteLength();
  if (j->indexBytes < chunks * kIndexEntry) {
    Napi::RangeError::New(env, "job.index has fewer entries than the range has chunks").ThrowAsJavaScriptException();
    return false;
  }
  if (save) {
    if (j->hash.base && j->hash.unit != j->chunkSize) {
      Napi::RangeError::New(env, "job.baseHashes needs hashUnit = chunkSize (a delta stores whole units)").ThrowAsJavaScriptException();
      return false;
    }
    if (!ToInteger(env, o.Get("level"), "job.level (0: store raw)", -131072, 22, &j->level)) return false;
    Napi::Value cur = o.Get("cursor");
    if (!cur.IsTypedArray() || cur.As<Napi::TypedArray>().TypedArrayType() != napi_bigint64_array ||
        cur.As<Napi::TypedArray>().ElementLength() < 1) {
      Napi::TypeError::New(env, "job.cursor must be a BigInt64Array (on a SharedArrayBuffer) of at least one element").ThrowAsJavaScriptException();
      return false;
    }
    j->cursor = cur.As<Napi::TypedArrayOf<int64_t>>().Data();
    if (*j->cursor < 0 || static_cast<uint64_t>(*j->cursor) % j->unit) {
      Napi::RangeError::New(env, "job.cursor must be a non-negative multiple of unit").ThrowAsJavaScriptException();
      return false;
    }
  } else {
    Napi::Value v = o.Get("verify");
    j->verify = !v.IsBoolean() || v.As<Napi::Boolean>().Value();
  }
  return true;
}


Napi::Value SaveChunksJs(const Napi::CallbackInfo& info) {
  ChunkJob j;
  if (!ReadJob(info, &j, true)) return info.Env().Undefined();
  CopyOutcome o;
  SaveChunks(j, &o);
  return OutcomeValue(info.Env(), o);
}

Napi::Value RestoreChunksJs(const Napi::CallbackInfo& info) {
  ChunkJob j;
  if (!ReadJob(info, &j, false)) return info.Env().Undefined();
  CopyOutcome o;
  RestoreChunks(j, &o);
  return OutcomeValue(info.Env(), o);
}

}  // namespace

void InitChunkCodec(Napi::Env env, Napi::Object exports) {
  exports.Set("saveChunks", Napi::Function::New(env, SaveChunksJs, "saveChunks"));
  exports.Set("restoreChunks", Napi::Function::New(env, RestoreChunksJs, "restoreChunks"));
#ifdef IOHELPER_ZSTD
  exports.Set("zstd", Napi::String::New(env, ZSTD_versionString()));
#else
  exports.Set("zstd", env.Null());
#endif
}

}  // namespace iohelper
