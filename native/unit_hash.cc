#include "unit_hash.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cstring>

namespace iohelper {
namespace {

alignas(64) const uint8_t kZeros[64 * 1024] = {};
// Every unit is authenticated under the same fixed IV: the tag is GHASH_H(unit) xor E_K(IV), a
// universal hash of the unit under the secret H = E_K(0). Nothing is encrypted.
const uint8_t kIv[12] = {};

// Starts a unit: the chain's key schedule is kept, the GHASH state reset.
bool Reset(EVP_CIPHER_CTX* ctx) { return EVP_EncryptInit_ex(ctx, nullptr, nullptr, nullptr, kIv) == 1; }

bool Feed(EVP_CIPHER_CTX* ctx, const uint8_t* data, uint64_t len) {
  int outl = 0;
  while (len) {
    int n = static_cast<int>(std::min<uint64_t>(len, 1u << 30));
    if (EVP_EncryptUpdate(ctx, nullptr, &outl, data, n) != 1) return false;  // additional data only
    data += n;
    len -= static_cast<uint64_t>(n);
  }
  return true;
}

bool FeedZeros(EVP_CIPHER_CTX* ctx, uint64_t len) {
  for (uint64_t done = 0; done < len; done += sizeof kZeros)
    if (!Feed(ctx, kZeros, std::min<uint64_t>(sizeof kZeros, len - done))) return false;
  return true;
}

bool Tag(EVP_CIPHER_CTX* ctx, uint8_t* out) {
  uint8_t none[16];
  int outl = 0;
  return EVP_EncryptFinal_ex(ctx, none, &outl) == 1 && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, kHashBytes, out) == 1;
}

// The tag of one whole unit of zeros, per thread, for the last key and unit size asked.
struct ZeroTag {
  uint64_t unit = 0;
  uint8_t key[kHashKeyBytes];
  uint8_t tag[kHashBytes];
};
thread_local ZeroTag zeroTag;

}  // namespace

UnitHasher::UnitHasher(uint64_t unit, uint64_t length, const uint8_t* key, uint8_t* out) : unit_(unit), length_(length), out_(out), ctx_(EVP_CIPHER_CTX_new()) {
  memcpy(key_, key, kHashKeyBytes);
  if (!ctx_) {
    Fail("EVP_CIPHER_CTX_new");
    return;
  }
  if (EVP_EncryptInit_ex(ctx_, EVP_aes_128_gcm(), nullptr, key_, kIv) != 1) {
    Fail("EVP_EncryptInit_ex");
    return;
  }
  if (zeroTag.unit == unit_ && memcmp(zeroTag.key, key_, kHashKeyBytes) == 0) return;
  zeroTag.unit = 0;  // invalid until the new tag is whole
  if (!Reset(ctx_) || !FeedZeros(ctx_, unit_) || !Tag(ctx_, zeroTag.tag)) {
    Fail("EVP_EncryptUpdate");
    return;
  }
  zeroTag.unit = unit_;
  memcpy(zeroTag.key, key_, kHashKeyBytes);
}

UnitHasher::~UnitHasher() { EVP_CIPHER_CTX_free(ctx_); }

void UnitHasher::Begin() {
  if (!Reset(ctx_)) Fail("EVP_EncryptInit_ex");
  open_ = true;
  // The zeros this unit began with, fed only now that data follows them.
  if (!FeedZeros(ctx_, pendingZeros_)) Fail("EVP_EncryptUpdate");
  pendingZeros_ = 0;
}

void UnitHasher::Fail(const char* call) {
  if (!failed_) failed_ = call;
}

void UnitHasher::Finish() {
  uint8_t* tag = out_ + (pos_ - 1) / unit_ * kHashBytes;
  if (!open_ && pendingZeros_ == unit_) {
    memcpy(tag, zeroTag.tag, kHashBytes);  // a whole unit of zeros: known
  } else {
    if (!open_) Begin();  // a short last unit of zeros
    if (!Tag(ctx_, tag)) Fail("EVP_EncryptFinal_ex");
  }
  open_ = false;
  pendingZeros_ = 0;
}

void UnitHasher::Data(const uint8_t* data, uint64_t len) {
  while (len && !failed_ && pos_ < length_) {
    uint64_t unitEnd = std::min(length_, (pos_ / unit_ + 1) * unit_);
    uint64_t n = std::min(len, unitEnd - pos_);
    if (!open_) Begin();
    if (!Feed(ctx_, data, n)) Fail("EVP_EncryptUpdate");
    data += n;
    len -= n;
    pos_ += n;
    if (pos_ == unitEnd) Finish();
  }
}

void UnitHasher::Zeros(uint64_t len) {
  while (len && !failed_ && pos_ < length_) {
    uint64_t unitEnd = std::min(length_, (pos_ / unit_ + 1) * unit_);
    uint64_t n = std::min(len, unitEnd - pos_);
    if (open_) {
      if (!FeedZeros(ctx_, n)) Fail("EVP_EncryptUpdate");
    } else {
      pendingZeros_ += n;  // hashed only if data follows in this unit
    }
    len -= n;
    pos_ += n;
    if (pos_ == unitEnd) Finish();
  }
}

}  // namespace iohelper
