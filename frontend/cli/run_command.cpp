// `cellfuse run`: a cell over a random sequence on one target, printing checksums comparable
// across targets (the same seed gives the same arguments everywhere).
#include <chrono>
#include <cstdio>

#include "compiler/ir/error.h"
#include "compiler/pipeline.h"
#include "frontend/cli/cli.h"
#include "runtime/random_args.h"
#include "runtime/reference/bptt.h"
#include "runtime/reference/interpreter.h"
#if CELLFUSE_HAVE_LLVM
#include "runtime/cpu/cpu_bptt.h"
#include "runtime/cpu/cpu_cell.h"
#endif
#if CELLFUSE_HAVE_CUDA
#include "runtime/cuda/cuda_bptt.h"
#include "runtime/cuda/cuda_cell.h"
#include "runtime/cuda/driver.h"
#endif

namespace cellfuse::cli {
namespace {

template <class T>
double checksum(const SequenceResult<T>& r) {
  double sum = 0;
  for (const auto& t : r.outputs)
    for (T v : t.data) sum += static_cast<double>(v);
  for (const auto& t : r.final_states)
    for (T v : t.data) sum += static_cast<double>(v);
  return sum;
}

#if CELLFUSE_HAVE_CUDA
CudaOptions cuda_options(Storage storage) {
  CudaOptions options;
  options.storage = storage;
  if (storage != Storage::Native) std::printf("storage: %s (f32 math)\n", std::string(storage_name(storage)).c_str());
  return options;
}
#endif

double ms_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

template <class T>
int run_typed(const Cell& cell, std::int64_t steps, std::int64_t batch, std::uint64_t seed, const std::string& target,
              Storage storage) {
  (void)storage;  // used by the CUDA target only
  SequenceArgs<T> args = random_sequence_args<T>(cell, steps, batch, seed);
  std::printf("cell: %s %s, T=%lld, B=%lld, seed=%llu, target=%s\n", cell.name.c_str(),
              std::string(dtype_name(cell.graph.dtype())).c_str(), static_cast<long long>(steps),
              static_cast<long long>(batch), static_cast<unsigned long long>(seed), target.c_str());
  auto start = std::chrono::steady_clock::now();
  SequenceResult<T> result;
  if (target == "cpu") {
#if CELLFUSE_HAVE_LLVM
    auto compiled = compile_cpu(cell, batch);
    std::printf("compile: %.3f ms\n", compiled->compile_ms());
    start = std::chrono::steady_clock::now();
    result = compiled->run(args);
#endif
  } else if (target == "cuda") {
#if CELLFUSE_HAVE_CUDA
    auto compiled = compile_cuda(cell, batch, cuda_options(storage));
    std::printf("device: %s (%s)\n", compiled->device_name().c_str(), compiled->architecture().c_str());
    std::printf("compile: %.3f ms%s\n", compiled->compile_ms(), compiled->cubin_from_cache() ? " (cubin from the disk cache)" : "");
    start = std::chrono::steady_clock::now();
    result = compiled->run(args);
#endif
  } else {
    result = interpret_sequence(cell, args);
  }
  const double ms = ms_since(start);
  std::printf("checksum: %.10g\n", checksum(result));
  std::printf("time: %.3f ms\n", ms);
  return 0;
}

// Forward and backward over the sequence: the loss gradients of every output and final state
// come from the same seed, so the gradient checksums of every target compare.
template <class T>
int run_backward_typed(const Cell& cell, std::int64_t steps, std::int64_t batch, std::uint64_t seed,
                       const std::string& target, Storage storage) {
  (void)storage;  // used by the CUDA target only
  SequenceArgs<T> args = random_sequence_args<T>(cell, steps, batch, seed);
  LossGradients<T> seeds = random_loss_gradients<T>(cell, steps, batch, seed);
  std::printf("cell: %s %s, T=%lld, B=%lld, seed=%llu, target=%s, forward+backward\n", cell.name.c_str(),
              std::string(dtype_name(cell.graph.dtype())).c_str(), static_cast<long long>(steps),
              static_cast<long long>(batch), static_cast<unsigned long long>(seed), target.c_str());
  auto start = std::chrono::steady_clock::now();
  BpttResult<T> result;
  if (target == "cpu") {
#if CELLFUSE_HAVE_LLVM
    auto compiled = compile_cpu_bptt(cell, batch);
    std::printf("compile: %.3f ms\n", compiled->compile_ms());
    start = std::chrono::steady_clock::now();
    result = compiled->run(args, seeds);
#endif
  } else if (target == "cuda") {
#if CELLFUSE_HAVE_CUDA
    auto compiled = compile_cuda_bptt(cell, batch, cuda_options(storage));
    std::printf("device: %s (%s)\n", compiled->forward_cell().device_name().c_str(),
                compiled->forward_cell().architecture().c_str());
    std::printf("compile: %.3f ms%s\n", compiled->compile_ms(),
                compiled->cubins_from_cache() ? " (cubins from the disk cache)" : "");
    start = std::chrono::steady_clock::now();
    result = compiled->run(args, seeds);
#endif
  } else {
    result = reference_bptt(differentiate_stage(cell), args, seeds);
  }
  const double ms = ms_since(start);
  std::printf("checksum: %.10g\n", checksum(result.forward));
  std::printf("grad checksum: %.10g\n", gradient_checksum(result.grads));
  std::printf("time: %.3f ms\n", ms);
  return 0;
}

// The fastest target this build has on this machine: cuda with a working GPU, else cpu (the
// LLVM backend), else the reference interpreter.
std::string default_target() {
#if CELLFUSE_HAVE_CUDA
  if (cuda::cuda_available()) return "cuda";
#endif
#if CELLFUSE_HAVE_LLVM
  return "cpu";
#else
  return "ref";
#endif
}

}  // namespace

int run_command(const Options& o) {
  std::string target = o.values.count("target") ? o.values.at("target") : default_target();
#if !CELLFUSE_HAVE_LLVM
  if (target == "cpu") throw Error("--target cpu: this build has no CPU backend (configured without LLVM); use --target ref");
#endif
#if !CELLFUSE_HAVE_CUDA
  if (target == "cuda")
    throw Error("--target cuda: this build has no CUDA backend (configured without the CUDA toolkit); use --target ref");
#endif
  if (target != "ref" && target != "cpu" && target != "cuda") throw Error("--target: unknown target '" + target + "' (ref, cpu, cuda)");
  std::int64_t steps = int_option(o, "seq", std::nullopt);
  std::int64_t batch = int_option(o, "batch", std::nullopt);
  auto seed = static_cast<std::uint64_t>(int_option(o, "seed", 0));
  // The reference interpreter runs the optimized cell, as the compiled backends do.
  Cell cell = optimize_stage(load(o));
  const Storage storage = storage_option(o, target);
  if (o.backward) {
    if (cell.graph.dtype() == DType::f64) return run_backward_typed<double>(cell, steps, batch, seed, target, storage);
    return run_backward_typed<float>(cell, steps, batch, seed, target, storage);
  }
  if (cell.graph.dtype() == DType::f64) return run_typed<double>(cell, steps, batch, seed, target, storage);
  return run_typed<float>(cell, steps, batch, seed, target, storage);
}

}  // namespace cellfuse::cli
