#include "fd_passing.h"

#include <poll.h>
#include <sys/socket.h>
#include <time.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "args.h"
#include "errno_error.h"
#include "retry.h"

namespace iohelper {
namespace {

// Milliseconds left until `deadline` (CLOCK_MONOTONIC), at least 0.
int MsLeft(const struct timespec& deadline) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  int64_t ms = (deadline.tv_sec - now.tv_sec) * 1000 + (deadline.tv_nsec - now.tv_nsec) / 1000000;
  return ms < 0 ? 0 : static_cast<int>(ms);
}

// sendWithFds(socketFd, bytes, fds[], timeoutMs) -> bytes sent. The fds travel with the first
// byte; the rest of the bytes (if the kernel sent only part) follow as plain sends. It runs on
// the JS thread, so a peer that stops reading costs at most timeoutMs (then ETIMEDOUT), never
// a hang.
Napi::Value SendWithFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sock;
  ByteView b;
  uint32_t timeoutMs;
  if (!ArgFd(info, 0, &sock) || !ArgBytes(info, 1, &b)) return env.Undefined();
  if (info.Length() < 4 || !info[2].IsArray() || b.length == 0) {
    Napi::TypeError::New(env, "sendWithFds(socketFd, nonEmptyBytes, fds[], timeoutMs)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (!ToInteger(env, info[3], "timeoutMs", 0, 3600 * 1000, &timeoutMs)) return env.Undefined();
  struct timespec deadline;
  clock_gettime(CLOCK_MONOTONIC, &deadline);
  deadline.tv_sec += timeoutMs / 1000;
  deadline.tv_nsec += static_cast<long>(timeoutMs % 1000) * 1000000;
  if (deadline.tv_nsec >= 1000000000) deadline.tv_sec++, deadline.tv_nsec -= 1000000000;
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
  size_t sent = 0;
  while (sent < b.length) {
    if (sent) {  // the fds went with the first bytes
      iov = {b.data + sent, b.length - sent};
      msg.msg_control = nullptr;
      msg.msg_controllen = 0;
    }
    ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return ThrowErrno(env, errno, "sendmsg");
    if (int e = WaitFd(sock, POLLOUT, MsLeft(deadline))) return ThrowErrno(env, e, "sendmsg");
  }
  return Napi::Number::New(env, static_cast<double>(b.length));
}

}  // namespace

void InitFdPassing(Napi::Env env, Napi::Object exports) {
  exports.Set("sendWithFds", Napi::Function::New(env, SendWithFds, "sendWithFds"));
}

}  // namespace iohelper
