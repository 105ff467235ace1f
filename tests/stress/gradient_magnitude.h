#pragma once
// An estimate of the rounding error of every gradient from the magnitudes of the terms it is
// summed from (the differential check's "fan-in" tolerance for gradients, next to its depth rule
// and its f32 probes).
//
// Why: a gradient element is a sum over every path from the loss to it (the fan-out of a value
// inside a step, the batch rows and time steps of a parameter gradient). When those terms cancel
// (0.02 summed from hundreds of terms of size up to 4: random cell 200218), any summation order
// other than the reference's is off by about unit roundoff x the sum of |terms|, which is
// thousands of times unit roundoff x |sum|. An error measured against |sum| then fails for no
// fault; one measured against the sum of |terms| does not.
//
// How: the backward step is linear in the adjoints (the loss seeds, the carried state gradients
// and every value computed from them). Its graph is rewritten into a magnitude step: every adjoint
// root enters as its absolute value, a sub of adjoints becomes an add, neg disappears, and every
// non-adjoint operand of an adjoint op (a local derivative, a weight, a mask) enters as its
// absolute value, so that it sums |term| wherever the real step sums term: the local magnitude
// L_t of each output of step t, given the exact gradients flowing into the step.
//
// The error model (first order, the usual random model of rounding): each adjoint value the step
// computes is off by its own rounding, step_error x its local magnitude x a random sign per
// element, plus the error of the gradients flowing into the step, carried through the step
// exactly (the step is linear in them: the backward step itself, run in f64 with the errors as its
// state and zero seeds). A parameter gradient adds the rounding of its sum over T*B rows,
// step_error x the sum of |a| |b|. Three such samples are drawn (a fixed pseudo-random sequence,
// so that a seed's check is reproducible); the estimate of each element is the largest of them.
// Not modelled: the rounding of the forward values the backward reads (the f32 probes of the
// differential check measure that), and a step whose adjoints pass through an op that is not
// linear in them (no estimate: the check falls back to its other rules).
#include <optional>

#include "compiler/passes/autodiff.h"
#include "runtime/reference/bptt.h"

namespace cellfuse::stress {

struct MagnitudeStep {
  Cell cell;  // inputs, states (the true gradients g_{t+1}) and params as the backward step's
  // Outputs: the magnitude of each backward step output (same order), then |operand| for the
  // parameter terms that read a step input, then the magnitude of each next state.
  std::vector<ParamGradTerm> terms;  // the backward's param terms, operands as outputs of `cell`
  std::size_t first_state_output = 0;
  std::vector<bool> adjoint_output;  // per backward step output: computed from the adjoints
};

// The magnitude step of `backward`, or nothing when an adjoint reaches an op that is not linear
// in it (an adjoint under tanh, a comparison, a divisor): then no estimate is made.
std::optional<MagnitudeStep> magnitude_step(const BackwardCell& backward);

// The estimated error of every gradient (reference_bptt's gradients' shapes and order) in f64.
SequenceGradients<double> gradient_error_estimates(const BackwardCell& backward, const MagnitudeStep& magnitude,
                                                   const SequenceArgs<double>& args,
                                                   const LossGradients<double>& seeds, double step_error);

}  // namespace cellfuse::stress
