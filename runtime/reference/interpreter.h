#pragma once
// The reference interpreter: runs a cell one node at a time with plain loops, in f64 or f32.
// It is the oracle every backend is tested against, so it is written to be obviously right, not
// fast: no fusion, no hoisting, every intermediate materialized.
#include <vector>

#include "compiler/ir/graph.h"
#include "runtime/tensor.h"

namespace cellfuse {

template <class T>
struct StepArgs {
  std::vector<HostTensor<T>> inputs;  // one [B,n] per cell input
  std::vector<HostTensor<T>> states;  // one [B,n] per cell state
  std::vector<HostTensor<T>> params;  // one per cell param, in its declared shape
};

template <class T>
struct StepResult {
  std::vector<HostTensor<T>> outputs;      // one [B,n] per cell output
  std::vector<HostTensor<T>> next_states;  // one [B,n] per state
};

template <class T>
struct SequenceArgs {
  std::vector<HostTensor<T>> inputs;  // one [T,B,n] per cell input
  std::vector<HostTensor<T>> states;  // initial states, one [B,n] each
  std::vector<HostTensor<T>> params;
  std::int64_t steps = -1;  // T; needed only for a cell without per-step inputs
};

template <class T>
struct SequenceResult {
  std::vector<HostTensor<T>> outputs;       // one [T,B,n] per cell output
  std::vector<HostTensor<T>> final_states;  // one [B,n] per state
};

// One step. Throws Error when an argument's count or shape does not match the cell.
template <class T>
StepResult<T> interpret_step(const Cell& cell, const StepArgs<T>& args);

// A whole sequence: T steps, each feeding its next states to the following one.
template <class T>
SequenceResult<T> interpret_sequence(const Cell& cell, const SequenceArgs<T>& args);

extern template StepResult<float> interpret_step(const Cell&, const StepArgs<float>&);
extern template StepResult<double> interpret_step(const Cell&, const StepArgs<double>&);
extern template SequenceResult<float> interpret_sequence(const Cell&, const SequenceArgs<float>&);
extern template SequenceResult<double> interpret_sequence(const Cell&,
                                                          const SequenceArgs<double>&);

}  // namespace cellfuse
