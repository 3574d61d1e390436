// saveChunks()/restoreChunks(): one range of a guest RAM file to or from the chunk area of a
// compressed (version 2) image, chunk by chunk: zero chunks stored as nothing, others as one
// zstd frame or raw, each at a place reserved with an atomic add on a counter every worker
// shares. Synchronous: each worker thread of the pool calls it for one job at a time. The
// JS layer decides and validates everything (levels, index entries, bounds); this file moves
// and transforms bytes.
#pragma once
#include <napi.h>

namespace iohelper {
void InitChunkCodec(Napi::Env env, Napi::Object exports);
}
