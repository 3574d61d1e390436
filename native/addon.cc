// Module entry: registers each native concern. The addon holds system calls and buffers only;
// every decision lives in the TypeScript layer.
#include <napi.h>

#include "aligned_buffer.h"
#include "chunk_codec.h"
#include "prefetch.h"
#include "fd_passing.h"
#include "file_syscalls.h"
#include "ram_copy.h"
#include "stream_copy.h"

namespace iohelper {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  InitAlignedBuffer(env, exports);
  InitFileSyscalls(env, exports);
  InitStreamCopy(env, exports);
  InitRamCopy(env, exports);
  InitChunkCodec(env, exports);
  InitPrefetch(env, exports);
  InitFdPassing(env, exports);
  return exports;
}

NODE_API_MODULE(iohelper, Init)

}  // namespace iohelper
