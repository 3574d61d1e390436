#include "crc32c.h"

#include <cstring>
#include <mutex>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace iohelper {
namespace {

constexpr uint32_t kPoly = 0x82F63B78u;  // reflected Castagnoli polynomial

uint32_t table8[8][256];
uint32_t zeros4k[4][256];  // state -> state after 4096 zero bytes, by byte lane
bool hw = false;
std::once_flag initOnce;

uint32_t SoftUpdate(uint32_t c, const uint8_t* p, size_t n) {
  while (n && (reinterpret_cast<uintptr_t>(p) & 7)) {
    c = table8[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    n--;
  }
  while (n >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    w ^= c;
    c = table8[7][w & 0xff] ^ table8[6][(w >> 8) & 0xff] ^ table8[5][(w >> 16) & 0xff] ^
        table8[4][(w >> 24) & 0xff] ^ table8[3][(w >> 32) & 0xff] ^ table8[2][(w >> 40) & 0xff] ^
        table8[1][(w >> 48) & 0xff] ^ table8[0][w >> 56];
    p += 8;
    n -= 8;
  }
  while (n--) c = table8[0][(c ^ *p++) & 0xff] ^ (c >> 8);
  return c;
}

// The raw state after 4096 zero bytes (zeros4k, filled by Init before any long update).
uint32_t Shift4k(uint32_t s) {
  return zeros4k[0][s & 0xff] ^ zeros4k[1][(s >> 8) & 0xff] ^ zeros4k[2][(s >> 16) & 0xff] ^ zeros4k[3][s >> 24];
}

#if defined(__x86_64__)
// One crc32 instruction waits for the previous one (3 cycles), so three independent streams
// over three consecutive 4 KiB blocks run about three times as fast; the raw update is linear,
// so the three states combine exactly: state(A B C) = shift(shift(a, |B|) ^ b, |C|) ^ c, where
// b and c start from 0 and shift advances a state over zero bytes.
__attribute__((target("sse4.2"))) uint32_t HwUpdate(uint32_t c, const uint8_t* p, size_t n) {
  constexpr size_t kBlock = 4096;
  while (n >= 3 * kBlock) {
    uint64_t a = c, b = 0, d = 0;
    for (size_t i = 0; i < kBlock; i += 8) {
      uint64_t wa, wb, wd;
      memcpy(&wa, p + i, 8);
      memcpy(&wb, p + kBlock + i, 8);
      memcpy(&wd, p + 2 * kBlock + i, 8);
      a = _mm_crc32_u64(a, wa);
      b = _mm_crc32_u64(b, wb);
      d = _mm_crc32_u64(d, wd);
    }
    c = Shift4k(Shift4k(static_cast<uint32_t>(a)) ^ static_cast<uint32_t>(b)) ^ static_cast<uint32_t>(d);
    p += 3 * kBlock;
    n -= 3 * kBlock;
  }
  uint64_t c64 = c;
  while (n && (reinterpret_cast<uintptr_t>(p) & 7)) {
    c64 = _mm_crc32_u8(static_cast<uint32_t>(c64), *p++);
    n--;
  }
  while (n >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    c64 = _mm_crc32_u64(c64, w);
    p += 8;
    n -= 8;
  }
  uint32_t c32 = static_cast<uint32_t>(c64);
  while (n--) c32 = _mm_crc32_u8(c32, *p++);
  return c32;
}
#endif

uint32_t RawUpdate(uint32_t c, const uint8_t* p, size_t n) {
#if defined(__x86_64__)
  if (hw) return HwUpdate(c, p, n);
#endif
  return SoftUpdate(c, p, n);
}

void Init() {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
    table8[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; i++)
    for (int t = 1; t < 8; t++) table8[t][i] = table8[0][table8[t - 1][i] & 0xff] ^ (table8[t - 1][i] >> 8);
#if defined(__x86_64__)
  hw = __builtin_cpu_supports("sse4.2");
#endif
  // The raw update over zero bytes is linear in the state: tabulate it per byte lane.
  static const uint8_t zero[4096] = {};
  for (int lane = 0; lane < 4; lane++)
    for (uint32_t b = 0; b < 256; b++) zeros4k[lane][b] = RawUpdate(b << (8 * lane), zero, sizeof zero);
}

}  // namespace

uint32_t Crc32cUpdate(uint32_t state, const void* data, size_t len) {
  std::call_once(initOnce, Init);
  return RawUpdate(state, static_cast<const uint8_t*>(data), len);
}

uint32_t Crc32cZeros(uint32_t state, uint64_t len) {
  std::call_once(initOnce, Init);
  static const uint8_t zero[4096] = {};
  while (len >= 4096) {
    state = Shift4k(state);
    len -= 4096;
  }
  return RawUpdate(state, zero, static_cast<size_t>(len));
}

uint32_t Crc32c(const void* data, size_t len) { return ~Crc32cUpdate(~0u, data, len); }

}  // namespace iohelper
