// readRanges(): reads byte ranges of a file through the page cache, so that a later mapping of
// the file (a lazily restored VM's RAM) finds them there. Synchronous: each worker thread of
// the pool calls it for one list of ranges at a time. The bytes land in a scratch buffer and
// are dropped: only the page cache is the point.
#pragma once
#include <napi.h>

namespace iohelper {
void InitPrefetch(Napi::Env env, Napi::Object exports);
}
