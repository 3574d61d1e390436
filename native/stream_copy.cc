// The hot loop of the stream helper, off the JS thread.
//
// toFile:   one thread drains the pipe into a ring of aligned buffers while `writers` threads
//           pwrite full buffers at increasing offsets (several writes in flight).
// fromFile: `readers` threads pread buffers ahead at increasing offsets while one thread writes
//           them to the pipe in order.
//
// The caller decides everything else (alignment, O_DIRECT, the unaligned head, truncating the
// padded tail, fdatasync): this file only moves bytes. Progress and cancellation go through a
// BigUint64Array the caller passes in: [0] = bytes moved so far, [1] = set non-zero to cancel.
#include "stream_copy.h"

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "args.h"
#include "limits.h"
#include "crc32c.h"
#include "errno_error.h"
#include "retry.h"

namespace iohelper {
namespace {

// Every field comes from the caller (StreamCopy refuses a missing or unusable one).
struct Options {
  bool toFile;
  int pipeFd;
  int fileFd;
  uint64_t offset;    // file offset of the first byte (aligned when direct)
  size_t bufferSize;
  size_t align;       // buffer alignment and, when padTail, tail padding unit
  int threads;        // writers (toFile) or readers (fromFile)
  int slots;          // buffers in the ring
  bool padTail;       // O_DIRECT: write the last partial buffer padded to `align`
  bool dropCache;     // buffered fallback: flush and drop each written range
};

// The copy's threads. Not std::thread: the addon is built without C++ exceptions, so a thread
// the kernel refuses (a pids cgroup limit, RLIMIT_NPROC) would make std::thread's constructor
// terminate the process. pthread_create returns the errno instead.
class Threads {
 public:
  explicit Threads(std::function<void()> body) : body_(std::move(body)) {}
  ~Threads() { Join(); }

  // Starts up to n threads running the body. Returns 0, or the errno of the first that could
  // not start; those started before it run on (the caller makes them end, then Join()s).
  int Start(int n) {
    for (int i = 0; i < n; i++) {
      pthread_t t;
      int err = pthread_create(&t, nullptr, Run, this);
      if (err) return err;
      ids_.push_back(t);
    }
    return 0;
  }

  void Join() {
    for (pthread_t t : ids_) pthread_join(t, nullptr);
    ids_.clear();
  }

 private:
  static void* Run(void* self) {
    static_cast<Threads*>(self)->body_();
    return nullptr;
  }
  std::function<void()> body_;
  std::vector<pthread_t> ids_;
};

struct Failure {
  int err = 0;
  std::string syscall;
  std::string side;  // "pipe" or "file"
};

class StreamCopyWorker : public Napi::AsyncWorker {
 public:
  StreamCopyWorker(Napi::Env env, const Options& o, Napi::BigUint64Array progress)
      : Napi::AsyncWorker(env, "iohelper.streamCopy"),
        o_(o),
        deferred_(Napi::Promise::Deferred::New(env)),
        progressRef_(Napi::Persistent(progress)),
        progress_(progress.Data()) {}

  // The fds are our own duplicates (see StreamCopy): closed only here, after every thread ended.
  ~StreamCopyWorker() override {
    close(o_.pipeFd);
    close(o_.fileFd);
  }

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    std::vector<void*> bufs;
    for (int i = 0; i < o_.slots; i++) {
      void* p = nullptr;
      if (posix_memalign(&p, std::max<size_t>(o_.align, 4096), o_.bufferSize) != 0) {
        Fail(ENOMEM, "posix_memalign", "file");
        break;
      }
      bufs.push_back(p);
    }
    if (!failed()) {
      if (o_.toFile)
        RunToFile(bufs);
      else
        RunFromFile(bufs);
    }
    for (void* p : bufs) free(p);
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (fail_.err) {
      Napi::Error e = ErrnoError(env, fail_.err, fail_.syscall.c_str());
      e.Set("side", Napi::String::New(env, fail_.side));
      e.Set("bytes", U64Value(env, done_));
      deferred_.Reject(e.Value());
      return;
    }
    Napi::Object r = Napi::Object::New(env);
    r.Set("bytes", U64Value(env, done_));
    r.Set("written", U64Value(env, written_));
    r.Set("crc", Napi::Number::New(env, ~crc_));
    deferred_.Resolve(r);
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  struct Slot {
    void* buf;
    size_t len;      // real bytes of stream data
    size_t ioLen;    // bytes to write (len padded when padTail)
    uint64_t off;
    uint64_t seq;
  };

