#pragma once
// Every knob of a compilation, with one default each: what compile() (pipeline.h) is asked to
// build. The runtime reads the same object for what it decides at run time (threads), so a knob
// lives in one place.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "compiler/ir/types.h"

namespace cellfuse {

enum class Target : std::uint8_t {
  Cpu,   // LLVM IR for the host CPU, run by runtime/cpu
  Cuda,  // CUDA C for NVRTC, run by runtime/cuda
};
std::string_view target_name(Target target);  // "cpu", "cuda"
std::optional<Target> parse_target(std::string_view text);

// How the caller's tensors are stored (the CUDA backend only): 16-bit storage keeps inputs,
// states, parameters, outputs and gradients as bf16 or f16 while the cell computes in f32; the
// conversions happen at the edges of a run (runtime/cuda/storage.h has the rounding rule).
enum class Storage : std::uint8_t {
  Native,  // the cell's own dtype (f32 or f64)
  BF16,    // bfloat16: f32's range, 8 significant bits
  F16,     // IEEE binary16: 11 significant bits, finite up to 65504
};
std::string_view storage_name(Storage storage);  // "native", "bf16", "f16"
std::optional<Storage> parse_storage(std::string_view text);

// Whether small matrix products of the loop stage run inside its kernel (a MatVec statement)
// instead of as a BLAS/cuBLAS call plus a kernel launch.
enum class FuseProducts : std::uint8_t {
  Auto,    // CPU: whenever the batch allows; CUDA: also only while every fused weight is small
  Always,  // whenever the batch allows (<= fusion_limit)
  Never,   // every product through BLAS / cuBLAS
};

struct TargetOptions {
  Target target = Target::Cpu;
  // The element type the caller expects; unset takes the cell's own (a cell is typed when it is
  // built). Set and different from the cell's, compile() refuses with an Error naming both.
  std::optional<DType> dtype;
  std::int64_t batch = 1;             // rows of every per-step tensor (>= 1)
  Storage storage = Storage::Native;  // 16-bit storage: CUDA and f32 cells only
  // Largest batch whose loop-stage matrix products may be fused into the loop kernel: beyond a
  // few rows a GEMM (weights reused across rows in registers) beats a matrix-vector loop.
  std::int64_t fusion_limit = 8;
  FuseProducts fuse = FuseProducts::Auto;
  // Largest batch for which the CUDA persistent loop kernel is generated (cuda_persistent.h).
  std::int64_t persistent_limit = 8;
  int cuda_block_threads = 256;  // threads a block of a generated CUDA kernel (32..1024)
  std::int64_t cuda_shared_limit = 46 * 1024;  // bytes of static shared memory a CUDA kernel may use
  // CPU threads for the runtime (0: $CELLFUSE_NUM_THREADS, else every core). Results are the
  // same bit for bit whatever the count; the compiled code does not depend on it.
  int threads = 0;
  // Compile for training: autodiff, then the forward with its tape and the backward step.
  bool training = false;
  // Kernels for a runner that picks the rows of every call at run time (the CPU target only):
  // no kernel is specialized to `batch` (rows_hint, the panels of fused products), so one
  // program serves a prime of T*B rows and a generation step of B; no product is fused into a
  // kernel (as fuse = Never), so the runner does every matrix product itself (runtime/generate
  // runs them on quantized weights).
  bool batch_agnostic = false;
  // Keep each stage's result as text in the log (cellfuse print --stages, golden tests). Off, the
  // log still has every stage's name and wall time.
  bool stage_text = false;
};

}  // namespace cellfuse
