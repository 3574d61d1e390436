// CRC-32C (Castagnoli), the checksum of the image format (docs/FORMAT.md).
// Raw state functions work on the inverted register so runs can be chained; Crc32c() is the
// usual one-shot value (init ~0, final xor ~0).
#pragma once
#include <cstddef>
#include <cstdint>

namespace iohelper {

uint32_t Crc32cUpdate(uint32_t state, const void* data, size_t len);
// Advances the raw state over `len` zero bytes without reading memory (len a multiple of 4096
// is fast: a table step per 4 KiB).
uint32_t Crc32cZeros(uint32_t state, uint64_t len);
uint32_t Crc32c(const void* data, size_t len);

}  // namespace iohelper