  bool failed() {
    return __atomic_load_n(&failedFlag_, __ATOMIC_ACQUIRE) || __atomic_load_n(&progress_[1], __ATOMIC_RELAXED);
  }

  void Fail(int err, const char* syscall, const char* side) {
    std::lock_guard<std::mutex> g(mu_);
    if (!fail_.err) {
      fail_.err = err;
      fail_.syscall = syscall;
      fail_.side = side;
    }
    __atomic_store_n(&failedFlag_, 1, __ATOMIC_RELEASE);
    cv_.notify_all();
  }

  // A pipe wait ends on the caller's cancel and on the first error of any thread: a peer that
  // goes quiet must not keep a failed copy from reporting (the side that failed is not the pipe).
  StopWords Stop() { return StopWords{&progress_[1], &failedFlag_}; }

  void AddProgress(size_t n) {
    __atomic_fetch_add(&progress_[0], static_cast<uint64_t>(n), __ATOMIC_RELAXED);
  }

  // Fail() keeps the first error under the lock, so a cancel never overwrites a real cause.
  void CheckCancelled() {
    if (__atomic_load_n(&progress_[1], __ATOMIC_RELAXED)) Fail(ECANCELED, "streamCopy", "pipe");
  }

  // ---- pipe -> file ------------------------------------------------------------------------
  void RunToFile(std::vector<void*>& bufs) {
    std::deque<void*> freeBufs(bufs.begin(), bufs.end());
    std::deque<Slot> full;
    bool eof = false;
    Threads writers([&] {
      for (;;) {
        Slot s;
        {
          std::unique_lock<std::mutex> g(mu_);
          cv_.wait(g, [&] { return !full.empty() || eof || failedFlag_; });
          if (failedFlag_ || full.empty()) return;
          s = full.front();
          full.pop_front();
        }
        ssize_t n = PwriteAll(o_.fileFd, s.buf, s.ioLen, s.off);
        if (n < 0) {
          Fail(static_cast<int>(-n), "pwrite", "file");
          return;
        }
        if (o_.dropCache) DropCache(s.off, s.ioLen);
        AddProgress(s.len);
        std::lock_guard<std::mutex> g(mu_);
        written_ += s.ioLen;
        freeBufs.push_back(s.buf);
        cv_.notify_all();
      }
    });
    if (int err = writers.Start(o_.threads)) Fail(err, "pthread_create", "thread");

    uint64_t off = o_.offset;
    for (;;) {
      void* buf;
      {
        std::unique_lock<std::mutex> g(mu_);
        cv_.wait(g, [&] { return !freeBufs.empty() || failedFlag_; });
        if (failedFlag_) break;
        buf = freeBufs.front();
        freeBufs.pop_front();
      }
      CheckCancelled();
      if (failed()) break;
      ssize_t n = ReadFull(o_.pipeFd, buf, o_.bufferSize, Stop());
      if (n < 0) {
        Fail(static_cast<int>(-n), "read", "pipe");
        break;
      }
      size_t len = static_cast<size_t>(n);
      if (len == 0) {
        std::lock_guard<std::mutex> g(mu_);
        freeBufs.push_back(buf);
        break;
      }
      // The stream's CRC-32C, in stream order (this is the only reader thread): the image
      // records it so a reader can check the device state before QEMU consumes it.
      crc_ = Crc32cUpdate(crc_, buf, len);
      size_t ioLen = len;
      if (o_.padTail && len % o_.align) {
        ioLen = (len + o_.align - 1) / o_.align * o_.align;
        memset(static_cast<char*>(buf) + len, 0, ioLen - len);
      }
      {
        std::lock_guard<std::mutex> g(mu_);
        full.push_back(Slot{buf, len, ioLen, off, 0});
        done_ += len;
        cv_.notify_all();
      }
      off += len;
      if (len < o_.bufferSize) break;  // the stream ended inside this buffer
    }
    {
      std::lock_guard<std::mutex> g(mu_);
      eof = true;
      cv_.notify_all();
    }
    writers.Join();
    if (fail_.err) done_ = __atomic_load_n(&progress_[0], __ATOMIC_RELAXED);
  }

