#pragma once
// A small team of threads for the CPU runner: the caller plus `size() - 1` workers that run the
// same function on their part of the work. Workers spin briefly between runs (a time step is a
// few microseconds) and then sleep, so an idle team costs nothing.
//
// On a machine with more runnable threads than cores (a shared VM, a CI container, a web server's
// other processes) a worker is often not running when a run starts, and every barrier then waits
// for the scheduler to give it a time slice: a 100-step LSTM went from 20 ms to 380 ms on two
// busy cores. So the team watches itself: when the caller spends more than half of a run (and
// more than a wake-up's worth of time) waiting for the others (then one thread would have been at
// least as fast), the next runs use the caller
// alone, and after a back-off (growing while the machine stays busy) one run tries the whole team
// again. Results never depend on it: every user of run() splits its work so that any number of
// parts gives the same bits. CELLFUSE_ADAPTIVE_THREADS=0 turns it off (always the whole team).
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

  // How many members the next run() uses: size(), or 1 while the team has found the machine
  // oversubscribed (see above).
  int active() const { return solo_left_ > 0 ? 1 : size_; }

  // Whether a run of `run_ns` in which the caller waited `wait_ns` for the others shows a busy
  // machine (the rule the team goes solo by).
  static bool busy(std::int64_t run_ns, std::int64_t wait_ns);

  // Whether the team may fall back to the caller alone (default: CELLFUSE_ADAPTIVE_THREADS, on).
  void set_adaptive(bool on) { adaptive_ = on; }

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
  // Learns from one run of the whole team: `run_ns` long, of which the caller waited `wait_ns`.
  void judge(std::int64_t run_ns, std::int64_t wait_ns);

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
  // Members of the current run (size_ or 1) and the adaptive state, all touched by the caller
  // only (runs never overlap: user_mutex_). `parts_` is read by workers after the generation
  // bump that publishes it.
  int parts_ = 1;
  bool adaptive_ = true;
  std::int64_t caller_wait_ns_ = 0;  // time the caller spent in barrier() during this run
  int solo_left_ = 0;                // runs left on the caller alone, the last one being the probe
  int backoff_ = 0;                  // length of the next solo stretch after a failed probe
};

// The process's team of `size` threads, made on first use and shared by every compiled cell:
// one worker per core whatever the number of cells (a training pair, layers, directions), where a
// team per cell left several spinning workers fighting over two cores (a W5 training step went
// from 66 ms to seconds on a busy VM).
std::shared_ptr<Team> shared_team(int size);

// The default team size: CELLFUSE_NUM_THREADS if set, else the number of cores.
int default_thread_count();

}  // namespace cellfuse::cpu
