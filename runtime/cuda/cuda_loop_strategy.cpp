// How CudaCell runs its loop stage: the plans that fit (the graph path; one persistent
// cooperative kernel on a grid; one block-resident kernel), each set up once, and the fixed rule
// Auto follows when timing is off (cuda_plan_timing.cpp times them otherwise).
#include "runtime/cuda/cuda_cell_impl.h"

#include <algorithm>
#include <cstdlib>
#include <set>
#include <string>

#include "compiler/ir/error.h"

namespace cellfuse {
namespace {

// The rule Auto follows with CELLFUSE_CUDA_PLAN_TIMING=0: the persistent loop kernel at batch 1
// when the fused weights have at least kAutoPersistentMinWeight elements, else the graph path.
// Measured on an H200 (bench_gpu --sweep, forward ms at T=1000, graph vs persistent; gpu_persistent.md):
//   B=1: lstm:512 6.95 vs 6.45, lstm:1024 10.94 vs 9.59, gru:512 8.66 vs 6.11,
//        gru:1024 10.98 vs 8.95, elman:1024 5.67 vs 5.62 (weights >= 1M elements: persistent);
//        lstm:256 (W5) 5.43 vs 5.60 at its best grid, gru:256 5.30 vs 5.70, elman:256 4.34 vs
//        4.53, lstm:64 4.63 vs 6.19 (smaller weights: the grid barriers cost more than the
//        graph's launches);
//   B=4 and 8: the graph path wins everywhere (1.07x to 7.6x), the per-block products of the
//        persistent kernel are latency-bound for more than one row.
// The resident kernel is never chosen by this rule: only timing (or asking for it) picks it.
constexpr std::int64_t kAutoPersistentRows = 1;
constexpr std::int64_t kAutoPersistentMinWeight = 512 * 1024;

// Blocks of the persistent kernel's grid before the co-residency limit: one a multiprocessor.
// On W5 (lstm:256 B=1 T=1000, H200) 8 blocks took 13.7 ms, 16 7.3, 32 6.05, 66 5.72, 132 5.60:
// spreading the product wins over the cheaper barrier of a small grid.
// $CELLFUSE_CUDA_PERSISTENT_BLOCKS overrides (bench_gpu --sweep).
std::int64_t wanted_persistent_blocks(int multiprocessors) {
  if (const char* v = std::getenv("CELLFUSE_CUDA_PERSISTENT_BLOCKS"); v && std::atoi(v) > 0) return std::atoi(v);
  return std::max(multiprocessors, 1);
}

}  // namespace

bool cuda_run::plan_timing_enabled() {
  const char* v = std::getenv("CELLFUSE_CUDA_PLAN_TIMING");
  return !(v && std::string(v) == "0");
}

const char* loop_strategy_name(LoopStrategy strategy) {
  switch (strategy) {
    case LoopStrategy::Auto: return "auto";
    case LoopStrategy::Persistent: return "persistent";
    case LoopStrategy::Graph: return "graph";
    case LoopStrategy::Resident: return "resident";
  }
  return "?";
}

LoopStrategy cuda_run::strategy_from_environment(LoopStrategy asked) {
  if (asked != LoopStrategy::Auto) return asked;
  const char* v = std::getenv("CELLFUSE_CUDA_LOOP");
  if (!v || !*v) return LoopStrategy::Auto;
  for (LoopStrategy s : {LoopStrategy::Auto, LoopStrategy::Persistent, LoopStrategy::Graph, LoopStrategy::Resident})
    if (std::string(v) == loop_strategy_name(s)) return s;
  throw Error("CELLFUSE_CUDA_LOOP: '" + std::string(v) + "' is none of auto, persistent, graph, resident");
}

std::optional<cuda_run::LoopPlan> CudaCell::Impl::set_up_plan(LoopStrategy kind, std::string& why) {
  cuda_run::LoopPlan plan;
  plan.kind = kind;
  if (kind == LoopStrategy::Graph) {
    plan.description = "the stage's GEMMs and kernels once a step, as a CUDA graph";
    return plan;
  }
  const bool grid = kind == LoopStrategy::Persistent;
  const cuda_codegen::PersistentLoop& p = grid ? program.persistent : program.resident;
  const std::string what = grid ? "persistent kernel" : "resident kernel";
  if (!p.ok()) {
    why = "no " + what + ": " + p.reason;
    return std::nullopt;
  }
  const cuda::Driver& d = cuda::driver();
  int cooperative = 0, optin = 0;
  cuda::check(d.device_get_attribute(&cooperative, CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH, dev->device), "cuDeviceGetAttribute");
  cuda::check(d.device_get_attribute(&optin, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, dev->device),
              "cuDeviceGetAttribute");
  if (!cooperative) {
    why = "the device cannot launch cooperative kernels";
    return std::nullopt;
  }
  cuda::check(d.module_get_function(&plan.fn, module, p.name.c_str()), ("cuModuleGetFunction(" + p.name + ")").c_str());
  plan.kernel = &p;
  // The grid: as wanted (Resident: one block), but never more blocks than can be co-resident
  // with the shared memory each then needs (which grows as the grid shrinks).
  std::int64_t blocks = grid ? std::min<std::int64_t>(wanted_persistent_blocks(dev->multiprocessors), std::int64_t{1} << 16) : 1;
  for (;;) {
    const std::int64_t bytes = p.shared_bytes(blocks);
    if (bytes > optin) {
      why = "the " + what + " needs " + std::to_string(bytes) + " bytes of shared memory a block on " + std::to_string(blocks) +
            " block(s); the device allows " + std::to_string(optin);
      return std::nullopt;
    }
    cuda::check(d.func_set_attribute(plan.fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, static_cast<int>(bytes)),
                "cuFuncSetAttribute");
    int per_sm = 0;
    cuda::check(d.occupancy_max_active_blocks(&per_sm, plan.fn, p.threads, static_cast<std::size_t>(bytes)),
                "cuOccupancyMaxActiveBlocksPerMultiprocessor");
    const std::int64_t resident = static_cast<std::int64_t>(per_sm) * dev->multiprocessors;
    if (resident >= blocks) {
      plan.shared = static_cast<unsigned>(bytes);
      break;
    }
    if (resident == 0 || !grid) {
      why = "no block of the " + what + " fits a multiprocessor";
      return std::nullopt;
    }
    blocks = resident;
  }
  plan.grid = static_cast<unsigned>(blocks);
  if (grid) {
    persistent_ws = cuda::DeviceMemory(static_cast<std::size_t>(std::max<std::int64_t>(p.workspace_elements, 1)) * shared.elem);
    persistent_bar = cuda::DeviceMemory(2 * sizeof(unsigned));
    cuda::check(d.memset_d8_async(persistent_bar.get(), 0, 2 * sizeof(unsigned), own_stream), "cuMemsetD8Async");
    cuda::check(d.stream_synchronize(own_stream), "cuStreamSynchronize");
    plan.workspace = persistent_ws.get();
    plan.barrier = persistent_bar.get();
    plan.description = std::to_string(blocks) + " blocks of " + std::to_string(p.threads) + " threads, " +
                       std::to_string(plan.shared) + " bytes of shared memory each, " + std::to_string(p.barriers_per_step) +
                       " grid barrier(s) a step";
  } else {
    // Temporaries that did not fit beside the weights live in global memory (cf_ws); the barrier
    // argument is unused.
    resident_ws = cuda::DeviceMemory(static_cast<std::size_t>(std::max<std::int64_t>(p.workspace_elements, 1)) * shared.elem);
    plan.workspace = plan.barrier = resident_ws.get();
    plan.description = "one block of " + std::to_string(p.threads) + " threads, " + std::to_string(plan.shared) +
                       " bytes of shared memory (every weight resident" +
                       (p.workspace_elements ? ", " + std::to_string(p.workspace_elements) + " elements of temporaries in global memory" : "") +
                       "), " + std::to_string(p.barriers_per_step) + " block barrier(s) a step";
  }
  return plan;
}

void CudaCell::Impl::choose_loop_strategy(LoopStrategy asked) {
  std::string why_persistent, why_resident;
  plans.clear();
  plans.push_back(*set_up_plan(LoopStrategy::Graph, why_persistent));
  if (auto p = set_up_plan(LoopStrategy::Persistent, why_persistent)) plans.push_back(*p);
  if (auto r = set_up_plan(LoopStrategy::Resident, why_resident)) plans.push_back(*r);
  auto find = [&](LoopStrategy kind) -> const cuda_run::LoopPlan* {
    for (const auto& p : plans)
      if (p.kind == kind) return &p;
    return nullptr;
  };
  active = plans.front();
  if (asked == LoopStrategy::Graph) {
    loop_reason = "graph: asked for";
    return;
  }
  if (asked == LoopStrategy::Persistent || asked == LoopStrategy::Resident) {
    const cuda_run::LoopPlan* p = find(asked);
    if (!p) {
      loop_reason = "graph: " + (asked == LoopStrategy::Persistent ? why_persistent : why_resident);
      return;
    }
    active = *p;
    loop_reason = std::string(loop_strategy_name(asked)) + " (asked for): " + p->description;
    return;
  }
  // The plans Auto may pick: CELLFUSE_CUDA_PLANS (names, comma-separated), by default graph and
  // persistent: the resident kernel joins once tests/gpu/run_latency_bench.sh's correctness
  // phase has passed on a GPU (it is verified on the fake driver and by NVRTC only so far).
  const char* allowed = std::getenv("CELLFUSE_CUDA_PLANS");
  const std::string list = allowed && *allowed ? allowed : "graph,persistent";
  std::set<std::string> names;
  for (std::size_t start = 0; start <= list.size();) {
    std::size_t end = list.find(',', start);
    if (end == std::string::npos) end = list.size();
    const std::string name = list.substr(start, end - start);
    if (name != "graph" && name != "persistent" && name != "resident")
      throw Error("CELLFUSE_CUDA_PLANS: '" + name + "' in '" + list + "' is none of graph, persistent, resident");
    names.insert(name);
    start = end + 1;
  }
  candidates.clear();
  candidate_names.clear();
  for (std::size_t i = 0; i < plans.size(); ++i)
    if (names.count(loop_strategy_name(plans[i].kind))) {
      candidates.push_back(i);
      candidate_names += (candidate_names.empty() ? "" : ",") + std::string(loop_strategy_name(plans[i].kind));
    }
  if (cuda_run::plan_timing_enabled()) {
    if (candidates.size() > 1) {
      timing = true;
      loop_reason = "auto: timed on the first run of each length among " + candidate_names;
    } else if (candidates.size() == 1) {
      active = plans[candidates.front()];
      loop_reason = std::string(loop_strategy_name(active.kind)) + ": the only plan of CELLFUSE_CUDA_PLANS (" + list +
                    ") that fits: " + active.description;
    } else {
      loop_reason = "graph: no plan of CELLFUSE_CUDA_PLANS (" + list + ") fits (" + why_persistent + "; " + why_resident + ")";
    }
    return;
  }
  // The fixed rule, from measurements: see kAutoPersistentRows.
  const cuda_run::LoopPlan* p = find(LoopStrategy::Persistent);
  if (!p) {
    loop_reason = "graph: " + why_persistent;
  } else if (batch > kAutoPersistentRows) {
    loop_reason = "graph: batch " + std::to_string(batch) + " > " + std::to_string(kAutoPersistentRows) +
                  " (the persistent kernel was measured slower there)";
  } else if (program.persistent.weight_elements < kAutoPersistentMinWeight) {
    loop_reason = "graph: fused weights of " + std::to_string(program.persistent.weight_elements) + " elements < " +
                  std::to_string(kAutoPersistentMinWeight) + " (the persistent kernel was measured slower there)";
  } else {
    active = *p;
    loop_reason = "persistent: " + p->description;
  }
}

}  // namespace cellfuse