  // Writes the range back and drops it from the page cache. A writeback error must fail the
  // copy here: sync_file_range reports it once, and the final fdatasync would then succeed.
  void DropCache(uint64_t off, size_t len) {
    if (sync_file_range(o_.fileFd, static_cast<off_t>(off), static_cast<off_t>(len),
                        SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER) < 0) {
      Fail(errno, "sync_file_range", "file");
      return;
    }
    posix_fadvise(o_.fileFd, static_cast<off_t>(off), static_cast<off_t>(len), POSIX_FADV_DONTNEED);
  }

  // ---- file -> pipe ------------------------------------------------------------------------
  void RunFromFile(std::vector<void*>& bufs) {
    std::deque<void*> freeBufs(bufs.begin(), bufs.end());
    std::map<uint64_t, Slot> ready;
    uint64_t nextSeq = 0;
    uint64_t endSeq = UINT64_MAX;  // first sequence number past end of file
    Threads readers([&] {
      for (;;) {
        void* buf;
        uint64_t seq;
        {
          std::unique_lock<std::mutex> g(mu_);
          cv_.wait(g, [&] { return failedFlag_ || nextSeq >= endSeq || !freeBufs.empty(); });
          if (failedFlag_ || nextSeq >= endSeq) return;
          buf = freeBufs.front();
          freeBufs.pop_front();
          seq = nextSeq++;
        }
        uint64_t off = o_.offset + seq * o_.bufferSize;
        size_t got = 0;
        while (got < o_.bufferSize) {
          ssize_t n = PreadOnce(o_.fileFd, static_cast<char*>(buf) + got, o_.bufferSize - got, off + got);
          if (n < 0) {
            Fail(static_cast<int>(-n), "pread", "file");
            return;
          }
          if (n == 0) break;
          got += static_cast<size_t>(n);
          if (o_.padTail && got % o_.align) break;  // O_DIRECT: a short read means end of file
        }
        std::lock_guard<std::mutex> g(mu_);
        if (got < o_.bufferSize) endSeq = std::min(endSeq, seq + 1);
        ready[seq] = Slot{buf, got, got, off, seq};
        cv_.notify_all();
      }
    });
    if (int err = readers.Start(o_.threads)) Fail(err, "pthread_create", "thread");

    for (uint64_t seq = 0;; seq++) {
      Slot s;
      {
        std::unique_lock<std::mutex> g(mu_);
        cv_.wait(g, [&] { return failedFlag_ || ready.count(seq) || seq >= endSeq; });
        if (failedFlag_ || (!ready.count(seq) && seq >= endSeq)) break;
        s = ready[seq];
        ready.erase(seq);
      }
      CheckCancelled();
      if (failed()) break;
      if (s.len > 0) {
        crc_ = Crc32cUpdate(crc_, s.buf, s.len);  // in stream order: the only writer thread
        int rc = WriteAll(o_.pipeFd, s.buf, s.len, Stop());
        if (rc < 0) {
          Fail(-rc, "write", "pipe");
          break;
        }
        AddProgress(s.len);
      }
      std::lock_guard<std::mutex> g(mu_);
      done_ += s.len;
      written_ += s.len;
      freeBufs.push_back(s.buf);
      cv_.notify_all();
      if (s.len < o_.bufferSize) break;
    }
    {
      std::lock_guard<std::mutex> g(mu_);
      if (!failedFlag_) {
        endSeq = 0;  // stop readers that are still waiting for a buffer
      }
      cv_.notify_all();
    }
    // Readers may still be waiting; wake them all by marking the run over.
    {
      std::lock_guard<std::mutex> g(mu_);
      nextSeq = UINT64_MAX;
      endSeq = 0;
      cv_.notify_all();
    }
    readers.Join();
  }

