// Bounds the addon shares with the TypeScript layer (src/util/limits.ts, src/image/format.ts).
// addon.cc exports them as `limits`; src/native.ts compares them with its own when it loads, so
// a stale or mismatched build fails at once instead of refusing valid jobs.
#pragma once
#include <cstddef>
#include <cstdint>

namespace iohelper {

// Bytes of one chunk index entry (docs/FORMAT.md, versions 2 and 3).
constexpr size_t kIndexEntry = 24;
// Largest stored chunk (FORMAT.md, T9'): bounds every chunk buffer.
constexpr uint64_t kMaxChunk = 64ull << 20;
// Stream copy: bytes per buffer, and bytes of the whole ring.
constexpr int64_t kMaxBufferSize = 256 << 20;
constexpr size_t kMaxRingBytes = size_t{256} << 20;
// Bases below a delta (FORMAT.md, version 3: depth 1 .. 16).
constexpr uint32_t kMaxLayers = 16;

}  // namespace iohelper
