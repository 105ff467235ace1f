#pragma once
// The profiler: where a compiled cell's time goes, as a Chrome trace and an overhead report.
//
//   {
//     cellfuse::Profiler profiler;                 // on while it lives (off by default)
//     auto program = cellfuse::compile_cpu(cell, 8);   // compile phases, cache hit/miss
//     program->run(args);                          // warm-up
//     profiler.discard_runs();                     // keep the compile, drop the warm-up run
//     program->run(args);
//     profiler.write_trace("trace.json");          // Perfetto / chrome://tracing
//     std::cout << profiler.report().text();       // or .json()
//   }
//
// One engine behind every entry point: the C++ scope above, `cellfuse profile` on the command
// line (frontend/cli/profile_command.cpp) and `cellfuse.profile(...)` in Python
// (python/cellfuse/_profile.py, which adds the eager PyTorch column). The runners record through
// runtime/profile/recorder.h; this file turns the events into the report (report.cpp) and the
// trace (trace.cpp).
#include <memory>
#include <string>
#include <vector>

#include "runtime/profile/recorder.h"

namespace cellfuse {

// What the machine can do at best, measured once per machine and cached (ceilings.cpp).
struct MachineCeilings {
  std::string device;       // "cpu: <model> (N threads)" or "cuda: <name>"
  double gflops = 0;        // f32 matrix products, GFLOP/s
  double gbytes = 0;        // memory bandwidth (read + write), GB/s
  // Bandwidth of data that stays in the caches (CPU: the team copying 256 KB each, over and
  // over; GPU: as gbytes). A kernel whose operands fit (kCacheResidentBytes) is held to this one.
  double gbytes_cache = 0;
  std::string cache_file;   // where they are kept ("" when the cache is off)
  bool from_cache = false;
};

// Bytes per call up to which a kernel's operands count as cache-resident (measured against
// MachineCeilings::gbytes_cache rather than gbytes).
constexpr double kCacheResidentBytes = 2.0 * 1024 * 1024;

// The ceilings of `target` ("cpu" or "cuda") on this machine: read from the cache directory
// ($CELLFUSE_CACHE_DIR, else $XDG_CACHE_HOME/cellfuse, else ~/.cache/cellfuse), else measured
// (well under a second) and written there. CELLFUSE_CACHE=0 measures every time.
MachineCeilings machine_ceilings(const std::string& target);

// One pass (forward or backward) of the profiled runs, per time step.
struct PhaseReport {
  std::string phase;  // "forward" or "backward"
  std::int64_t steps = 0;  // time steps profiled (all runs)
  int runs = 0;            // sequence runs
  int ops = 0;             // ops of the program(s) after the graph passes
  int loop_kernels = 0, loop_gemms = 0;    // per step after fusion (the loop stage)
  int batch_kernels = 0, batch_gemms = 0;  // per sequence: the pre and post stages (all steps at once)
  double launches_per_step = 0;            // measured: every GEMM and kernel call / steps
  double host_us_per_step = 0;             // wall time of the runs / steps
  double device_us_per_step = 0;           // time in GEMMs and kernels (GPU: CUDA events) / steps
  double gemm_us_per_step = 0, pointwise_us_per_step = 0, overhead_us_per_step = 0;
  double flops_per_step = 0, bytes_per_step = 0;
  double gemm_flops_per_step = 0, pointwise_bytes_per_step = 0;
  double gemm_peak_fraction = 0;       // GEMM FLOP rate / the machine's
  // Pointwise kernels: the time their bytes take at the machine's bandwidth (the cache's for
  // calls whose operands fit in it) / the time they took.
  double pointwise_bw_fraction = 0;
};

// One GEMM or kernel: its calls and time over the profiled runs.
struct CallReport {
  std::string name, stage, kind, phase;
  std::int64_t calls = 0;
  double total_us = 0;
  double flops = 0, bytes = 0;  // per call
};

struct ProfileReport {
  std::string target;  // "cpu" or "cuda"
  std::vector<std::string> cells;
  std::vector<PhaseReport> phases;
  std::vector<CallReport> calls;  // by total time, longest first
  double compile_ms = 0;
  int cache_hits = 0, cache_misses = 0;
  std::vector<std::string> boundaries;  // fusion boundaries with their reasons
  MachineCeilings ceilings;
  std::string summary;  // "GEMMs 78% at 41% of peak; pointwise 15% at 20% of bandwidth; host 7%"

  std::string text() const;
  std::string json() const;
};

// Builds the report of what `data` recorded (with `ceilings` for the fractions).
ProfileReport build_report(const profile::Recorder::Data& data, const MachineCeilings& ceilings);
// The Chrome Trace Event JSON of what `data` recorded.
std::string trace_json(const profile::Recorder::Data& data);

class Profiler {
 public:
  // Turns profiling on for the whole process. One profiler at a time: a second one throws Error.
  Profiler();
  ~Profiler();
  Profiler(const Profiler&) = delete;
  Profiler& operator=(const Profiler&) = delete;

  // Turns profiling off (the destructor does too); what was recorded stays readable.
  void stop();
  bool on() const { return on_; }
  // Drops the sequence runs recorded so far (a warm-up), keeping compile and cache events.
  void discard_runs();

  profile::Recorder::Data data() const { return recorder_->data(); }
  // The report, with the ceilings of the target that ran (measured on first use).
  ProfileReport report() const;
  std::string trace_json() const;
  // Writes the trace; throws Error naming the file when it cannot.
  void write_trace(const std::string& path) const;

 private:
  std::unique_ptr<profile::Recorder> recorder_;
  bool on_ = false;
};

// Writes `text` to `path`, or throws Error naming the file.
void write_text_file(const std::string& path, const std::string& text);

}  // namespace cellfuse
