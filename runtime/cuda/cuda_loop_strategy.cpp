// How CudaCell runs its loop stage: one persistent cooperative kernel for all steps, or the
// stage's GEMMs and kernels once a step (captured as a graph); the rule, from measurements.
#include "runtime/cuda/cuda_cell_impl.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "compiler/ir/error.h"

namespace cellfuse {
namespace {

// The rule Auto follows (choose_loop_strategy): the persistent loop kernel at batch 1 when the
// fused weights have at least kAutoPersistentMinWeight elements, else the graph path. Measured on
// an H200 (bench_gpu --sweep, forward ms at T=1000, graph vs persistent; gpu_persistent.md):
//   B=1: lstm:512 6.95 vs 6.45, lstm:1024 10.94 vs 9.59, gru:512 8.66 vs 6.11,
//        gru:1024 10.98 vs 8.95, elman:1024 5.67 vs 5.62 (weights >= 1M elements: persistent);
//        lstm:256 (W5) 5.43 vs 5.60 at its best grid, gru:256 5.30 vs 5.70, elman:256 4.34 vs
//        4.53, lstm:64 4.63 vs 6.19 (smaller weights: the grid barriers cost more than the
//        graph's launches);
//   B=4 and 8: the graph path wins everywhere (1.07x to 7.6x), the per-block products of the
//        persistent kernel are latency-bound for more than one row.
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

LoopStrategy cuda_run::strategy_from_environment(LoopStrategy asked) {
  if (asked != LoopStrategy::Auto) return asked;
  const char* v = std::getenv("CELLFUSE_CUDA_LOOP");
  if (!v || !*v || std::string(v) == "auto") return LoopStrategy::Auto;
  if (std::string(v) == "persistent") return LoopStrategy::Persistent;
  if (std::string(v) == "graph") return LoopStrategy::Graph;
  throw Error("CELLFUSE_CUDA_LOOP: '" + std::string(v) + "' is none of auto, persistent, graph");
}

void CudaCell::Impl::choose_loop_strategy(LoopStrategy asked) {
  const cuda_codegen::PersistentLoop& p = program.persistent;
  if (asked == LoopStrategy::Graph) {
    loop_reason = "graph: asked for";
    return;
  }
  if (!p.ok()) {
    loop_reason = "graph: no persistent kernel: " + p.reason;
    return;
  }
  // The rule, from measurements: see kAutoPersistentRows.
  if (asked == LoopStrategy::Auto && batch > kAutoPersistentRows) {
    loop_reason = "graph: batch " + std::to_string(batch) + " > " + std::to_string(kAutoPersistentRows) +
                  " (the persistent kernel was measured slower there)";
    return;
  }
  if (asked == LoopStrategy::Auto && p.weight_elements < kAutoPersistentMinWeight) {
    loop_reason = "graph: fused weights of " + std::to_string(p.weight_elements) + " elements < " +
                  std::to_string(kAutoPersistentMinWeight) + " (the persistent kernel was measured slower there)";
    return;
  }
  const cuda::Driver& d = cuda::driver();
  int cooperative = 0, optin = 0;
  cuda::check(d.device_get_attribute(&cooperative, CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH, dev->device), "cuDeviceGetAttribute");
  cuda::check(d.device_get_attribute(&optin, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, dev->device),
              "cuDeviceGetAttribute");
  if (!cooperative) {
    loop_reason = "graph: the device cannot launch cooperative kernels";
    return;
  }
  CUfunction fn = nullptr;
  cuda::check(d.module_get_function(&fn, module, p.name.c_str()), ("cuModuleGetFunction(" + p.name + ")").c_str());
  // The grid: as wanted, but never more blocks than can be co-resident with the shared memory
  // each then needs (which grows as the grid shrinks).
  std::int64_t grid = std::min<std::int64_t>(wanted_persistent_blocks(dev->multiprocessors), std::int64_t{1} << 16);
  for (;;) {
    const std::int64_t bytes = p.shared_bytes(grid);
    if (bytes > optin) {
      loop_reason = "graph: the persistent kernel needs " + std::to_string(bytes) + " bytes of shared memory a block on " +
                    std::to_string(grid) + " blocks; the device allows " + std::to_string(optin);
      return;
    }
    cuda::check(d.func_set_attribute(fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, static_cast<int>(bytes)),
                "cuFuncSetAttribute");
    int per_sm = 0;
    cuda::check(d.occupancy_max_active_blocks(&per_sm, fn, p.threads, static_cast<std::size_t>(bytes)),
                "cuOccupancyMaxActiveBlocksPerMultiprocessor");
    const std::int64_t resident = static_cast<std::int64_t>(per_sm) * dev->multiprocessors;
    if (resident >= grid) {
      persistent_shared = static_cast<unsigned>(bytes);
      break;
    }
    if (resident == 0) {
      loop_reason = "graph: no block of the persistent kernel fits a multiprocessor";
      return;
    }
    grid = resident;
  }
  persistent_fn = fn;
  persistent_grid = static_cast<unsigned>(grid);
  persistent_ws = cuda::DeviceMemory(static_cast<std::size_t>(std::max<std::int64_t>(p.workspace_elements, 1)) * shared.elem);
  persistent_bar = cuda::DeviceMemory(2 * sizeof(unsigned));
  cuda::check(d.memset_d8_async(persistent_bar.get(), 0, 2 * sizeof(unsigned), own_stream), "cuMemsetD8Async");
  cuda::check(d.stream_synchronize(own_stream), "cuStreamSynchronize");
  loop_reason = std::string("persistent") + (asked == LoopStrategy::Auto ? "" : " (asked for)") + ": " +
                std::to_string(grid) + " blocks of " + std::to_string(p.threads) + " threads, " + std::to_string(persistent_shared) +
                " bytes of shared memory each, " + std::to_string(p.barriers_per_step) + " grid barrier(s) a step";
}

}  // namespace cellfuse
