#pragma once
// CudaCell's state, shared by the files that each do one of its jobs:
//   cuda_cell.cpp          loading a compiled program (NVRTC through the disk cache, module,
//                          cuBLAS), the public API, the host-memory run;
//   cuda_sequence_run.cpp  the sequence runner: workspaces per length, pre/loop/post stages
//                          on a stream, the argument checks, stream ordering;
//   cuda_graphs.cpp        capturing a sequence as a CUDA graph and replaying it (graph cache);
//   cuda_loop_strategy.cpp the loop plans that fit (graph, persistent, resident) and the rule;
//   cuda_plan_timing.cpp   Auto: the plans timed on the first run of a length, the winner kept;
//   cuda_storage_edges.cpp 16-bit storage: widening arguments, narrowing results;
//   cuda_cell_cache.cpp    the in-memory cache of compiled cells (compile_cuda).
// Internal to runtime/cuda: nothing outside it includes this header.
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "runtime/cuda/cuda_cell.h"
#include "runtime/cuda/driver.h"
#include "runtime/cuda/gpu_stage_runner.h"

namespace cellfuse {

namespace cuda_run {

// What one sequence length needs on the device, kept between runs of that length.
struct Workspace {
  std::int64_t steps = -1;
  std::optional<GpuStageRunner> stages[3];
  std::vector<cuda::DeviceMemory> exports[3];
  std::vector<cuda::DeviceMemory> current, next;
};

// The host API's device copies of its arguments and results, kept between runs of a length;
// with 16-bit storage, also the f32 buffers a run widens its arguments into and computes its
// results in.
struct HostStaging {
  std::int64_t steps = -1;
  std::vector<cuda::DeviceMemory> inputs, states, params, outputs, final_states;
};

// A graph is valid for the exact launches it captured: the length and every pointer.
struct GraphKey {
  std::int64_t steps = -1;
  bool reverse = false;
  std::vector<DevicePointer> pointers;
  friend bool operator==(const GraphKey&, const GraphKey&) = default;
};

// CUDA_LOOP from the environment when `asked` is Auto (cuda_loop_strategy.cpp).
LoopStrategy strategy_from_environment(LoopStrategy asked);

// False when CELLFUSE_CUDA_PLAN_TIMING=0: Auto follows the fixed rule instead of timing.
bool plan_timing_enabled();

// One way to run the loop stage, ready to launch: Graph (the stage's GEMMs and kernels once a
// step), or one kernel for all steps (Persistent on a grid, Resident on one block).
struct LoopPlan {
  LoopStrategy kind = LoopStrategy::Graph;
  CUfunction fn = nullptr;
  unsigned grid = 0, shared = 0;  // blocks, dynamic shared bytes a block
  const cuda_codegen::PersistentLoop* kernel = nullptr;
  CUdeviceptr workspace = 0, barrier = 0;  // the kernel's cf_ws and cf_bar (memory of the Impl)
  std::string description;        // blocks, threads, shared memory, barriers
};

// Counts a CudaCell built (cuda_cell_cache.cpp: cuda_compile_count()).
void count_cuda_compile();

}  // namespace cuda_run

using cuda_run::GpuStage;
using cuda_run::GraphKey;
using cuda_run::HostStaging;
using cuda_run::Shared;
using cuda_run::Workspace;

struct CudaCell::Impl {
  cuda_codegen::CudaProgram program;
  GpuStage stages[3];
  const cuda::Device* dev = nullptr;
  std::string architecture;
  CUmodule module = nullptr;
  Shared shared;
  cuda::DeviceMemory blas_workspace;
  CUstream own_stream = nullptr;  // non-blocking: it can capture graphs while others use stream 0
  CUevent done = nullptr;         // recorded after every run, on the run's stream
  CUevent entry = nullptr;        // the legacy stream's work before a run given no stream
  CUstream last_stream = nullptr;
  bool has_run = false;
  std::int64_t batch = 0;
  double compile_ms = 0;
  bool from_cache = false;
  bool graphs = true;
  // The loop plans that fit (Graph first), the one runs use now, and why.
  std::vector<cuda_run::LoopPlan> plans;
  cuda_run::LoopPlan active;
  cuda::DeviceMemory persistent_ws, persistent_bar;  // the grid kernel's workspace and barrier
  cuda::DeviceMemory resident_ws;                    // the block kernel's spilled temporaries
  std::string loop_reason;
  // Auto with timing: a plan is chosen on the first run of each length class (plan_class) and
  // kept here; until then `active` is Graph.
  bool timing = false;
  std::vector<std::size_t> candidates;  // the plans Auto times (CELLFUSE_CUDA_PLANS), indices into plans
  std::string candidate_names;          // their names, comma-separated
  std::map<int, std::size_t> timed;     // length class -> index into plans
  std::string plan_reasons;          // what timing measured, per length class
  std::mutex mutex;
  Workspace ws;
  HostStaging staging;
  // 16-bit storage: the conversion kernels and the f32 side of the caller's tensors.
  Storage storage = Storage::Native;
  CUfunction widen[3] = {}, narrow[3] = {};  // indexed by Storage
  HostStaging wide;
  // Captured graphs, most recently used last. Several, because a framework's caching allocator
  // hands out a few recurring sets of buffers (a training loop alternates between them), and a
  // single graph keyed by pointers would then never be replayed.
  static constexpr std::size_t kMaxGraphs = 8;
  struct CachedGraph {
    GraphKey key;
    CUgraphExec exec = nullptr;
  };
  std::vector<CachedGraph> graphs_cached;
  std::vector<GraphKey> seen_once;  // keys run without a graph once; the second run captures
  std::size_t captures = 0;
  // The profiler (runtime/profile; cuda_profile.cpp): device times of a profiled run, and what
  // was registered with which recorder.
  cuda_run::DeviceTimer timer;
  std::uint64_t profiled = 0;
  // The loop kernel's call sites, per plan and length (its cost is the whole sequence's), for the
  // recorder of generation `persistent_sites_generation`.
  std::map<std::pair<LoopStrategy, std::int64_t>, int> persistent_sites;
  std::uint64_t persistent_sites_generation = 0;

