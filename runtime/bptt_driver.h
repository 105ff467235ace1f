#pragma once
// Backpropagation through time, once for every compiled backend. A backend supplies memory of
// its own kind (host pointers, device pointers) and three primitives; this driver decides what
// runs on which buffers:
//
//   forward:  the forward-with-tape program (compile(), training) over the sequence; its outputs
//             after the user outputs are the tape (the saves, then each step's starting states);
//   backward: the generated backward step from step T-1 down to 0, reading the forward's inputs,
//             the tape and the loss gradients, writing the input gradients and, into scratch, the
//             per-step operands of the parameter terms;
//   after the loop: every parameter gradient as one product (dW = A^T B) or column sum over all
//             T*B rows per term, the first term of a parameter overwriting, the rest accumulating.
//
// `In` is the backend's pointer to memory it reads, `Out` to memory it writes (const T* and T*
// on the CPU, device addresses on the GPU).
#include <cstdint>
#include <vector>

#include "compiler/ir/error.h"
#include "compiler/pipeline.h"
#include "runtime/sequence_buffers.h"

namespace cellfuse {

// What a backend does for the parameter gradients (row-major, over `rows` = T*B rows).
template <class In, class Out>
class ParamGradientKernels {
 public:
  virtual ~ParamGradientKernels() = default;
  virtual void zero(Out out, std::int64_t elements) = 0;
  // out[m, n] = a[rows, m]^T b[rows, n], or += when `accumulate`.
  virtual void a_t_b(Out out, In a, In b, std::int64_t m, std::int64_t n, std::int64_t rows, bool accumulate) = 0;
  // out[n] = sum over rows of a[rows, n], or += when `accumulate`.
  virtual void column_sum(Out out, In a, std::int64_t n, std::int64_t rows, bool accumulate) = 0;
};

// The forward-with-tape program's sequence: the user outputs, then the tape, as its outputs.
// `who` starts the error when the counts do not match.
template <class In, class Out>
SequenceBuffers<In, Out> forward_sequence(const BackwardCell& backward, const TrainingBuffers<In, Out>& t, const char* who) {
  const std::size_t tape = backward.forward.outputs.size() - static_cast<std::size_t>(backward.user_outputs) +
                           backward.forward.states.size();
  if (t.outputs.size() != static_cast<std::size_t>(backward.user_outputs) || t.tape.size() != tape)
    throw Error(std::string(who) + ": expected " + std::to_string(backward.user_outputs) + " output(s) and " +
                std::to_string(tape) + " tape tensor(s), got " + std::to_string(t.outputs.size()) + " and " +
                std::to_string(t.tape.size()));
  SequenceBuffers<In, Out> s;
  s.steps = t.steps;
  s.inputs = t.inputs;
  s.states = t.states;
  s.params = t.params;
  s.outputs = t.outputs;
  s.outputs.insert(s.outputs.end(), t.tape.begin(), t.tape.end());
  s.final_states = t.final_states;
  return s;
}

// The backward step's sequence, run in reverse: its inputs are the forward's inputs, the tape
// and the output gradients (as backward.step_inputs says), its states start from the final-state
// gradients and end as the state gradients; its outputs are the input gradients, then the
// parameter-term operands in `scratch` ([T*B, n] each, one per step output after the inputs').
template <class In, class Out>
SequenceBuffers<In, Out> backward_sequence(const BackwardCell& backward, const TrainingBuffers<In, Out>& t,
                                           const std::vector<Out>& scratch) {
  const std::size_t user_outputs = static_cast<std::size_t>(backward.user_outputs);
  const std::size_t saves = backward.saved_outputs.size();
  // A forward output (user output or tape tensor) by its index in the forward-with-saves cell.
  auto forward_output = [&](std::size_t o) -> In { return o < user_outputs ? t.outputs[o] : t.tape[o - user_outputs]; };
  SequenceBuffers<In, Out> s;
  s.steps = t.steps;
  s.reverse = true;
  for (const StepInputSource& source : backward.step_inputs) {
    const auto i = static_cast<std::size_t>(source.index);
    switch (source.kind) {
      case StepInputSource::Kind::ForwardInput: s.inputs.push_back(t.inputs[i]); break;
      case StepInputSource::Kind::ForwardState: s.inputs.push_back(t.tape[saves + i]); break;
      case StepInputSource::Kind::Saved:
        s.inputs.push_back(forward_output(static_cast<std::size_t>(backward.saved_outputs[i])));
        break;
      case StepInputSource::Kind::OutputGrad: s.inputs.push_back(t.output_grads[i]); break;
    }
  }
  s.states = t.final_state_grads;
  s.params = t.params;
  s.outputs = t.input_grads;
  s.outputs.insert(s.outputs.end(), scratch.begin(), scratch.end());
  s.final_states = t.state_grads;
  return s;
}

// After the backward step ran on `step` (backward_sequence's buffers): every parameter gradient
// into t.param_grads, one product or column sum over all T*B rows per term.
template <class In, class Out>
void parameter_gradients(const BackwardCell& backward, const TrainingBuffers<In, Out>& t,
                         const SequenceBuffers<In, Out>& step, std::int64_t batch, ParamGradientKernels<In, Out>& kernels) {
  const Cell& fwd = backward.forward;
  const Cell& sc = backward.step;
  const std::int64_t rows = t.steps * batch;
  auto value = [&](const StepValue& v) -> In {
    const auto i = static_cast<std::size_t>(v.index);
    return v.kind == StepValue::Kind::Input ? step.inputs[i] : In(step.outputs[i]);
  };
  auto width = [&](const StepValue& v) {
    const auto i = static_cast<std::size_t>(v.index);
    return sc.graph.node(v.kind == StepValue::Kind::Input ? sc.inputs[i] : sc.outputs[i].value).shape.features();
  };
  for (std::size_t p = 0; p < fwd.params.size(); ++p) {
    bool written = false;
    if (rows > 0)
      for (const ParamGradTerm& term : backward.param_terms) {
        if (static_cast<std::size_t>(term.param) != p) continue;
        if (term.kind == ParamGradTerm::Kind::GemmAtB)
          kernels.a_t_b(t.param_grads[p], value(term.a), value(term.b), width(term.a), width(term.b), rows, written);
        else
          kernels.column_sum(t.param_grads[p], value(term.a), width(term.a), rows, written);
        written = true;
      }
    if (!written) kernels.zero(t.param_grads[p], fwd.graph.node(fwd.params[p]).shape.elements(batch));
  }
}

}  // namespace cellfuse
