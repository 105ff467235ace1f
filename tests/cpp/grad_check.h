#pragma once
// Shared by the autodiff tests: f64 central finite differences of a scalar loss
//
//   L = sum(w_o * outputs) + sum(w_s * final states)      (w: fixed random weights)
//
// against the gradients of the reference BPTT (autodiff's backward step run by the
// interpreter), for every element of every input, initial state and parameter.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>

#include "compiler/ir/graph.h"
#include "compiler/passes/autodiff.h"
#include "runtime/random_args.h"
#include "runtime/reference/bptt.h"
#include "runtime/reference/interpreter.h"

namespace cellfuse::testing_support {

// The loss, summed in long double so that its own rounding does not swamp the differences.
inline double loss(const Cell& cell, const SequenceArgs<double>& args,
                   const LossGradients<double>& w) {
  SequenceResult<double> r = interpret_sequence(cell, args);
  long double sum = 0;
  for (std::size_t o = 0; o < r.outputs.size(); ++o)
    for (std::size_t i = 0; i < r.outputs[o].data.size(); ++i)
      sum += static_cast<long double>(w.outputs[o].data[i]) * r.outputs[o].data[i];
  for (std::size_t s = 0; s < r.final_states.size(); ++s)
    for (std::size_t i = 0; i < r.final_states[s].data.size(); ++i)
      sum += static_cast<long double>(w.final_states[s].data[i]) * r.final_states[s].data[i];
  return static_cast<double>(sum);
}

struct GradCheckResult {
  double worst = 0;         // the largest scaled error
  std::string where;        // which element
  std::size_t checked = 0;  // elements compared
  std::size_t kinks = 0;    // elements within eps of a kink, checked against one-sided differences
  double scale = 0;         // the largest |gradient|
};

// Compares every gradient element with a central difference (step eps). An element's error is
// |fd - analytic| / max(|analytic|, floor * G), G the largest |gradient| of the whole check (at
// least 1): relative for the gradients that matter, absolute-ish for the ones that are ~0.
inline GradCheckResult check_gradients(const Cell& cell, SequenceArgs<double> args,
                                       const LossGradients<double>& w,
                                       const AutodiffOptions& options = {}, double tolerance = 1e-6,
                                       double eps = 1e-6, double floor = 1e-2) {
  BackwardCell backward = differentiate(cell, options);
  BpttResult<double> analytic = reference_bptt(backward, args, w);

  // The forward of the backward cell (optimized, with saves) gives the cell's results.
  SequenceResult<double> direct = interpret_sequence(cell, args);
  for (std::size_t o = 0; o < direct.outputs.size(); ++o)
    for (std::size_t i = 0; i < direct.outputs[o].data.size(); ++i)
      EXPECT_NEAR(analytic.forward.outputs[o].data[i], direct.outputs[o].data[i], 1e-12);
  for (std::size_t s = 0; s < direct.final_states.size(); ++s)
    for (std::size_t i = 0; i < direct.final_states[s].data.size(); ++i)
      EXPECT_NEAR(analytic.forward.final_states[s].data[i], direct.final_states[s].data[i], 1e-12);

  struct Group {
    const char* role;
    std::vector<HostTensor<double>>* values;
    const std::vector<HostTensor<double>>* grads;
    const std::vector<ValueId>* leaves;
  };
  Group groups[] = {{"input", &args.inputs, &analytic.grads.inputs, &cell.inputs},
                    {"state", &args.states, &analytic.grads.states, &cell.states},
                    {"param", &args.params, &analytic.grads.params, &cell.params}};
  GradCheckResult result;
  result.scale = 1.0;
  for (const Group& g : groups) {
    EXPECT_EQ(g.values->size(), g.grads->size()) << g.role;
    for (std::size_t k = 0; k < g.grads->size(); ++k) {
      EXPECT_EQ((*g.grads)[k].shape, (*g.values)[k].shape) << g.role << " " << k;
      for (double v : (*g.grads)[k].data) {
        EXPECT_TRUE(std::isfinite(v)) << g.role << " " << k;
        result.scale = std::max(result.scale, std::abs(v));
      }
    }
  }
  for (const Group& g : groups) {
    for (std::size_t k = 0; k < g.values->size() && k < g.grads->size(); ++k) {
      HostTensor<double>& value = (*g.values)[k];
      for (std::size_t i = 0; i < value.data.size(); ++i) {
        const double saved = value.data[i];
        value.data[i] = saved + eps;
        const double up = loss(cell, args, w);
        value.data[i] = saved - eps;
        const double down = loss(cell, args, w);
        value.data[i] = saved;
        const double fd = (up - down) / (2 * eps);
        const double an = (*g.grads)[k].data[i];
        const double denominator = std::max(std::abs(an), floor * result.scale);
        double err = std::abs(fd - an) / denominator;
        ++result.checked;
        if (err > tolerance) {
          // A kink (relu, abs, min/max, a `where` on a comparison) closer than eps makes the
          // central difference meaningless there. Recognized by one-sided differences that
          // disagree far beyond their O(eps) truncation error; the gradient must then match one
          // side, and such points must stay rare.
          const double mid = loss(cell, args, w);
          const double right = (up - mid) / eps, left = (mid - down) / eps;
          const bool kink = std::abs(right - left) > 1e-3 * denominator;
          if (kink && std::min(std::abs(right - an), std::abs(left - an)) <= 1e-4 * denominator) {
            ++result.kinks;
            continue;
          }
        }
        if (err > result.worst || std::isnan(err)) {
          result.worst = std::isnan(err) ? INFINITY : err;
          result.where = std::string(g.role) + " %" + std::string(cell.leaf_name((*g.leaves)[k])) +
                         "[" + std::to_string(i) + "]: finite difference " + std::to_string(fd) +
                         ", autodiff " + std::to_string(an);
        }
      }
    }
  }
  EXPECT_LE(result.kinks * 50, result.checked) << cell.name << ": too many points next to a kink";
  EXPECT_LE(result.worst, tolerance) << cell.name << ": worst at " << result.where;
  return result;
}

// The whole check on random arguments (inputs and states in [-1, 1), PyTorch-style parameters)
// and random loss weights, after `prepare` has moved the arguments into the ops' domains.
inline GradCheckResult check_cell_gradients(
    const Cell& cell, std::int64_t steps, std::int64_t batch, std::uint64_t seed,
    const std::function<void(SequenceArgs<double>&)>& prepare = {},
    const AutodiffOptions& options = {}) {
  SequenceArgs<double> args = random_sequence_args<double>(cell, steps, batch, seed);
  if (prepare) prepare(args);
  LossGradients<double> w = random_loss_gradients<double>(cell, steps, batch, seed + 1000);
  return check_gradients(cell, std::move(args), w, options);
}

}  // namespace cellfuse::testing_support
