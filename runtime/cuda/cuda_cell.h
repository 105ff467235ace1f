#pragma once
// A cell compiled for an NVIDIA GPU: hoisted into pre/loop/post stages, fused into kernels,
// emitted as CUDA C (compiler/codegen/cuda), compiled by NVRTC for the device's architecture
// (cubins cached on disk, kernel_cache.h) and run over whole sequences; the mirror of CpuCell.
//
//   auto compiled = cellfuse::compile_cuda(cell, /*batch=*/8);  // cached by graph, batch, dtype
//   auto result = compiled->run(args);                           // host tensors in and out
//   compiled->run_device(device_args, stream);                   // device pointers, asynchronous
//
// A sequence runs as: the pre stage over all T*B rows (e.g. x W_ih^T for every step as one
// GEMM), the loop stage once per step, the post stage over all T*B rows. GEMMs run on cuBLAS (f32
// with the default math mode: no TF32), kernels are launched through the driver API. With
// `graphs` on, a sequence's launches are captured once as a CUDA graph per shape (steps and
// device pointers) and replayed: the first run of a shape launches directly, the second captures.
//
// This header includes no CUDA header: streams are `CUstream_st*` (a CUstream / cudaStream_t)
// and device pointers are `unsigned long long` (a CUdeviceptr).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "compiler/ir/graph.h"
#include "compiler/pipeline.h"
#include "runtime/cuda/storage.h"
#include "runtime/reference/interpreter.h"
#include "runtime/sequence_buffers.h"

struct CUstream_st;

namespace cellfuse {

namespace cuda {
class KernelCache;
}

using CudaStream = CUstream_st*;
using DevicePointer = unsigned long long;

// How the loop stage runs.
enum class LoopStrategy : std::uint8_t {
  Auto,        // the fastest of the others that fit, timed on the first run of a shape (below)
  Persistent,  // one cooperative kernel for all steps (cuda_persistent.h), where the stage fits
  Graph,       // its GEMMs and kernels once per step, captured as a CUDA graph
  Resident,    // one block runs all steps, the weights in its shared memory (LoopScope::Block)
};

// The name of a strategy as CELLFUSE_CUDA_LOOP spells it: auto, persistent, graph, resident.
const char* loop_strategy_name(LoopStrategy strategy);

struct CudaOptions {
  int device = 0;
  cuda_codegen::ProgramOptions program;  // fusion of small products, threads a block
  bool graphs = true;                    // CELLFUSE_CUDA_GRAPHS=0 in the environment turns them off
  // Auto reads $CELLFUSE_CUDA_LOOP (auto, persistent, graph or resident) first. Persistent or
  // Resident where the stage does not fit (loop_strategy_reason() says why) runs the graph path.
  // Auto times the strategies that fit among $CELLFUSE_CUDA_PLANS (default graph,persistent;
  // add resident) on the first run of each length class (outputs written to scratch memory, so
  // the run itself is unaffected; that first run waits for the timing) and keeps the fastest,
  // also on disk (plan_record.h) for the next process on the same device;
  // CELLFUSE_CUDA_PLAN_TIMING=0 replaces the timing by a fixed rule (choose_loop_strategy).
  LoopStrategy loop = LoopStrategy::Auto;
  // BF16 or F16 (f32 cells only): the caller's device tensors hold 16-bit elements. The cell
  // widens inputs, states and params into f32 buffers of its own, computes in f32, and rounds
  // outputs and final states to the 16-bit format as it writes them back (storage.h's rule).
  Storage storage = Storage::Native;
};

// A sequence in device memory, laid out like SequenceArgs / SequenceResult (row-major, dense);
// `reverse` runs the loop stage from step T-1 down to 0 (the backward step of BPTT).
using DeviceSequenceArgs = SequenceBuffers<DevicePointer, DevicePointer>;

// The compile() options of a CudaCell: the CUDA target, `batch`, `storage` and the program's knobs.
TargetOptions cuda_target(std::int64_t batch, const cuda_codegen::ProgramOptions& program, Storage storage);

// The device-independent part of a compilation: the program and its cubin for `architecture`
// (through `cache`; the default cache when null). What CudaCell does before it needs a GPU, so
// that tests can run it without one.
struct CudaBinary {
  cuda_codegen::CudaProgram program;
  std::vector<char> cubin;
  std::string architecture;
};
CudaBinary build_cuda_binary(const Cell& cell, std::int64_t batch, const std::string& architecture,
                             const cuda_codegen::ProgramOptions& options = {}, cuda::KernelCache* cache = nullptr);

class CudaCell {
 public:
  // Compiles `cell` (f32 or f64) for batch size `batch` on device `options.device`. Throws Error
  // when there is no usable GPU or driver, when the cell uses something the backend cannot
  // compile, or when NVRTC fails (with the source and its log).
  CudaCell(const Cell& cell, std::int64_t batch, const CudaOptions& options = {});
  // Loads a program compile() made for Target::Cuda (NVRTC, through the disk cache), for the
  // batch it was compiled for.
  CudaCell(CompiledProgram program, std::int64_t batch, const CudaOptions& options);
  ~CudaCell();
  CudaCell(const CudaCell&) = delete;
  CudaCell& operator=(const CudaCell&) = delete;

