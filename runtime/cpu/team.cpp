#include "runtime/cpu/team.h"

#include <chrono>
#include <cstdlib>
#include <map>
#include <string>

#include "compiler/ir/error.h"

namespace cellfuse::cpu {
namespace {

inline void pause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Spins on `flag` until it differs from `seen`; after about `spin_us` microseconds of spinning,
// sleeps on it instead.
template <class A, class V>
void wait_change(const A& flag, V seen, int spin_us) {
  auto start = std::chrono::steady_clock::now();
  for (int i = 0;; ++i) {
    if (flag.load(std::memory_order_acquire) != seen) return;
    pause();
    if ((i & 1023) == 1023 &&
        std::chrono::steady_clock::now() - start > std::chrono::microseconds(spin_us)) {
      flag.wait(seen, std::memory_order_acquire);
      if (flag.load(std::memory_order_acquire) != seen) return;
    }
  }
}

// The caller of the current run on this thread, so that barrier() times only the caller's waits.
thread_local Team* calling_team = nullptr;

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

bool adaptive_by_default() {
  const char* env = std::getenv("CELLFUSE_ADAPTIVE_THREADS");
  if (!env) return true;
  const std::string v = env;
  if (v == "0" || v == "off" || v == "false") return false;
  if (v == "1" || v == "on" || v == "true") return true;
  throw Error("CELLFUSE_ADAPTIVE_THREADS='" + v + "' is not 0/off/false or 1/on/true");
}

// A caller's wait counts as a sign of a busy machine only above kBusyWaitNs: waking a sleeping
// worker takes tens of microseconds on a quiet VM, while a worker that lost its core waits for a
// scheduler time slice (milliseconds). Solo stretches grow from kFirstBackoff runs up to
// kMaxBackoff while probes keep finding the machine busy.
constexpr std::int64_t kBusyWaitNs = 200'000;
constexpr int kFirstBackoff = 16, kMaxBackoff = 4096;

}  // namespace

int default_thread_count() {
  if (const char* env = std::getenv("CELLFUSE_NUM_THREADS")) {
    char* end = nullptr;
    long n = std::strtol(env, &end, 10);
    if (end == env || *end || n < 1 || n > 1024)
      throw Error("CELLFUSE_NUM_THREADS='" + std::string(env) + "' is not a thread count from 1 to 1024");
    return static_cast<int>(n);
  }
  unsigned n = std::thread::hardware_concurrency();
  return n ? static_cast<int>(n) : 1;
}

Team::Team(int size) : size_(size < 1 ? 1 : size), adaptive_(adaptive_by_default()) {
  for (int part = 1; part < size_; ++part) threads_.emplace_back([this, part] { worker(part); });
}

Team::~Team() {
  stop_.store(true, std::memory_order_release);
  generation_.fetch_add(1, std::memory_order_acq_rel);
  generation_.notify_all();
  for (auto& t : threads_) t.join();
}

void Team::worker(int part) {
  std::uint64_t seen = 0;
  while (true) {
    wait_change(generation_, seen, 200);
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load(std::memory_order_acquire)) return;
    if (part < parts_) call_(task_, part, parts_);
    if (finished_.fetch_add(1, std::memory_order_acq_rel) + 1 == size_ - 1) finished_.notify_one();
  }
}

void Team::run_task(void* fn, Trampoline call) {
  // The run that ends a solo stretch is the probe: the whole team again.
  const bool solo = solo_left_ > 0 && --solo_left_ > 0;
  if (size_ == 1 || solo) {
    parts_ = 1;
    call(fn, 0, 1);
    return;
  }
  parts_ = size_;
  task_ = fn;
  call_ = call;
  caller_wait_ns_ = 0;
  calling_team = this;
  const std::int64_t start = now_ns();
  finished_.store(0, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_acq_rel);
  generation_.notify_all();
  call(fn, 0, parts_);
  const std::int64_t joined = now_ns();
  for (int done = finished_.load(std::memory_order_acquire); done != size_ - 1;
       done = finished_.load(std::memory_order_acquire))
    wait_change(finished_, done, 1000);
  calling_team = nullptr;
  const std::int64_t end = now_ns();
  judge(end - start, caller_wait_ns_ + (end - joined));
}

bool Team::busy(std::int64_t run_ns, std::int64_t wait_ns) {
  return wait_ns > kBusyWaitNs && 2 * wait_ns > run_ns;
}

void Team::judge(std::int64_t run_ns, std::int64_t wait_ns) {
  if (!adaptive_) return;
  if (busy(run_ns, wait_ns)) {
    // The caller waited more than it worked: one thread would have been as fast. Go solo for a
    // while, longer each time a probe finds the machine still busy.
    backoff_ = backoff_ == 0 ? kFirstBackoff : std::min(2 * backoff_, kMaxBackoff);
    solo_left_ = backoff_;
  } else {
    backoff_ = 0;
  }
}

void Team::barrier() {
  if (parts_ == 1) return;
  const bool timed = calling_team == this;
  const std::int64_t start = timed ? now_ns() : 0;
  std::uint64_t gen = barrier_generation_.load(std::memory_order_acquire);
  if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == parts_) {
    arrived_.store(0, std::memory_order_relaxed);
    barrier_generation_.fetch_add(1, std::memory_order_acq_rel);
    barrier_generation_.notify_all();
  } else {
    wait_change(barrier_generation_, gen, 1000);
  }
  if (timed) caller_wait_ns_ += now_ns() - start;
}

void Team::barrier_callback(void* team) { static_cast<Team*>(team)->barrier(); }

std::shared_ptr<Team> shared_team(int size) {
  static std::mutex mutex;
  static std::map<int, std::weak_ptr<Team>> teams;  // weak: an idle process keeps no threads
  std::lock_guard<std::mutex> lock(mutex);
  std::weak_ptr<Team>& slot = teams[size < 1 ? 1 : size];
  if (auto team = slot.lock()) return team;
  auto team = std::make_shared<Team>(size);
  slot = team;
  return team;
}

}  // namespace cellfuse::cpu
