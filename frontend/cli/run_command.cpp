// `cellfuse run`: a cell over a random sequence on one target, printing checksums comparable
// across targets (the same seed gives the same arguments everywhere).
#include <chrono>
#include <cstdio>

#include "compiler/ir/error.h"
#include "compiler/pipeline.h"
#include "frontend/cli/cli.h"
#include "runtime/backend.h"
#include "runtime/random_args.h"
#if CELLFUSE_HAVE_CUDA
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

double ms_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

// What the compile cost and where the program runs (nothing for the interpreter).
void print_compile_info(const CompileInfo& info, const char* cached) {
  if (!info.device.empty()) std::printf("device: %s\n", info.device.c_str());
  if (info.ms) std::printf("compile: %.3f ms%s\n", *info.ms, info.from_disk_cache ? cached : "");
}

void print_header(const Cell& cell, std::int64_t steps, const TargetOptions& o, std::uint64_t seed, const std::string& target,
                  const char* what) {
  std::printf("cell: %s %s, T=%lld, B=%lld, seed=%llu, target=%s%s\n", cell.name.c_str(),
              std::string(dtype_name(cell.graph.dtype())).c_str(), static_cast<long long>(steps),
              static_cast<long long>(o.batch), static_cast<unsigned long long>(seed), target.c_str(), what);
  if (o.storage != Storage::Native) std::printf("storage: %s (f32 math)\n", std::string(storage_name(o.storage)).c_str());
}

template <class T>
int run_typed(const Cell& cell, std::int64_t steps, const TargetOptions& o, std::uint64_t seed, const std::string& target) {
  SequenceArgs<T> args = random_sequence_args<T>(cell, steps, o.batch, seed);
  print_header(cell, steps, o, seed, target, "");
  auto program = backend(target).compile(cell, o);
  print_compile_info(program->info(), " (cubin from the disk cache)");
  const auto start = std::chrono::steady_clock::now();
  SequenceResult<T> result = program->run(args);
  const double ms = ms_since(start);
  std::printf("checksum: %.10g\n", checksum(result));
  std::printf("time: %.3f ms\n", ms);
  return 0;
}

// Forward and backward over the sequence: the loss gradients of every output and final state
// come from the same seed, so the gradient checksums of every target compare.
template <class T>
int run_backward_typed(const Cell& cell, std::int64_t steps, const TargetOptions& o, std::uint64_t seed,
                       const std::string& target) {
  SequenceArgs<T> args = random_sequence_args<T>(cell, steps, o.batch, seed);
  LossGradients<T> seeds = random_loss_gradients<T>(cell, steps, o.batch, seed);
  print_header(cell, steps, o, seed, target, ", forward+backward");
  auto program = backend(target).compile_training(cell, o);
  print_compile_info(program->info(), " (cubins from the disk cache)");
  const auto start = std::chrono::steady_clock::now();
  BpttResult<T> result = program->run(args, seeds);
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
  const std::int64_t steps = int_option(o, "seq", std::nullopt);
  TargetOptions options;
  options.batch = int_option(o, "batch", std::nullopt);
  auto seed = static_cast<std::uint64_t>(int_option(o, "seed", 0));
  // The reference interpreter runs the optimized cell, as the compiled backends do.
  Cell cell = optimize_stage(load(o));
  options.storage = storage_option(o, target);
  const bool f64 = cell.graph.dtype() == DType::f64;
  if (o.backward)
    return f64 ? run_backward_typed<double>(cell, steps, options, seed, target)
               : run_backward_typed<float>(cell, steps, options, seed, target);
  return f64 ? run_typed<double>(cell, steps, options, seed, target) : run_typed<float>(cell, steps, options, seed, target);
}

}  // namespace cellfuse::cli
