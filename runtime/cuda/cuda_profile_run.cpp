// CudaCell's profiled run (runtime/profile): what run_locked does while a cellfuse::Profiler is
// on. The sequence is launched kernel by kernel on the stream, never from a graph, so that each
// launch has its host time and, from CUDA events around it, its device time; the run then waits
// for the stream to read the events. Nothing here runs while profiling is off.
#include "runtime/cuda/cuda_cell_impl.h"

namespace cellfuse {

void CudaCell::Impl::run_profiled(profile::Recorder& rec, const DeviceSequenceArgs& a, CUstream stream) {
  if (profiled != rec.generation()) {
    rec.add_program(profile::program_info(program.cell, {&program.stages[0].program, &program.stages[1].program,
                                                         &program.stages[2].program},
                                          rec.phase(), "cuda"));
    profiled = rec.generation();
  }
  shared.timer = &timer;
  timer.begin(stream);
  try {
    enqueue(a, stream);
  } catch (...) {
    shared.timer = nullptr;
    throw;
  }
  shared.timer = nullptr;
  timer.finish(rec, stream);
}

int CudaCell::Impl::persistent_call_site(profile::Recorder& rec, std::int64_t steps) {
  if (persistent_sites_generation != rec.generation()) {
    persistent_sites.clear();
    persistent_sites_generation = rec.generation();
  }
  const auto key = std::make_pair(active.kind, steps);
  if (auto it = persistent_sites.find(key); it != persistent_sites.end()) return it->second;
  // The whole loop in one launch (the persistent grid kernel or the resident block kernel): its
  // cost is the loop stage's per step, times the steps.
  profile::CallSite site{active.kernel->name,
                         program.plan.loop.cell->name + " (" + loop_strategy_name(active.kind) + ", all steps)",
                         profile::CallKind::Kernel, 0, 0};
  for (const auto& s : profile::stage_sites(*program.plan.loop.cell, program.stages[1].program.steps, batch, shared.elem)) {
    site.flops += s.flops * static_cast<double>(steps);
    site.bytes += s.bytes * static_cast<double>(steps);
  }
  const int id = rec.add_site(std::move(site));
  persistent_sites.emplace(key, id);
  return id;
}

}  // namespace cellfuse
