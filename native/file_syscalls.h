// Thin synchronous wrappers of the file, pipe and mapping system calls the helper needs.
// They retry EINTR and wait out EAGAIN on non-blocking pipes; everything else is the caller's.
#pragma once
#include <napi.h>

namespace iohelper {
void InitFileSyscalls(Napi::Env env, Napi::Object exports);
}
