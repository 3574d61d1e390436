// saveRange()/restoreRange(): copy one range of a guest RAM file to or from its fixed place in
// an image file (a save reads RAM through ram_reader.h, a restore writes it by pwrite or a
// mapping), skipping holes and zero pages, with per-chunk CRC-32C. Synchronous: each worker thread of the pool calls it for one job at a time.
#pragma once
#include <napi.h>

namespace iohelper {
void InitRamCopy(Napi::Env env, Napi::Object exports);
}
