#include "differential.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>

#include "../cpp/cell_conversion.h"
#include "compiler/ir/error.h"
#include "compiler/passes/autodiff.h"
#include "random_cell.h"
#include "runtime/cpu/cpu_bptt.h"
#include "runtime/cpu/cpu_cell.h"
#include "runtime/random_args.h"
#include "runtime/reference/bptt.h"
#include "runtime/reference/interpreter.h"

namespace cellfuse::stress {
namespace {

using testing_support::as_f32;
using testing_support::as_f64;
using testing_support::convert;
using testing_support::convert_seeds;

// A named list of tensors: outputs, final states, then (BPTT) every gradient.
template <class T>
struct Flat {
  std::vector<std::string> names;
  std::vector<const HostTensor<T>*> tensors;
  void add(const std::string& name, const std::vector<HostTensor<T>>& list) {
    for (std::size_t i = 0; i < list.size(); ++i) {
      names.push_back(name + " " + std::to_string(i));
      tensors.push_back(&list[i]);
    }
  }
};

template <class T>
Flat<T> flatten(const SequenceResult<T>& r) {
  Flat<T> f;
  f.add("output", r.outputs);
  f.add("final state", r.final_states);
  return f;
}

template <class T>
Flat<T> flatten(const BpttResult<T>& r) {
  Flat<T> f = flatten(r.forward);
  f.add("d input", r.grads.inputs);
  f.add("d initial state", r.grads.states);
  f.add("d param", r.grads.params);
  return f;
}

// ||got - want|| / ||want||; infinity when the shapes differ or a NaN/inf pattern differs.
template <class T>
double relative_error(const HostTensor<T>& got, const HostTensor<double>& want) {
  if (got.shape != want.shape || got.data.size() != want.data.size()) return INFINITY;
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < want.data.size(); ++i) {
    const double g = static_cast<double>(got.data[i]), w = want.data[i];
    if (!std::isfinite(g) || !std::isfinite(w)) {
      if (std::isnan(g) && std::isnan(w)) continue;
      if (g == w) continue;
      return INFINITY;
    }
    diff += (g - w) * (g - w);
    norm += w * w;
  }
  // A tensor whose root mean square is below 1e-2 is small next to the O(1) values it is summed
  // from (a gradient that cancels, one through saturated functions where 1 - tanh^2 cancels):
  // its error is measured against that floor, i.e. as an absolute error, instead of against its
  // own norm, which rounding alone can exceed in relative terms.
  const double floor = 1e-2 * std::sqrt(static_cast<double>(want.data.size()));
  return std::sqrt(diff) / std::max(std::sqrt(norm), floor);
}

bool all_finite(const Flat<double>& f) {
  for (const auto* t : f.tensors)
    for (double v : t->data)
      if (!std::isfinite(v)) return false;
  return true;
}

// The tolerance before conditioning: unit roundoff x (depth + 2) x sqrt(T), with a factor for
// the reordering of sums (products, reductions, the parameter gradients over T*B rows).
double base_tolerance(DType dtype, int depth, std::int64_t steps) {
  const double u = dtype == DType::f32 ? 6e-8 : 1.2e-16;
  return u * 64 * (depth + 2) * std::sqrt(static_cast<double>(steps) + 1);
}

// Compares `got` (the backend) with `want` (f64 reference), each tensor at
// max(base, 4 x the f32 probe's own error scaled to the cell's dtype).
template <class T>
std::optional<std::string> compare(const Flat<T>& got, const Flat<double>& want, const Flat<float>& probe, DType dtype,
                                   double base, CheckCounts& counts) {
  if (got.tensors.size() != want.tensors.size())
    return "the backend returned " + std::to_string(got.tensors.size()) + " tensors, the reference " +
           std::to_string(want.tensors.size());
  const double scale = dtype == DType::f32 ? 1.0 : 1.2e-16 / 6e-8;
  for (std::size_t i = 0; i < want.tensors.size(); ++i) {
    const double probe_err = relative_error(*probe.tensors[i], *want.tensors[i]);
    if (!std::isfinite(probe_err)) {
      // f32 overflows or changes a NaN pattern where f64 does not: no conditioning estimate, so
      // no comparison (the generator's bounded cells never get here; fuzzed text may).
      ++counts.skipped;
      continue;
    }
    double tol = base;
    if (4 * probe_err * scale > tol) {
      tol = 4 * probe_err * scale;
      ++counts.loose;
    }
    const double err = relative_error(*got.tensors[i], *want.tensors[i]);
    ++counts.tensors;
    counts.worst_ratio = std::max(counts.worst_ratio, err / tol);
    if (!(err <= tol)) {
      std::ostringstream s;
      double norm = 0;
      for (double v : want.tensors[i]->data) norm += v * v;
      s << got.names[i] << ": relative error " << err << " > tolerance " << tol << " (base " << base
        << ", f32 probe " << probe_err << ", rms of the reference "
        << std::sqrt(norm / std::max<double>(1, static_cast<double>(want.tensors[i]->data.size()))) << ")";
      return s.str();
    }
  }
  return std::nullopt;
}

template <class T>
std::optional<Failure> check_typed(const Cell& cell, const std::vector<RunShape>& shapes, const CheckOptions& options,
                                   CheckCounts& counts) {
  const DType dtype = cell.graph.dtype();
  const Cell ref_cell = as_f64(cell);
  const Cell probe_cell = as_f32(cell);
  const int depth = cell_depth(cell);
  const std::int64_t batch = shapes.front().batch;
  std::unique_ptr<CpuCell> forward;
  std::unique_ptr<CpuBptt> training;
  try {
    if (options.forward) forward = std::make_unique<CpuCell>(cell, batch, options.threads);
    if (options.bptt) training = std::make_unique<CpuBptt>(cell, batch, options.threads);
  } catch (const Error& e) {
    return Failure{"cpu compile error", e.what()};
  } catch (const std::exception& e) {
    return Failure{"cpu compile crash", e.what()};
  }
  std::optional<BackwardCell> ref_backward, probe_backward;
  if (options.bptt) {
    ref_backward = differentiate(ref_cell);
    probe_backward = differentiate(probe_cell);
  }
  std::uint64_t seed = options.arg_seed;
  for (const RunShape& shape : shapes) {
    if (shape.batch != batch) throw std::logic_error("check_cpu: every shape must have the compiled batch");
    const std::string what = " (T=" + std::to_string(shape.steps) + " B=" + std::to_string(shape.batch) +
                             " args seed " + std::to_string(seed) + ")";
    const auto args = random_sequence_args<T>(cell, shape.steps, shape.batch, seed);
    const auto args64 = convert<T, double>(args);
    const auto args32 = convert<T, float>(args);
    const double base = base_tolerance(dtype, depth, shape.steps);
    if (forward) {
      const auto want = interpret_sequence(ref_cell, args64);
      if (!all_finite(flatten(want))) return Failure{"reference non-finite", "the f64 reference is not finite" + what};
      const auto probe = interpret_sequence(probe_cell, args32);
      SequenceResult<T> got;
      try {
        got = forward->run(args);
      } catch (const Error& e) {
        return Failure{"cpu forward run error", e.what() + what};
      } catch (const std::exception& e) {
        return Failure{"cpu forward run crash", e.what() + what};
      }
      ++counts.forward_runs;
      if (auto bad = compare(flatten(got), flatten(want), flatten(probe), dtype, base, counts))
        return Failure{"cpu forward", *bad + what};
    }
    if (training) {
      const auto seeds = random_loss_gradients<T>(cell, shape.steps, shape.batch, seed + 1);
      const auto want = reference_bptt(*ref_backward, args64, convert_seeds<T, double>(seeds));
      if (!all_finite(flatten(want))) return Failure{"reference non-finite", "the f64 reference BPTT is not finite" + what};
      const auto probe = reference_bptt(*probe_backward, args32, convert_seeds<T, float>(seeds));
      BpttResult<T> got;
      try {
        got = training->run(args, seeds);
      } catch (const Error& e) {
        return Failure{"cpu bptt run error", e.what() + what};
      } catch (const std::exception& e) {
        return Failure{"cpu bptt run crash", e.what() + what};
      }
      ++counts.bptt_runs;
      if (auto bad = compare(flatten(got), flatten(want), flatten(probe), dtype, base, counts))
        return Failure{"cpu bptt", *bad + what};
    }
    seed += 0x1000;
  }
  return std::nullopt;
}

}  // namespace

std::optional<Failure> check_cpu(const Cell& cell, const std::vector<RunShape>& shapes, const CheckOptions& options,
                                 CheckCounts& counts) {
  ++counts.cells;
  try {
    return cell.graph.dtype() == DType::f32 ? check_typed<float>(cell, shapes, options, counts)
                                            : check_typed<double>(cell, shapes, options, counts);
  } catch (const Error& e) {
    return Failure{"reference error", e.what()};
  }
}

}  // namespace cellfuse::stress
