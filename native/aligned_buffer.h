// Page-aligned memory exposed to JavaScript as ArrayBuffers.
#pragma once
#include <napi.h>

namespace iohelper {
void InitAlignedBuffer(Napi::Env env, Napi::Object exports);
}
