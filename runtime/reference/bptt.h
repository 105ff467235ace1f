#pragma once
// The reference backpropagation through time: a whole sequence forward and backward with the
// reference interpreter, in f64 or f32. It runs the forward cell with its saves step by step,
// keeping every step's saves and states, then the backward step in reverse over t, then forms
// the parameter gradients from the parameter terms with plain loops. It is the oracle the native
// backward passes are tested against, so it is written to be obviously right, not fast.
#include <cstdint>
#include <vector>

#include "compiler/pipeline.h"
#include "runtime/reference/interpreter.h"

namespace cellfuse {

// The gradients of the loss with respect to what the forward produced: the seeds.
template <class T>
struct LossGradients {
  std::vector<HostTensor<T>> outputs;       // one [T,B,n] per user output of the cell
  std::vector<HostTensor<T>> final_states;  // one [B,n] per state
};

// The gradients of the loss with respect to every argument of the sequence.
template <class T>
struct SequenceGradients {
  std::vector<HostTensor<T>> inputs;  // one [T,B,n] per input
  std::vector<HostTensor<T>> states;  // one [B,n] per state: the gradient of the initial state
  std::vector<HostTensor<T>> params;  // one per param, in its declared shape
};

template <class T>
struct BpttResult {
  SequenceResult<T> forward;  // the user outputs [T,B,n] and the final states
  SequenceGradients<T> grads;
};

// Forward and backward over a whole sequence. `args` are the forward's arguments (as for
// interpret_sequence; the backward cell's forward takes the same ones), `seeds` the gradients of
// the loss. A sequence of length 0 gives zero parameter gradients and passes the final-state
// gradients through to the initial states. Throws Error when a count or a shape is wrong.
template <class T>
BpttResult<T> reference_bptt(const BackwardCell& backward, const SequenceArgs<T>& args,
                             const LossGradients<T>& seeds);

// Loss gradients for a cell's outputs and final states, uniform in [-1, 1), from a seed (a
// stream of its own, so the same seed as random_sequence_args gives other numbers). What
// `cellfuse run --backward` feeds every target, so that gradient checksums compare.
template <class T>
LossGradients<T> random_loss_gradients(const Cell& cell, std::int64_t steps, std::int64_t batch,
                                       std::uint64_t seed);

// The sum of every gradient: inputs, initial states and parameters.
template <class T>
double gradient_checksum(const SequenceGradients<T>& grads);

extern template BpttResult<float> reference_bptt(const BackwardCell&, const SequenceArgs<float>&,
                                                 const LossGradients<float>&);
extern template BpttResult<double> reference_bptt(const BackwardCell&, const SequenceArgs<double>&,
                                                  const LossGradients<double>&);
extern template LossGradients<float> random_loss_gradients(const Cell&, std::int64_t, std::int64_t,
                                                           std::uint64_t);
extern template LossGradients<double> random_loss_gradients(const Cell&, std::int64_t, std::int64_t,
                                                            std::uint64_t);
extern template double gradient_checksum(const SequenceGradients<float>&);
extern template double gradient_checksum(const SequenceGradients<double>&);

}  // namespace cellfuse
