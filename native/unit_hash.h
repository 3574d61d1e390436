// SHA-256 of every hash unit of a RAM range, fed in order as data pieces and zero runs
// (docs/FORMAT.md, "Content hashes"). SHA-256 comes from the OpenSSL that Node.js itself links
// (its libcrypto symbols are visible to addons), so no library is added to the build.
#pragma once
#include <cstddef>
#include <cstdint>

typedef struct evp_md_ctx_st EVP_MD_CTX;

namespace iohelper {

constexpr size_t kHashBytes = 32;

class UnitHasher {
 public:
  // Writes one digest per unit of a range of `length` bytes that starts on a unit boundary to
  // out[32 * i]; `out` holds 32 * ceil(length / unit) bytes.
  UnitHasher(uint64_t unit, uint64_t length, uint8_t* out);
  ~UnitHasher();
  UnitHasher(const UnitHasher&) = delete;
  UnitHasher& operator=(const UnitHasher&) = delete;
  // False when OpenSSL could not set up a digest (then no digest is written).
  bool ok() const { return ctx_ != nullptr; }
  void Data(const uint8_t* data, uint64_t len);
  // `len` zero bytes. Zeros are counted, not hashed, until data follows them in the same unit:
  // a whole unit of zeros (a hole, fed in any number of pieces) costs nothing, its digest
  // computed once per thread and unit size.
  void Zeros(uint64_t len);

 private:
  void Begin();
  void Finish();
  uint64_t unit_, length_, pos_ = 0;
  uint8_t* out_;
  EVP_MD_CTX* ctx_;
  bool open_ = false;
  uint64_t pendingZeros_ = 0;  // zeros at the start of the current unit, not yet hashed
};

}  // namespace iohelper
