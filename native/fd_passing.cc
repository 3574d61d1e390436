#include "fd_passing.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "args.h"
#include "errno_error.h"
#include "retry.h"

namespace iohelper {
namespace {

// sendWithFds(socketFd, bytes, fds[]) -> bytes sent. The fds travel with the first byte; the
// rest of the bytes (if the kernel sent only part) follow as plain writes.
Napi::Value SendWithFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sock;
  ByteView b;
  if (!ArgFd(info, 0, &sock) || !ArgBytes(info, 1, &b)) return env.Undefined();
  if (info.Length() < 3 || !info[2].IsArray() || b.length == 0) {
    Napi::TypeError::New(env, "sendWithFds(socketFd, nonEmptyBytes, fds[])").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Array arr = info[2].As<Napi::Array>();
  std::vector<int> fds;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    int fd;
    if (!ToInteger(env, arr.Get(i), "fds[" + std::to_string(i) + "]", 0, kMaxFd, &fd)) return env.Undefined();
    fds.push_back(fd);
  }
  if (fds.empty() || fds.size() > 16) {
    Napi::RangeError::New(env, "sendWithFds: 1 to 16 fds").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()), 0);
  struct iovec iov = {b.data, b.length};
  struct msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
  memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  ssize_t n;
  for (;;) {
    n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (n >= 0) break;
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      if (int e = WaitFd(sock, POLLOUT)) return ThrowErrno(env, e, "poll");
      continue;
    }
    return ThrowErrno(env, errno, "sendmsg");
  }
  if (static_cast<size_t>(n) < b.length) {
    int rc = WriteAll(sock, b.data + n, b.length - static_cast<size_t>(n));
    if (rc < 0) return ThrowErrno(env, -rc, "write");
  }
  return Napi::Number::New(env, static_cast<double>(b.length));
}

}  // namespace

void InitFdPassing(Napi::Env env, Napi::Object exports) {
  exports.Set("sendWithFds", Napi::Function::New(env, SendWithFds, "sendWithFds"));
}

}  // namespace iohelper