  // Runs a whole sequence from host memory: copies in, runs on `stream` (null: as run_device
  // does), copies out, waits. Arguments are checked like CpuCell's. With 16-bit storage T is
  // float: the arguments are rounded to the format on the way in, the results widened back.
  template <class T>
  SequenceResult<T> run(const SequenceArgs<T>& args, CudaStream stream = nullptr) const;

  // Runs a whole sequence on device memory, asynchronously on `stream` (null: ordered like work
  // on the legacy default stream, through events and a stream of cellfuse's own that can capture
  // graphs, which the legacy stream cannot). The pointers must stay valid
  // until the work completes. Runs of one CudaCell share its workspace: they are ordered after
  // each other on the GPU even when given different streams.
  void run_device(const DeviceSequenceArgs& args, CudaStream stream = nullptr) const;

  // Converts n elements between the 16-bit `storage` format and f32 on `stream` (widen: 16-bit
  // `from`, f32 `to`; else the reverse), with this cell's support kernels; the caller makes the
  // cell's device current (cuda::make_current). For CudaBptt's 16-bit storage.
  void convert_storage(Storage storage, bool widen, DevicePointer from, DevicePointer to, std::int64_t n,
                       CudaStream stream) const;

  std::int64_t batch() const;
  DType dtype() const;
  Storage storage() const;
  double compile_ms() const;
  bool cubin_from_cache() const;  // the cubin came from the disk cache
  std::string architecture() const;
  std::string device_name() const;
  bool graphs() const;
  std::size_t graph_captures() const;  // how many CUDA graphs runs have captured so far
  bool persistent() const;             // the loop stage runs as one persistent (grid-wide) kernel
  int persistent_blocks() const;       // its grid (0 when not persistent)
  // The strategy the loop stage runs with now: Graph, Persistent or Resident; Auto until the first
  // run of a shape has timed them.
  LoopStrategy loop_plan() const;
  std::string loop_strategy_reason() const;  // why this strategy
  // The stages, GEMMs, kernels and the CUDA source.
  std::string describe() const;
  const std::string& source() const;

 private:
  void load(CompiledProgram program, std::int64_t batch, const CudaOptions& options);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The in-memory cache: one compiled cell per (graph hash, batch, dtype, options, storage).
std::shared_ptr<const CudaCell> compile_cuda(const Cell& cell, std::int64_t batch, const CudaOptions& options = {});

// How many CudaCells compile_cuda has built (for tests of the cache).
std::size_t cuda_compile_count();

}  // namespace cellfuse
