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

Team::Team(int size) : size_(size < 1 ? 1 : size) {
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
    call_(task_, part, size_);
    if (finished_.fetch_add(1, std::memory_order_acq_rel) + 1 == size_ - 1) finished_.notify_one();
  }
}

void Team::run_task(void* fn, Trampoline call) {
  if (size_ == 1) {
    call(fn, 0, 1);
    return;
  }
  task_ = fn;
  call_ = call;
  finished_.store(0, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_acq_rel);
  generation_.notify_all();
  call(fn, 0, size_);
  for (int done = finished_.load(std::memory_order_acquire); done != size_ - 1;
       done = finished_.load(std::memory_order_acquire))
    wait_change(finished_, done, 1000);
}

void Team::barrier() {
  if (size_ == 1) return;
  std::uint64_t gen = barrier_generation_.load(std::memory_order_acquire);
  if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == size_) {
    arrived_.store(0, std::memory_order_relaxed);
    barrier_generation_.fetch_add(1, std::memory_order_acq_rel);
    barrier_generation_.notify_all();
    return;
  }
  wait_change(barrier_generation_, gen, 1000);
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
