#pragma once
// A small team of threads for the CPU runner: the caller plus `size() - 1` workers that run the
// same function on their part of the work. Workers spin briefly between runs (a time step is a
// few microseconds) and then sleep, so an idle team costs nothing.
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <type_traits>
#include <thread>
#include <vector>

namespace cellfuse::cpu {

class Team {
 public:
  explicit Team(int size);
  ~Team();
  Team(const Team&) = delete;
  Team& operator=(const Team&) = delete;

  int size() const { return size_; }

  // Runs fn(part, parts) on every member (the caller is part 0) and returns when all are done.
  // Must not be called from inside a run. `fn` is borrowed, never copied: no allocation.
  template <class F>
  void run(F&& fn) {
    run_task(&fn, [](void* f, int part, int parts) { (*static_cast<std::remove_reference_t<F>*>(f))(part, parts); });
  }

  // Every member of the current run waits here until all have arrived.
  void barrier();

  // The barrier as a C callback, for generated kernels: barrier_callback(team).
  static void barrier_callback(void* team);

  // Held by whoever runs work on the team for a while (a whole sequence, a parameter-gradient
  // product), so that two threads never drive one team at once.
  std::mutex& user_mutex() { return user_mutex_; }

 private:
  using Trampoline = void (*)(void* fn, int part, int parts);
  void run_task(void* fn, Trampoline call);
  void worker(int part);

  int size_;
  std::vector<std::thread> threads_;
  void* task_ = nullptr;
  Trampoline call_ = nullptr;
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<int> finished_{0};
  std::atomic<int> arrived_{0};
  std::atomic<std::uint64_t> barrier_generation_{0};
  std::atomic<bool> stop_{false};
  std::mutex user_mutex_;
};

// The process's team of `size` threads, made on first use and shared by every compiled cell:
// one worker per core whatever the number of cells (a training pair, layers, directions), where a
// team per cell left several spinning workers fighting over two cores (a W5 training step went
// from 66 ms to seconds on a busy VM).
std::shared_ptr<Team> shared_team(int size);

// The default team size: CELLFUSE_NUM_THREADS if set, else the number of cores.
int default_thread_count();

}  // namespace cellfuse::cpu
