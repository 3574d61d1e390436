// saveRange()/restoreRange(): copy one range of a guest RAM file to or from its fixed place in
// an image file, through an mmap of the RAM file, skipping holes and zero pages, with per-chunk
// CRC-32C. Synchronous: each worker thread of the pool calls it for one job at a time.
#pragma once
#include <napi.h>

namespace iohelper {
void InitRamCopy(Napi::Env env, Napi::Object exports);
}
