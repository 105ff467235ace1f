#pragma once
// Reverse-mode autodiff of a cell: the backward step of backpropagation through time (BPTT),
// derived from the forward cell's graph. Training is half of what users do with a custom cell,
// and its backward is where per-op overhead hurts most; deriving it as an ordinary Cell lets the
// same passes (simplify, CSE, DCE, hoisting, fusion) and backends run it.
//
// The contract, for a sequence of T steps (s_t is the state the forward step t starts from, L the
// loss):
//
//   forward step t   (x_t, s_t)                 -> (y_t, s_{t+1}, saves_t)   [`forward`]
//   backward step t  states: g_{t+1} = dL/ds_{t+1}
//                    inputs: x_t, s_t, saves_t, dL/dy_t (as `step_inputs` says)
//                    -> outputs: dL/dx_t, then the per-step operands of the parameter terms
//                       next states: g_t = dL/ds_t
//
// run for t = T-1 down to 0, starting from g_T = the gradient of the final states; the last
// step's next states are the gradients of the initial states. Parameter gradients are never
// accumulated inside the step: the step only emits batched per-step values, and `param_terms`
// say which products over all T*B rows make them after the loop (dW_hh = sum_t dG_t^T h_t as one
// GEMM). The step's params are the forward's params, in the same order.
//
// What is saved (SavePolicy): by default the batched outputs of contractions (linear/matmul) that
// the backward needs; every pointwise, layout and reduction value is recomputed inside the
// backward step from the step inputs (forward inputs, forward states at t, saves). The forward
// states at every t are read as well, so a runner keeps them (it needs h_t for the dW_hh GEMM
// anyway).
//
// Supported parameter uses: a parameter used directly as a linear/matmul weight, a linear bias,
// or a vector broadcast over the batch. A gradient that would flow through an unbatched
// computation on parameters (sigmoid(p) broadcast, a weight made from two parameters) is not
// supported yet and is rejected with an Error naming the op and the parameter.
#include <cstdint>
#include <string>
#include <vector>

#include "compiler/ir/graph.h"

namespace cellfuse {

// Where the backward step's input leaf i gets its data at step t.
struct StepInputSource {
  enum class Kind {
    ForwardInput,  // forward input `index` at step t
    ForwardState,  // forward state `index` at step t (the value step t started from)
    Saved,         // save `index` (forward.outputs[saved_outputs[index]]) of step t
    OutputGrad,    // dL/d(forward user output `index`) at step t
  };
  Kind kind;
  int index;
  friend bool operator==(const StepInputSource&, const StepInputSource&) = default;
};

// A per-step batched value of the backward step: one of its inputs or one of its outputs.
struct StepValue {
  enum class Kind { Input, Output };
  Kind kind;
  int index;  // into step.inputs (and step_inputs) or step.outputs
  friend bool operator==(const StepValue&, const StepValue&) = default;
};

// One contribution to a parameter's gradient, formed after the loop from the values `a` (and
// `b`) of every step, stacked into [T*B, n] matrices A and B:
//   GemmAtB  dP[m][n] += sum over all T*B rows r of A[r][m] * B[r][n]   (dP += A^T B: one GEMM)
//   RowSum   dP[n]    += sum over all T*B rows r of A[r][n]             (b unused)
// E.g. linear(x, W, b) gives dW += dZ^T x and db += rowsum(dZ); matmul(a, W) gives dW += a^T dZ;
// broadcast(v) gives dv += rowsum(its gradient).
struct ParamGradTerm {
  enum class Kind { GemmAtB, RowSum };
  Kind kind;
  int param;  // index into forward.params
  StepValue a;
  StepValue b;  // GemmAtB only
};

struct BackwardCell {
  // The forward cell (optimized) plus extra per-step outputs: the values the backward step
  // reads ("saves"). Its first `user_outputs` outputs are the original cell's, in order.
  Cell forward;
  int user_outputs = 0;
  std::vector<int> saved_outputs;  // indices into forward.outputs of the saves, in save order
  // The backward step (see the contract above). step.outputs[i] for i < forward.inputs.size()
  // is dL/dx_t of forward input i; the outputs after those are parameter-term operands.
  Cell step;
  std::vector<StepInputSource> step_inputs;  // parallel to step.inputs
  std::vector<ParamGradTerm> param_terms;
};

// What the forward saves for the backward step.
enum class SavePolicy {
  // The batched outputs of contractions on a gradient path; everything else is recomputed. In a
  // fused runner these cost no extra stores: they are GEMM outputs, the hoisted x W_ih^T already
  // a buffer over all steps.
  Contractions,
  // The fewest bytes per batch row: a minimum cut between the contractions (never recomputed)
  // and the values the backward reads (e.g. an LSTM's gate pre-activations, 4H, instead of both
  // GEMM outputs, 8H). The saves may be pointwise values that a fused kernel must store.
  MinBytes,
};

struct AutodiffOptions {
  SavePolicy save = SavePolicy::Contractions;
  // Ops to treat as having no gradient rule (for tests of the rejection path: every op of the IR
  // has a rule today).
  std::vector<OpKind> without_rule;
};

// Differentiates a cell (verified first). Throws Error for an op without a gradient rule or an
// unsupported parameter use, naming the op.
BackwardCell differentiate(const Cell& forward, const AutodiffOptions& options = {});

// True when the autodiff pass has a local gradient rule for `op` (one switch over every op).
bool has_grad_rule(OpKind op);

// Bytes the forward saves per step per batch row (dtype size x features of every save), and the
// bytes of the forward states at t the backward step reads (kept by the runner per step).
std::int64_t saved_bytes_per_row(const BackwardCell& backward);
std::int64_t state_bytes_per_row(const BackwardCell& backward);

// The saves with their bytes, where every step input comes from, the parameter terms, the
// forward cell with its saves and the backward step cell (`cellfuse print --backward`).
std::string print_backward(const BackwardCell& backward);

// The tape a training forward keeps for the backward, one [T,B,w] tensor per entry: the saves that
// are not user outputs (forward.outputs after the first user_outputs), then each state's value at
// the start of every step. Returns the widths w, in that order (every backend keeps this layout).
std::vector<std::int64_t> tape_widths(const BackwardCell& backward);

}  // namespace cellfuse
