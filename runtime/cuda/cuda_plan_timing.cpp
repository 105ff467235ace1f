// Auto's choice of loop plan (cuda_cell.h: LoopStrategy::Auto): on the first run of a length
// class, every plan that fits runs the caller's sequence (inputs, states and params as given;
// outputs and final states into scratch memory, so that nothing the caller sees is touched
// twice and aliased arguments stay correct) once to warm up and kTimedRuns times timed; the
// fastest median wins. The winner is kept per length class in the object and on disk
// (plan_record.h, keyed by device name, the CUDA source's hash, batch and length class), so a
// second process on the same device reads it instead of timing again.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "compiler/ir/error.h"
#include "runtime/cuda/cuda_cell_impl.h"
#include "runtime/cuda/kernel_cache.h"
#include "runtime/cuda/plan_record.h"

namespace cellfuse {
namespace {

constexpr int kTimedRuns = 3;

// Lengths up to 2^c share a class: a plan's advantage changes slowly with the length.
int length_class(std::int64_t steps) {
  int c = 0;
  while ((std::int64_t{1} << c) < steps && c < 62) ++c;
  return c;
}

}  // namespace

double CudaCell::Impl::time_active(const DeviceSequenceArgs& a, CUstream stream) {
  const cuda::Driver& d = cuda::driver();
  CUgraphExec exec = nullptr;
  if (active.kind == LoopStrategy::Graph && graphs) {  // what runs would replay
    cuda::check(d.stream_begin_capture(stream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL), "cuStreamBeginCapture");
    CUgraph g = nullptr;
    try {
      enqueue(a, stream);
    } catch (...) {
      (void)d.stream_end_capture(stream, &g);
      if (g) (void)d.graph_destroy(g);
      throw;
    }
    cuda::check(d.stream_end_capture(stream, &g), "cuStreamEndCapture");
    const CUresult r = d.graph_instantiate(&exec, g, 0);
    (void)d.graph_destroy(g);
    cuda::check(r, "cuGraphInstantiateWithFlags");
  }
  auto once = [&] {
    if (exec) cuda::check(d.graph_launch(exec, stream), "cuGraphLaunch");
    else enqueue(a, stream);
    cuda::check(d.stream_synchronize(stream), "cuStreamSynchronize");
  };
  std::vector<double> ms;
  try {
    once();  // warm: caches, clocks, lazy module loading
    for (int r = 0; r < kTimedRuns; ++r) {
      const auto start = std::chrono::steady_clock::now();
      once();
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
    }
  } catch (...) {
    if (exec) (void)d.graph_exec_destroy(exec);
    throw;
  }
  if (exec) (void)d.graph_exec_destroy(exec);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

void CudaCell::Impl::plan_for(const DeviceSequenceArgs& a, CUstream stream) {
  const int cls = length_class(a.steps);
  if (auto it = timed.find(cls); it != timed.end()) {
    active = plans[it->second];
    return;
  }
  const std::string where = "; lengths " + std::to_string(cls ? (std::int64_t{1} << (cls - 1)) + 1 : 1) + ".." +
                            std::to_string(std::int64_t{1} << cls) + ": ";
  const cuda::CacheKey source = cuda::cache_key(program.source, "", architecture, {});
  const std::string key = "device=" + dev->name + " source=" + source.hex() + " batch=" + std::to_string(batch) +
                          " lengths<=2^" + std::to_string(cls) + " plans=" + candidate_names;
  cuda::KernelCache& cache = cuda::default_kernel_cache();
  if (cache.enabled()) {
    if (auto name = cuda::load_plan_record(cache.directory(), key)) {
      for (std::size_t i : candidates)
        if (*name == loop_strategy_name(plans[i].kind)) {
          timed[cls] = i;
          active = plans[i];
          plan_reasons += where + *name + " (timed by an earlier process: " + cuda::plan_record_path(cache.directory(), key).string() + ")";
          return;
        }
    }
  }
  // Scratch results: the caller's outputs and final states are written once, by the real run.
  const Sizes z = sizes(a.steps);
  std::vector<cuda::DeviceMemory> scratch;
  DeviceSequenceArgs b = a;
  for (std::size_t o = 0; o < b.outputs.size(); ++o) {
    scratch.emplace_back(static_cast<std::size_t>(std::max<std::int64_t>(z.outputs[o], 1)) * shared.elem);
    b.outputs[o] = scratch.back().get();
  }
  for (std::size_t s = 0; s < b.final_states.size(); ++s) {
    scratch.emplace_back(static_cast<std::size_t>(std::max<std::int64_t>(z.states[s], 1)) * shared.elem);
    b.final_states[s] = scratch.back().get();
  }
  // The timed runs are not the caller's: while a profiler is on they are one compile-side event
  // ("timing the loop plans") rather than runs of the report with host calls and no device times
  // (the graph plan's would be captured launches, which never ran as recorded).
  profile::Recorder* rec = profile::active();
  const std::int64_t timing_begin = profile::Recorder::now_ns();
  std::vector<double> ms;
  for (std::size_t i : candidates) {
    const cuda_run::LoopPlan& plan = plans[i];
    active = plan;
    try {
      profile::PauseRecording paused;
      ms.push_back(time_active(b, stream));
    } catch (const Error& e) {
      throw Error(std::string("CUDA backend: timing the loop plans on the first run of length ") + std::to_string(a.steps) +
                  " failed at the " + loop_strategy_name(plan.kind) +
                  " plan (the timing waits for the GPU, so that run cannot be captured into a CUDA graph: run once "
                  "before capturing, or choose the plan with CELLFUSE_CUDA_LOOP, or CELLFUSE_CUDA_PLAN_TIMING=0): " +
                  e.what());
    }
  }
  if (rec) rec->compile_event("timing the loop plans (" + candidate_names + ")", cell().name, timing_begin, profile::Recorder::now_ns());
  const std::size_t best = candidates[static_cast<std::size_t>(std::min_element(ms.begin(), ms.end()) - ms.begin())];
  timed[cls] = best;
  active = plans[best];
  std::string measured;
  for (std::size_t c = 0; c < candidates.size(); ++c) {
    char text[64];
    std::snprintf(text, sizeof text, "%s%s %.3f ms", c ? ", " : "", loop_strategy_name(plans[candidates[c]].kind), ms[c]);
    measured += text;
  }
  plan_reasons += where + loop_strategy_name(active.kind) + " (timed at T=" + std::to_string(a.steps) + ": " + measured + "): " +
                  active.description;
  if (cache.enabled()) (void)cuda::store_plan_record(cache.directory(), key, loop_strategy_name(active.kind));
}

}  // namespace cellfuse
