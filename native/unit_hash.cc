#include "unit_hash.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace iohelper {
namespace {

alignas(64) const uint8_t kZeros[64 * 1024] = {};

// The digest of one whole unit of zeros, per thread, for the last unit size asked.
struct ZeroDigest {
  uint64_t unit = 0;
  uint8_t digest[kHashBytes];
};
thread_local ZeroDigest zeroDigest;

bool DigestOfZeros(uint64_t len, uint8_t* out) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (!ctx) return false;
  bool ok = EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) == 1;
  for (uint64_t done = 0; ok && done < len; done += sizeof kZeros) {
    ok = EVP_DigestUpdate(ctx, kZeros, std::min<uint64_t>(sizeof kZeros, len - done)) == 1;
  }
  ok = ok && EVP_DigestFinal_ex(ctx, out, nullptr) == 1;
  EVP_MD_CTX_free(ctx);
  return ok;
}

}  // namespace

UnitHasher::UnitHasher(uint64_t unit, uint64_t length, uint8_t* out) : unit_(unit), length_(length), out_(out), ctx_(EVP_MD_CTX_new()) {
  if (ctx_ && zeroDigest.unit != unit_) {
    if (DigestOfZeros(unit_, zeroDigest.digest)) {
      zeroDigest.unit = unit_;
    } else {
      EVP_MD_CTX_free(ctx_);
      ctx_ = nullptr;
    }
  }
}

UnitHasher::~UnitHasher() { EVP_MD_CTX_free(ctx_); }

void UnitHasher::Begin() {
  EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr);
  open_ = true;
  // The zeros this unit began with, fed only now that data follows them.
  for (uint64_t done = 0; done < pendingZeros_; done += sizeof kZeros) {
    EVP_DigestUpdate(ctx_, kZeros, std::min<uint64_t>(sizeof kZeros, pendingZeros_ - done));
  }
  pendingZeros_ = 0;
}

void UnitHasher::Finish() {
  uint8_t* digest = out_ + (pos_ - 1) / unit_ * kHashBytes;
  if (open_) {
    EVP_DigestFinal_ex(ctx_, digest, nullptr);
  } else if (pendingZeros_ == unit_) {
    memcpy(digest, zeroDigest.digest, kHashBytes);  // a whole unit of zeros: known
  } else {
    Begin();  // a short last unit of zeros
    EVP_DigestFinal_ex(ctx_, digest, nullptr);
  }
  open_ = false;
  pendingZeros_ = 0;
}

void UnitHasher::Data(const uint8_t* data, uint64_t len) {
  while (len && ctx_ && pos_ < length_) {
    uint64_t unitEnd = std::min(length_, (pos_ / unit_ + 1) * unit_);
    uint64_t n = std::min(len, unitEnd - pos_);
    if (!open_) Begin();
    EVP_DigestUpdate(ctx_, data, n);
    data += n;
    len -= n;
    pos_ += n;
    if (pos_ == unitEnd) Finish();
  }
}

void UnitHasher::Zeros(uint64_t len) {
  while (len && ctx_ && pos_ < length_) {
    uint64_t unitEnd = std::min(length_, (pos_ / unit_ + 1) * unit_);
    uint64_t n = std::min(len, unitEnd - pos_);
    if (open_) {
      for (uint64_t done = 0; done < n; done += sizeof kZeros) EVP_DigestUpdate(ctx_, kZeros, std::min<uint64_t>(sizeof kZeros, n - done));
    } else {
      pendingZeros_ += n;  // hashed only if data follows in this unit
    }
    len -= n;
    pos_ += n;
    if (pos_ == unitEnd) Finish();
  }
}

}  // namespace iohelper
