// streamCopy(): the overlapped pipe<->file copy loop, run on native threads.
#pragma once
#include <napi.h>

namespace iohelper {
void InitStreamCopy(Napi::Env env, Napi::Object exports);
}
