#pragma once
// Training on the CPU backend: the forward and the generated backward step (compiler/passes/
// autodiff.h) each compiled like any cell — hoisted, fused, generated through LLVM — and
// backpropagation through time run in native code: the forward keeps what the backward reads,
// the backward step runs from T-1 down to 0, and every parameter gradient is formed after the
// loop by one product over all T*B rows (dW_hh = sum_t dG_t^T h_t as one GEMM).
#include <memory>
#include <string>

#include "compiler/ir/graph.h"
#include "compiler/pipeline.h"
#include "runtime/reference/bptt.h"
#include "runtime/sequence_buffers.h"

namespace cellfuse {

class CpuCell;

// TrainingView<T> (runtime/sequence_buffers.h) is a training step's memory, borrowed from the
// caller: what bindings to other frameworks pass, so that the forward and the backward can run
// at different times (an autograd function).

class CpuBptt {
 public:
  // Differentiates and compiles `cell` for batch size `batch` (threads as CpuCell).
  CpuBptt(const Cell& cell, std::int64_t batch, int threads = 0);
  ~CpuBptt();
  CpuBptt(const CpuBptt&) = delete;
  CpuBptt& operator=(const CpuBptt&) = delete;

  // Forward and backward over a whole sequence: the same contract as reference_bptt.
  template <class T>
  BpttResult<T> run(const SequenceArgs<T>& args, const LossGradients<T>& seeds) const;
  // The same into `result`, whose tensors are reused where their shapes fit (a training loop
  // passing the same result every step allocates nothing after the first).
  template <class T>
  void run_into(const SequenceArgs<T>& args, const LossGradients<T>& seeds, BpttResult<T>& result) const;

  // The features of each tape tensor ([T,B,w] each).
  std::vector<std::int64_t> tape_widths() const;
  // The two halves of run() on borrowed memory; only counts are checked (the caller checks
  // shapes). Safe from several threads: each compiled cell serializes its own runs.
  template <class T>
  void forward_view(const TrainingView<T>& view) const;
  template <class T>
  void backward_view(const TrainingView<T>& view) const;

  const BackwardCell& backward_cell() const;
  double compile_ms() const;
  std::string describe() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The in-memory cache of compiled training cells, like compile_cpu's.
std::shared_ptr<const CpuBptt> compile_cpu_bptt(const Cell& cell, std::int64_t batch);

}  // namespace cellfuse
