#include "differential.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <sstream>
#include <stdexcept>

#include "../cpp/cell_conversion.h"
#include "compiler/ir/error.h"
#include "compiler/passes/autodiff.h"
#include "gradient_magnitude.h"
#include "random_cell.h"
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
void add_gradients(Flat<T>& f, const SequenceGradients<T>& g) {
  f.add("d input", g.inputs);
  f.add("d initial state", g.states);
  f.add("d param", g.params);
}

template <class T>
Flat<T> flatten(const BpttResult<T>& r) {
  Flat<T> f = flatten(r.forward);
  add_gradients(f, r.grads);
  return f;
}

template <class T>
Flat<T> flatten_gradients(const SequenceGradients<T>& g) {
  Flat<T> f;
  add_gradients(f, g);
  return f;
}

// ||got - want||; infinity when the shapes differ or a NaN/inf pattern differs.
template <class T>
double error_norm(const HostTensor<T>& got, const HostTensor<double>& want) {
  if (got.shape != want.shape || got.data.size() != want.data.size()) return INFINITY;
  double diff = 0;
  for (std::size_t i = 0; i < want.data.size(); ++i) {
    const double g = static_cast<double>(got.data[i]), w = want.data[i];
    if (!std::isfinite(g) || !std::isfinite(w)) {
      if (std::isnan(g) && std::isnan(w)) continue;
      if (g == w) continue;
      return INFINITY;
    }
    diff += (g - w) * (g - w);
  }
  return std::sqrt(diff);
}

double norm(const HostTensor<double>& t) {
  double sum = 0;
  for (double v : t.data)
    if (std::isfinite(v)) sum += v * v;
  return std::sqrt(sum);
}

