// Module entry: registers each native concern. The addon holds system calls and buffers only;
// every decision lives in the TypeScript layer.
#include <napi.h>

#include "aligned_buffer.h"
#include "chunk_codec.h"
#include "errno_error.h"
#include "prefetch.h"
#include "fd_passing.h"
#include "limits.h"
#include "file_syscalls.h"
#include "ram_copy.h"
#include "ram_reader.h"
#include "stream_copy.h"

namespace iohelper {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  InitErrnoNames(env, exports);
  InitAlignedBuffer(env, exports);
  InitFileSyscalls(env, exports);
  InitStreamCopy(env, exports);
  InitRamCopy(env, exports);
  InitRamReader(env, exports);
  InitChunkCodec(env, exports);
  InitPrefetch(env, exports);
  InitFdPassing(env, exports);
  Napi::Object limits = Napi::Object::New(env);
  limits.Set("indexEntry", Napi::Number::New(env, kIndexEntry));
  limits.Set("maxCompressedChunk", Napi::Number::New(env, static_cast<double>(kMaxChunk)));
  limits.Set("maxBufferSize", Napi::Number::New(env, static_cast<double>(kMaxBufferSize)));
  limits.Set("maxRingBytes", Napi::Number::New(env, static_cast<double>(kMaxRingBytes)));
  limits.Set("maxLayers", Napi::Number::New(env, kMaxLayers));
  exports.Set("limits", limits);
  return exports;
}

NODE_API_MODULE(iohelper, Init)

}  // namespace iohelper
