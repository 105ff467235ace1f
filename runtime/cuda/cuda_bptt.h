#pragma once
// Training on the GPU: backpropagation through time with the CUDA backend, the mirror of CpuBptt
// (runtime/cpu/cpu_bptt.h). Two CudaCells do the work: the forward with its saves
// (compiler/passes/autodiff.h) and the generated backward step, run from step T-1 down to 0; then
// every parameter gradient is formed by cuBLAS over all T*B rows at once (dW = dG^T h as one
// GEMM, a bias gradient as a product with a vector of ones).
//
//   auto bptt = cellfuse::compile_cuda_bptt(cell, /*batch=*/64);
//   BpttResult<float> r = bptt->run(args, seeds);        // host tensors in and out
//   bptt->forward_device(device_args, stream);           // device pointers, asynchronous
//   bptt->backward_device(device_args, stream);
//
// The tape is what the forward leaves for the backward: the forward-with-saves cell's outputs
// after the user outputs, that is every save (e.g. an LSTM's h W_hh^T of each step) and then, per
// state, the value each step starts from. tape_widths() gives the features of each; the caller
// owns the [T,B,w] buffers, so a framework can keep them with its autograd graph between the two
// calls. Everything else the backward needs (the backward step's parameter-term operands, [T,B,n]
// each; a vector of ones) lives in a workspace of the CudaBptt, grown to the longest sequence
// seen: backward runs of one CudaBptt are therefore serialized on the GPU (a run on another
// stream waits for the previous one), and growing the workspace waits for the previous run.
//
// With 16-bit storage (CudaOptions::storage, f32 cells), every tensor of DeviceTrainingArgs but
// the tape holds bf16 or f16 elements: the arguments are widened into f32 buffers of the
// CudaBptt, both cells and the parameter-gradient products compute in f32, and the results are
// rounded to the format as they are written back. The tape stays f32 (the backward reads it at
// full precision; it is the caller's memory, [T,B,w] floats).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "compiler/pipeline.h"
#include "runtime/cuda/cuda_cell.h"
#include "runtime/reference/bptt.h"

namespace cellfuse {

// One training step's device memory (runtime/sequence_buffers.h: what the forward reads and
// writes, what the backward reads and overwrites). Every pointer is a dense row-major device
// buffer; the same object can serve forward_device and backward_device.
using DeviceTrainingArgs = TrainingBuffers<DevicePointer, DevicePointer>;

class CudaBptt {
 public:
  // Differentiates `cell` (f32 or f64) and compiles the forward with saves and the backward step
  // for batch size `batch` (the two NVRTC compilations run in parallel). Throws Error like
  // CudaCell.
  CudaBptt(const Cell& cell, std::int64_t batch, const CudaOptions& options = {});
  ~CudaBptt();
  CudaBptt(const CudaBptt&) = delete;
  CudaBptt& operator=(const CudaBptt&) = delete;

  // The features of each tape tensor: the saves, then one per state.
  std::vector<std::int64_t> tape_widths() const;

  // Reads inputs/states/params, writes outputs/final_states/tape; asynchronous on `stream` (null:
  // ordered with the legacy default stream, as CudaCell::run_device).
  void forward_device(const DeviceTrainingArgs& a, CudaStream stream = nullptr) const;
  // Reads inputs/params/tape/output_grads/final_state_grads, writes input_grads/state_grads/
  // param_grads (overwritten); asynchronous on `stream`. steps == 0 copies the final-state
  // gradients to the state gradients and zeroes the parameter gradients.
  void backward_device(const DeviceTrainingArgs& a, CudaStream stream = nullptr) const;

  // Forward and backward from host memory: the same contract as reference_bptt. Waits.
  template <class T>
  BpttResult<T> run(const SequenceArgs<T>& args, const LossGradients<T>& seeds, CudaStream stream = nullptr) const;

  const BackwardCell& backward_cell() const;
  std::int64_t batch() const;
  DType dtype() const;
  Storage storage() const;
  double compile_ms() const;      // both cells, wall time
  bool cubins_from_cache() const;  // both cubins came from the disk cache
  const CudaCell& forward_cell() const;   // the forward with the tape as extra outputs
  const CudaCell& backward_step() const;  // the backward step, run in reverse
  // The backward cell (saves, parameter terms), then both cells' stages, kernels and source.
  std::string describe() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The in-memory cache of compiled training cells, like compile_cuda's.
std::shared_ptr<const CudaBptt> compile_cuda_bptt(const Cell& cell, std::int64_t batch, const CudaOptions& options = {});

}  // namespace cellfuse