// What a tensor's error is measured against (the error is relative to it): its own norm, but at
// least an RMS of 1e-2: a tensor that small next to the O(1) values it is computed from (a
// gradient that cancels, one through saturated functions where 1 - tanh^2 cancels) has an error
// that is absolute, and rounding alone exceeds it in relative terms.
double error_scale(const HostTensor<double>& want) {
  const double floor = 1e-2 * std::sqrt(static_cast<double>(want.data.size()));
  return std::max(norm(want), floor);
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

// The rounding of each adjoint value of a backward step, per unit of its local magnitude
// (gradient_magnitude.h's step_error): 4 x unit roundoff. Calibrated on seeds 200100-200249 (150
// cells, 2476 gradients): with 1 x unit roundoff the largest error / estimate where the estimate
// set the tolerance was 0.18 (seed 200218, d param 6), and 0.54 among all gradients; 4x leaves a
// margin of 7 over that.
double fan_in_step_error(DType dtype) { return (dtype == DType::f32 ? 6e-8 : 1.2e-16) * 4; }

// Compares `got` (the backend) with `want` (f64 reference), each tensor's error relative to its
// error_scale, at the largest of: the depth rule `base`; 4 x the f32 probe's own error (scaled to
// the cell's dtype), for cells ill-conditioned at these arguments; and, for gradients, the
// estimate of gradient_magnitude.h from the magnitude of their terms (`estimates`, parallel to
// `want`, nullptr where there is none), for sums whose terms cancel.
template <class T>
std::optional<std::string> compare(const Flat<T>& got, const Flat<double>& want, const std::vector<Flat<float>>& probes,
                                   const std::vector<const HostTensor<double>*>& estimates, DType dtype,
                                   double base, CheckCounts& counts, double tolerance_scale = 1,
                                   bool explain = false) {
  if (got.tensors.size() != want.tensors.size())
    return "the backend returned " + std::to_string(got.tensors.size()) + " tensors, the reference " +
           std::to_string(want.tensors.size());
  const double dtype_scale = dtype == DType::f32 ? 1.0 : 1.2e-16 / 6e-8;
  for (std::size_t i = 0; i < want.tensors.size(); ++i) {
    const double scale = error_scale(*want.tensors[i]);
    double probe_err = 0;
    for (const auto& probe : probes) probe_err = std::max(probe_err, error_norm(*probe.tensors[i], *want.tensors[i]) / scale);
    if (!std::isfinite(probe_err)) {
      // f32 overflows or changes a NaN pattern where f64 does not: no conditioning estimate, so
      // no comparison (the generator's bounded cells never get here; fuzzed text may).
      ++counts.skipped;
      continue;
    }
    double tol = base;
    const char* rule = "depth";
    if (4 * probe_err * dtype_scale > tol) {
      tol = 4 * probe_err * dtype_scale;
      rule = "f32 probe";
      ++counts.loose;
    }
    const HostTensor<double>* estimate = i < estimates.size() ? estimates[i] : nullptr;
    const double fan_in = estimate ? norm(*estimate) / scale : 0;
    if (fan_in > tol) {
      tol = fan_in;
      rule = "fan-in";
      ++counts.fan_in;
    }
    tol *= tolerance_scale;
    const double err = error_norm(*got.tensors[i], *want.tensors[i]) / scale;
    if (fan_in > base) counts.worst_fan_in_ratio = std::max(counts.worst_fan_in_ratio, err / fan_in);
    ++counts.tensors;
    counts.worst_ratio = std::max(counts.worst_ratio, err / tol);
    if (explain)
      std::printf("  %-20s relative error %-11.3g tolerance %-11.3g (%s; depth rule %.3g, f32 probes %.3g, fan-in %.3g)\n",
                  got.names[i].c_str(), err, tol, rule, base, probe_err, estimate ? fan_in : NAN);
    if (!(err <= tol)) {
      std::ostringstream s;
      s << got.names[i] << ": relative error " << err << " > tolerance " << tol << " (" << rule << "; depth rule "
        << base << ", f32 probe " << probe_err << ", fan-in estimate " << (estimate ? fan_in : NAN)
        << ", rms of the reference "
        << norm(*want.tensors[i]) / std::sqrt(std::max<double>(1, static_cast<double>(want.tensors[i]->data.size())))
        << ")";
      return s.str();
    }
  }
  return std::nullopt;
}

// The f64 parameter gradients of batch row 0 alone (every other row's loss gradients zeroed:
// rows never mix, so this is row 0's share of every parameter gradient), or nothing for a batch
// of 1. A backend that forgot one row of its T*B-row sums would be off by this much.
std::optional<std::vector<HostTensor<double>>> row_zero_parameter_gradients(const BackwardCell& backward,
                                                                           const SequenceArgs<double>& args,
                                                                           LossGradients<double> seeds) {
  const std::int64_t batch = seeds.final_states.empty() ? 0 : seeds.final_states.front().shape.front();
  if (batch < 2) return std::nullopt;
  auto keep_row_zero = [](HostTensor<double>& t, std::int64_t rows_per_block) {
    const auto width = static_cast<std::size_t>(t.shape.back());
    for (std::size_t e = 0; e < t.data.size(); ++e)
      if ((e / width) % static_cast<std::size_t>(rows_per_block) != 0) t.data[e] = 0;
  };
  for (auto& t : seeds.outputs) keep_row_zero(t, batch);
  for (auto& t : seeds.final_states) keep_row_zero(t, batch);
  return reference_bptt(backward, args, seeds).grads.params;
}

// Mutation testing of the check itself: every gradient of a run that passed is spoiled in turn,
// and the check must now fail. Two spoilings: one element (the largest) off by 1e-3 of the
// tensor's norm (its error scale without magnitudes), and a parameter gradient without batch
// row 0's share. Counted with the tolerance rule in use and, for comparison, without the fan-in
// estimates (the depth rule and the f32 probe alone, as before random cells 200218 and 201172).
template <class T>
void count_caught_mutants(const Flat<T>& got, const Flat<double>& want, const std::vector<Flat<float>>& probe,
                          const std::vector<const HostTensor<double>*>& estimates, DType dtype, double base,
                          const std::optional<std::vector<HostTensor<double>>>& row_zero, CheckCounts& counts) {
  CheckCounts scratch;
  const std::vector<const HostTensor<double>*> none(estimates.size(), nullptr);
  auto judge = [&](std::size_t i, const HostTensor<T>& spoiled, MutantCounts& tally) {
    Flat<T> mutant = got;
    mutant.tensors[i] = &spoiled;
    ++tally.made;
    if (compare(mutant, want, probe, estimates, dtype, base, scratch)) ++tally.caught;
    if (compare(mutant, want, probe, none, dtype, base, scratch)) ++tally.caught_by_value_rule;
  };
  std::size_t first_param = want.tensors.size() - (row_zero ? row_zero->size() : 0);
  for (std::size_t i = 0; i < want.tensors.size(); ++i) {
    if (want.names[i].rfind("d ", 0) != 0 || want.tensors[i]->data.empty()) continue;
    const auto& w = want.tensors[i]->data;
    std::size_t largest = 0;
    for (std::size_t e = 1; e < w.size(); ++e)
      if (std::abs(w[e]) > std::abs(w[largest])) largest = e;
    HostTensor<T> spoiled = *got.tensors[i];
    spoiled.data[largest] += static_cast<T>(1e-3 * error_scale(*want.tensors[i]));
    judge(i, spoiled, counts.element_mutants);
    if (row_zero && i >= first_param && norm((*row_zero)[i - first_param]) > 0) {
      spoiled = *got.tensors[i];
      const auto& share = (*row_zero)[i - first_param].data;
      for (std::size_t e = 0; e < share.size(); ++e) spoiled.data[e] -= static_cast<T>(share[e]);
      judge(i, spoiled, counts.row_mutants);
    }
  }
}

// The f32 probe's arguments, each moved by one ulp up or down (a fixed pseudo-random pattern):
// the second probe, the same computation rounded another way. One probe is one sample of the f32
// error, and where one direction dominates it (an error growing over a long sequence: random
// cell 201172, T=17) one sample can be several times smaller than another; the larger of two is
// the conditioning estimate.
SequenceArgs<float> nudged(SequenceArgs<float> args) {
  std::uint64_t random = 0x2545f4914f6cdd1dULL;
  for (auto* list : {&args.inputs, &args.states, &args.params})
    for (auto& t : *list)
      for (float& v : t.data) {
        random ^= random << 13, random ^= random >> 7, random ^= random << 17;
        v = std::nextafter(v, (random >> 11) & 1 ? INFINITY : -INFINITY);
      }
  return args;
}

Failure with_shape(Failure f, std::size_t shape) {
  f.shape = static_cast<int>(shape);
  return f;
}

template <class T>
std::optional<Failure> check_typed(const BackendUnderTest& backend, const Cell& cell, const std::vector<RunShape>& shapes,
                                   const CheckOptions& options, CheckCounts& counts) {
  const DType dtype = cell.graph.dtype();
  const Cell ref_cell = as_f64(cell);
  const Cell probe_cell = as_f32(cell);
  const int depth = cell_depth(cell);
  const std::int64_t batch = shapes.front().batch;
  const std::string& name = backend.name();
  std::unique_ptr<CompiledPrograms> programs;
  try {
    programs = backend.compile(cell, batch, options.forward, options.bptt);
  } catch (const Error& e) {
    return Failure{name + " compile error", e.what()};
  } catch (const std::exception& e) {
    return Failure{name + " compile crash", e.what()};
  }
  if (const std::string errors = programs->take_errors(); !errors.empty())
    return Failure{name + " compile error", "the driver reported: " + errors};
  const bool forward = options.forward, training = options.bptt;
  std::optional<BackwardCell> ref_backward, probe_backward;
  std::optional<MagnitudeStep> magnitude;
  if (options.bptt) {
    ref_backward = differentiate(ref_cell);
    probe_backward = differentiate(probe_cell);
    try {
      magnitude = magnitude_step(*ref_backward);
    } catch (const Error&) {
      // The rewritten step is refused (a shape the rewrite cannot take): no fan-in estimates,
      // counted as without_estimate.
    }
  }
  std::uint64_t seed = options.arg_seed;
  for (std::size_t k = 0; k < shapes.size(); ++k) {
    const RunShape& shape = shapes[k];
    if (shape.batch != batch) throw std::logic_error("check_cell: every shape must have the compiled batch");
    const std::string what = " (T=" + std::to_string(shape.steps) + " B=" + std::to_string(shape.batch) +
                             " args seed " + std::to_string(seed) + ")";
    const auto args = random_sequence_args<T>(cell, shape.steps, shape.batch, seed);
    const auto args64 = convert<T, double>(args);
    const auto args32 = convert<T, float>(args);
    const auto args32_nudged = nudged(args32);
    const double base = base_tolerance(dtype, depth, shape.steps);
    if (forward) {
      const auto want = interpret_sequence(ref_cell, args64);
      if (!all_finite(flatten(want))) return with_shape(Failure{"reference non-finite", "the f64 reference is not finite" + what}, k);
      const auto probe = interpret_sequence(probe_cell, args32);
      const auto probe2 = interpret_sequence(probe_cell, args32_nudged);
      SequenceResult<T> got;
      try {
        got = programs->forward(args);
      } catch (const Error& e) {
        return with_shape(Failure{name + " forward run error", e.what() + what}, k);
      } catch (const std::exception& e) {
        return with_shape(Failure{name + " forward run crash", e.what() + what}, k);
      }
      if (const std::string errors = programs->take_errors(); !errors.empty())
        return with_shape(Failure{name + " forward run error", "the driver reported: " + errors + what}, k);
      ++counts.forward_runs;
      if (options.explain) std::printf("%s forward%s\n", name.c_str(), what.c_str());
      if (auto bad = compare(flatten(got), flatten(want), {flatten(probe), flatten(probe2)}, {}, dtype, base, counts, options.tolerance_scale, options.explain))
        return with_shape(Failure{name + " forward", *bad + what}, k);
    }
    if (training) {
      const auto seeds = random_loss_gradients<T>(cell, shape.steps, shape.batch, seed + 1);
      const auto seeds64 = convert_seeds<T, double>(seeds);
      const auto want = reference_bptt(*ref_backward, args64, seeds64);
      if (!all_finite(flatten(want))) return with_shape(Failure{"reference non-finite", "the f64 reference BPTT is not finite" + what}, k);
      const auto probe = reference_bptt(*probe_backward, args32, convert_seeds<T, float>(seeds));
      const auto probe2 = reference_bptt(*probe_backward, args32_nudged, convert_seeds<T, float>(seeds));
      const std::vector<Flat<float>> probes{flatten(probe), flatten(probe2)};
      BpttResult<T> got;
      try {
        got = programs->bptt(args, seeds);
      } catch (const Error& e) {
        return with_shape(Failure{name + " bptt run error", e.what() + what}, k);
      } catch (const std::exception& e) {
        return with_shape(Failure{name + " bptt run crash", e.what() + what}, k);
      }
      if (const std::string errors = programs->take_errors(); !errors.empty())
        return with_shape(Failure{name + " bptt run error", "the driver reported: " + errors + what}, k);
      ++counts.bptt_runs;
      const auto want_flat = flatten(want);
      std::optional<SequenceGradients<double>> estimates;
      std::vector<const HostTensor<double>*> estimate_of(want_flat.tensors.size(), nullptr);
      if (magnitude) {
        estimates = gradient_error_estimates(*ref_backward, *magnitude, args64, seeds64, fan_in_step_error(dtype));
        const Flat<double> e = flatten_gradients(*estimates);
        std::copy(e.tensors.begin(), e.tensors.end(), estimate_of.end() - static_cast<std::ptrdiff_t>(e.tensors.size()));
        counts.with_estimate += static_cast<std::int64_t>(e.tensors.size());
      } else {
        ++counts.without_estimate;
      }
      const auto got_flat = flatten(got);
      if (options.explain) std::printf("%s bptt%s\n", name.c_str(), what.c_str());
      if (auto bad = compare(got_flat, want_flat, probes, estimate_of, dtype, base, counts, options.tolerance_scale, options.explain))
        return with_shape(Failure{name + " bptt", *bad + what}, k);
      if (options.mutants)
        count_caught_mutants(got_flat, want_flat, probes, estimate_of, dtype, base,
                             row_zero_parameter_gradients(*ref_backward, args64, seeds64), counts);
    }
    seed += kArgSeedStride;
  }
  for (const std::string& plan : programs->loop_plans()) ++counts.loop_plans[plan];
  return std::nullopt;
}

}  // namespace

std::optional<Failure> check_cell(const BackendUnderTest& backend, const Cell& cell, const std::vector<RunShape>& shapes,
                                  const CheckOptions& options, CheckCounts& counts) {
  ++counts.cells;
  try {
    return cell.graph.dtype() == DType::f32 ? check_typed<float>(backend, cell, shapes, options, counts)
                                            : check_typed<double>(backend, cell, shapes, options, counts);
  } catch (const Error& e) {
    return Failure{"reference error", e.what()};
  }
}

std::optional<Failure> check_cpu(const Cell& cell, const std::vector<RunShape>& shapes, const CheckOptions& options,
                                 CheckCounts& counts) {
  return check_cell(*cpu_backend(options.threads), cell, shapes, options, counts);
}

}  // namespace cellfuse::stress
