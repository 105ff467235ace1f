#pragma once
// A sequence's memory as a backend sees it: the caller owns it (dense row-major), the backend
// reads and writes it through pointers of its own kind. The CPU's are host pointers
// (SequenceView<T>, TrainingView<T>), the GPU's device addresses (cuda_cell.h, cuda_bptt.h).
#include <cstdint>
#include <vector>

namespace cellfuse {

// A whole sequence in memory the caller owns (dense row-major, shapes as the cell declares them,
// the batch the cell was compiled for).
template <class In, class Out>
struct SequenceBuffers {
  std::int64_t steps = 0;
  std::vector<In> inputs;         // [T,B,n] per cell input
  std::vector<In> states;         // [B,n] per state: the initial states
  std::vector<In> params;         // per param, its declared shape
  std::vector<Out> outputs;       // [T,B,n] per cell output, written
  std::vector<Out> final_states;  // [B,n] per state, written
  // Run the loop stage from step T-1 down to 0 (the backward step of BPTT): step t still reads
  // and writes row block t of every [T,B,n] tensor; only the order of the steps changes.
  bool reverse = false;
};

// One training step's memory. The forward reads inputs, states, params and writes outputs,
// final_states and the tape (one [T,B,w] tensor per tape_widths() entry); the backward reads
// inputs, params, outputs, tape, output_grads and final_state_grads, and OVERWRITES input_grads,
// state_grads and param_grads.
template <class In, class Out>
struct TrainingBuffers {
  std::int64_t steps = 0;
  std::vector<In> inputs, states, params;
  std::vector<Out> outputs, final_states;
  std::vector<Out> tape;
  std::vector<In> output_grads, final_state_grads;
  std::vector<Out> input_grads, state_grads, param_grads;
};

template <class T>
using SequenceView = SequenceBuffers<const T*, T*>;
template <class T>
using TrainingView = TrainingBuffers<const T*, T*>;

}  // namespace cellfuse