  Options o_;
  Napi::Promise::Deferred deferred_;
  Napi::Reference<Napi::BigUint64Array> progressRef_;
  uint64_t* progress_;
  std::mutex mu_;
  std::condition_variable cv_;
  int failedFlag_ = 0;
  Failure fail_;
  uint64_t done_ = 0;
  uint64_t written_ = 0;
  uint32_t crc_ = ~0u;  // raw CRC-32C state of the stream bytes moved
};

// streamCopy(options, progress: BigUint64Array(2)) -> Promise<{bytes, written, crc}>
Napi::Value StreamCopy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsTypedArray() ||
      info[1].As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array ||
      info[1].As<Napi::TypedArray>().ElementLength() < 2) {
    Napi::TypeError::New(env, "streamCopy(options, progress: BigUint64Array(2))").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Object opt = info[0].As<Napi::Object>();
  auto num = [&](const char* key, int64_t lo, int64_t hi, auto* out) {
    return ToInteger(env, opt.Get(key), std::string("streamCopy: options.") + key, lo, hi, out);
  };
  Options o;
  int pipeFd, fileFd;
  if (!num("pipeFd", 0, kMaxFd, &pipeFd) || !num("fileFd", 0, kMaxFd, &fileFd) ||
      !num("offset", 0, kMaxSafeInteger, &o.offset) || !num("bufferSize", 4096, kMaxBufferSize, &o.bufferSize) ||
      !num("align", 1, 1 << 20, &o.align) || !num("threads", 1, 64, &o.threads) || !num("slots", 2, 66, &o.slots))
    return env.Undefined();
  o.toFile = opt.Get("toFile").ToBoolean();
  o.padTail = opt.Get("padTail").ToBoolean();
  o.dropCache = opt.Get("dropCache").ToBoolean();
  o.slots = std::max(o.slots, o.threads + 1);
  if (o.bufferSize * static_cast<size_t>(o.slots) > kMaxRingBytes) {
    Napi::RangeError::New(env, "streamCopy: bufferSize x slots over the ring's limit (256 MiB)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if ((o.align & (o.align - 1)) != 0 || o.bufferSize % o.align != 0) {
    Napi::RangeError::New(env, "streamCopy: align must be a power of two dividing bufferSize").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  // Every refusal is above: from here the duplicates belong to the worker, which closes them.
  // The copy's threads use duplicates of the caller's fds: whatever JavaScript closes meanwhile,
  // they never write to (or read from) a number that a later open has reused.
  o.pipeFd = fcntl(pipeFd, F_DUPFD_CLOEXEC, 0);
  if (o.pipeFd < 0) return ThrowErrno(env, errno, "fcntl");
  o.fileFd = fcntl(fileFd, F_DUPFD_CLOEXEC, 0);
  if (o.fileFd < 0) {
    int err = errno;
    close(o.pipeFd);
    return ThrowErrno(env, err, "fcntl");
  }
  auto* w = new StreamCopyWorker(env, o, info[1].As<Napi::BigUint64Array>());
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace

void InitStreamCopy(Napi::Env env, Napi::Object exports) {
  exports.Set("streamCopy", Napi::Function::New(env, StreamCopy, "streamCopy"));
}

}  // namespace iohelper
