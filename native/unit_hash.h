// The keyed hash of every hash unit of a RAM range (docs/FORMAT.md, "Content hashes"): AES-128-
// GMAC under the chain's secret key, fed in order as data pieces and zero runs. AES-GCM comes
// from the OpenSSL that Node.js itself links (its libcrypto symbols are visible to addons), so
// no library is added to the build.
#pragma once
#include <cstddef>
#include <cstdint>

typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;

namespace iohelper {

constexpr size_t kHashBytes = 16;
constexpr size_t kHashKeyBytes = 16;

class UnitHasher {
 public:
  // Writes one tag per unit of a range of `length` bytes that starts on a unit boundary to
  // out[16 * i]; `out` holds 16 * ceil(length / unit) bytes. `key` is the chain's 16-byte key.
  UnitHasher(uint64_t unit, uint64_t length, const uint8_t* key, uint8_t* out);
  ~UnitHasher();
  UnitHasher(const UnitHasher&) = delete;
  UnitHasher& operator=(const UnitHasher&) = delete;
  // False once any OpenSSL call failed (setting up the cipher, or hashing a unit): a tag may
  // then be stale or missing, so the job that owns the hasher must fail, never use the tags.
  bool ok() const { return failed_ == nullptr; }
  // The OpenSSL call that failed first, or nullptr.
  const char* failedCall() const { return failed_; }
  void Data(const uint8_t* data, uint64_t len);
  // `len` zero bytes. Zeros are counted, not hashed, until data follows them in the same unit:
  // a whole unit of zeros (a hole, fed in any number of pieces) costs nothing, its tag computed
  // once per thread, key and unit size.
  void Zeros(uint64_t len);

 private:
  void Begin();
  void Finish();
  void Fail(const char* call);
  uint64_t unit_, length_, pos_ = 0;
  uint8_t* out_;
  uint8_t key_[kHashKeyBytes];
  EVP_CIPHER_CTX* ctx_;
  bool open_ = false;
  uint64_t pendingZeros_ = 0;  // zeros at the start of the current unit, not yet hashed
  const char* failed_ = nullptr;
};

}  // namespace iohelper