  ~Impl();

  const Cell& cell() const;

  void drop_graph();

  void prepare_workspace(std::int64_t steps);

  // Enqueues a whole sequence on `stream` (the mirror of CpuCell::run_into).
  void enqueue(const DeviceSequenceArgs& a, CUstream stream);

  CUgraphExec capture(const DeviceSequenceArgs& a, CUstream stream, const GraphKey& key);

  // Which way the loop stage runs (after the module is loaded and own_stream made).
  void choose_loop_strategy(LoopStrategy asked);
  // The plan of `kind`, set up (shared memory attribute, grid, workspace); nullopt and `why`
  // when it does not fit this device or stage.
  std::optional<cuda_run::LoopPlan> set_up_plan(LoopStrategy kind, std::string& why);
  // Auto with timing: makes the plan of a's length class active, timing every plan on a's
  // inputs first when neither this object nor the plan record on disk knows it.
  void plan_for(const DeviceSequenceArgs& a, CUstream stream);
  // One timed run of the active plan on `a` (a graph for Graph): milliseconds, host clock.
  double time_active(const DeviceSequenceArgs& a, CUstream stream);

  // Elements of each argument of a sequence of `steps` steps, in DeviceSequenceArgs's order.
  struct Sizes {
    std::vector<std::int64_t> inputs, states, params, outputs;
  };
  Sizes sizes(std::int64_t steps) const;

  void convert(Storage format, bool to_f32, CUdeviceptr from, CUdeviceptr to, std::int64_t n, CUstream stream) const;

  // 16-bit storage: widens the arguments into f32 buffers, runs, rounds the results back. The
  // f32 buffers stay the same between runs of a length, so the inner run's graphs replay.
  void run_stored(const DeviceSequenceArgs& a, CUstream stream);

  void run_any(const DeviceSequenceArgs& a, CUstream stream);

  // With the mutex held and the context current.
  void run_locked(const DeviceSequenceArgs& a, CUstream stream);
  // run_locked while a profiler is on: kernel by kernel (no graph), each timed by CUDA events.
  void run_profiled(profile::Recorder& rec, const DeviceSequenceArgs& a, CUstream stream);
  // The launch of the loop kernel (persistent or resident) as the profiler's call site.
  int persistent_call_site(profile::Recorder& rec, std::int64_t steps);

  void check_device_args(const DeviceSequenceArgs& a) const;

  // The stream a run given `caller` works on. Given none (the legacy default stream), it runs on
  // the cell's own non-blocking stream, ordered after the legacy stream's earlier work here and
  // before its later work by finish().
  CUstream start(CudaStream caller);
  void finish(CudaStream caller);
};

}  // namespace cellfuse
