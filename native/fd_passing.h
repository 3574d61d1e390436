// sendWithFds(): one sendmsg() carrying bytes plus file descriptors (SCM_RIGHTS), the way
// QMP's getfd/add-fd receive fds from a manager.
#pragma once
#include <napi.h>

namespace iohelper {
void InitFdPassing(Napi::Env env, Napi::Object exports);
}
