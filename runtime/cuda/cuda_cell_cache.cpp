// The in-memory cache of compiled CUDA cells (compile_cuda), the compile() options of a CudaCell,
// and the device-independent compilation (build_cuda_binary).
#include "runtime/cuda/cuda_cell_impl.h"

#include <map>
#include <memory>
#include <tuple>

#include "runtime/cuda/kernel_cache.h"

namespace cellfuse {
namespace {

std::atomic<std::size_t> g_compile_count{0};

}  // namespace

TargetOptions cuda_target(std::int64_t batch, const cuda_codegen::ProgramOptions& program, Storage storage) {
  TargetOptions options;
  options.target = Target::Cuda;
  options.batch = batch;
  options.storage = storage;
  options.fuse = program.fuse;
  options.cuda_block_threads = program.emit.max_threads;
  options.cuda_shared_limit = program.emit.shared_limit;
  return options;
}

CudaBinary build_cuda_binary(const Cell& cell, std::int64_t batch, const std::string& architecture,
                             const cuda_codegen::ProgramOptions& options, cuda::KernelCache* cache) {
  CudaBinary out;
  out.program = std::move(*compile(cell, cuda_target(batch, options, Storage::Native)).forward.cuda);
  out.architecture = architecture;
  cuda::KernelCache& c = cache ? *cache : cuda::default_kernel_cache();
  out.cubin = c.get_or_compile(out.program.source, architecture, {}, cell.name + ".cu");
  return out;
}

std::shared_ptr<const CudaCell> compile_cuda(const Cell& cell, std::int64_t batch, const CudaOptions& options) {
  static std::mutex mutex;
  // Never destroyed: a cached cell freed at exit would call the driver after it shut down.
  static auto& cache =
      *new std::map<std::tuple<std::uint64_t, std::int64_t, int, int, int, int, bool, int, int>, std::shared_ptr<const CudaCell>>();
  auto key = std::make_tuple(cell_hash(cell), batch, static_cast<int>(cell.graph.dtype()), options.device,
                             static_cast<int>(options.program.fuse), options.program.emit.max_threads, options.graphs,
                             static_cast<int>(cuda_run::strategy_from_environment(options.loop)), static_cast<int>(options.storage));
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  auto compiled = std::make_shared<const CudaCell>(cell, batch, options);
  cache[key] = compiled;
  return compiled;
}

std::size_t cuda_compile_count() { return g_compile_count.load(); }

void cuda_run::count_cuda_compile() { ++g_compile_count; }

}  // namespace cellfuse
