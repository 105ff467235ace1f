#include "gradient_magnitude.h"

#include <algorithm>
#include <cmath>

#include "copy_node.h"

namespace cellfuse::stress {
namespace {

using Tensor = HostTensor<double>;

// Step t of a [T,B,n] tensor as [B,n], and back.
Tensor at_step(const Tensor& seq, std::int64_t t) {
  Tensor out(std::vector<std::int64_t>(seq.shape.begin() + 1, seq.shape.end()));
  const auto n = static_cast<std::ptrdiff_t>(out.data.size());
  std::copy_n(seq.data.begin() + t * n, n, out.data.begin());
  return out;
}


// into += scale x (sum over rows of a) (b == nullptr: a row sum) or scale x a^T b.
void accumulate_term(Tensor& into, const Tensor& a, const Tensor* b, double scale) {
  const std::int64_t rows = a.shape[0], m = a.shape[1];
  if (!b) {
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t j = 0; j < m; ++j) into.data[static_cast<std::size_t>(j)] += scale * a.data[static_cast<std::size_t>(r * m + j)];
    return;
  }
  const std::int64_t n = b->shape[1];
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t i = 0; i < m; ++i) {
      const double ai = scale * a.data[static_cast<std::size_t>(r * m + i)];
      for (std::int64_t j = 0; j < n; ++j) into.data[static_cast<std::size_t>(i * n + j)] += ai * b->data[static_cast<std::size_t>(r * n + j)];
    }
}

}  // namespace

std::optional<MagnitudeStep> magnitude_step(const BackwardCell& backward) {
  const Cell& step = backward.step;
  const auto& nodes = step.graph.nodes();
  // Adjoints: the output gradients fed in each step, the carried state gradients, and everything
  // computed from them.
  std::vector<bool> adjoint(nodes.size(), false);
  for (std::size_t i = 0; i < step.inputs.size(); ++i)
    if (backward.step_inputs[i].kind == StepInputSource::Kind::OutputGrad) adjoint[step.inputs[i].index] = true;
  for (ValueId s : step.states) adjoint[s.index] = true;

  MagnitudeStep result;
  Cell& out = result.cell;
  out = Cell(step.graph.dtype());
  out.name = step.name + "_magnitude";
  std::vector<ValueId> value(nodes.size());                   // non-adjoint nodes (and leaves), copied
  std::vector<std::optional<ValueId>> magnitude(nodes.size());  // |v| (an adjoint: its magnitude)
  auto absolute = [&](ValueId v) {
    if (!magnitude[v.index]) magnitude[v.index] = out.graph.add_distinct(OpKind::abs, {value[v.index]});
    return *magnitude[v.index];
  };
  for (std::uint32_t i = 0; i < nodes.size(); ++i) {
    const Node& n = nodes[i];
    bool reads_adjoint = false;
    for (ValueId in : n.inputs) reads_adjoint = reads_adjoint || adjoint[in.index];
    if (!reads_adjoint) {
      std::vector<ValueId> inputs;
      for (ValueId in : n.inputs) inputs.push_back(value[in.index]);
      value[i] = copy_node(out, n, std::move(inputs));
      continue;
    }
    adjoint[i] = true;
    std::vector<ValueId> inputs;
    for (ValueId in : n.inputs) inputs.push_back(absolute(in));
    switch (n.op) {
      case OpKind::neg: magnitude[i] = inputs[0]; continue;
      case OpKind::add:
      case OpKind::sub: magnitude[i] = out.graph.add_distinct(OpKind::add, inputs, {}, n.shape); continue;
      case OpKind::div:
        if (adjoint[n.inputs[1].index]) return std::nullopt;  // an adjoint divisor: not linear
        break;
      case OpKind::where:
        if (adjoint[n.inputs[0].index]) return std::nullopt;  // a condition on an adjoint
        inputs[0] = value[n.inputs[0].index];
        break;
      case OpKind::mul:
      case OpKind::linear:
      case OpKind::matmul:
        if (adjoint[n.inputs[0].index] && adjoint[n.inputs[1].index]) return std::nullopt;  // quadratic in the adjoints
        break;
      case OpKind::cat:
      case OpKind::slice:
      case OpKind::expand:
      case OpKind::broadcast:
      case OpKind::sum:
      case OpKind::mean: break;
      default: return std::nullopt;  // tanh, max, comparisons ... of an adjoint: not linear in it
    }
    magnitude[i] = out.graph.add_distinct(n.op, inputs, n.attrs, n.shape);
  }
  for (const auto& o : step.outputs) {
    out.outputs.push_back({o.name, absolute(o.value)});
    result.adjoint_output.push_back(adjoint[o.value.index]);
  }
  // A parameter term may read a step input directly (dW += dZ^T x reads the forward input x).
  result.terms = backward.param_terms;
  auto as_output = [&](StepValue& v) {
    if (v.kind != StepValue::Kind::Input) return;
    out.outputs.push_back({"magnitude_of_input_" + std::to_string(v.index),
                           absolute(step.inputs[static_cast<std::size_t>(v.index)])});
    v = StepValue{StepValue::Kind::Output, static_cast<int>(out.outputs.size()) - 1};
  };
  for (ParamGradTerm& term : result.terms) {
    as_output(term.a);
    if (term.kind == ParamGradTerm::Kind::GemmAtB) as_output(term.b);
  }
  result.first_state_output = out.outputs.size();
  for (std::size_t s = 0; s < step.states.size(); ++s) {
    out.outputs.push_back({"magnitude_of_next_state_" + std::to_string(s), absolute(step.next_states[s])});
    out.next_states.push_back(value[step.states[s].index]);  // unused: the true step carries g
  }
  return result;
}

SequenceGradients<double> gradient_error_estimates(const BackwardCell& backward, const MagnitudeStep& magnitude,
                                                   const SequenceArgs<double>& args,
                                                   const LossGradients<double>& seeds, double step_error) {
  const Cell& f = backward.forward;
  std::int64_t steps = args.steps;
  if (!args.inputs.empty()) steps = args.inputs[0].shape[0];
  const auto T = static_cast<std::size_t>(steps);

  // The forward, keeping each step's starting states and saves (as reference_bptt does).
  std::vector<std::vector<Tensor>> states_at(T), saves_at(T);
  StepArgs<double> fwd{{}, args.states, args.params};
  for (std::int64_t t = 0; t < steps; ++t) {
    fwd.inputs.clear();
    for (const auto& x : args.inputs) fwd.inputs.push_back(at_step(x, t));
    StepResult<double> r = interpret_step(f, fwd);
    for (int o : backward.saved_outputs) saves_at[static_cast<std::size_t>(t)].push_back(r.outputs[static_cast<std::size_t>(o)]);
    states_at[static_cast<std::size_t>(t)] = std::move(fwd.states);
    fwd.states = std::move(r.next_states);
  }
  auto step_inputs_at = [&](std::int64_t t) {
    std::vector<Tensor> in;
    const auto ts = static_cast<std::size_t>(t);
    for (const StepInputSource& s : backward.step_inputs) {
      const auto i = static_cast<std::size_t>(s.index);
      switch (s.kind) {
        case StepInputSource::Kind::ForwardInput: in.push_back(at_step(args.inputs[i], t)); break;
        case StepInputSource::Kind::ForwardState: in.push_back(states_at[ts][i]); break;
        case StepInputSource::Kind::Saved: in.push_back(saves_at[ts][i]); break;
        case StepInputSource::Kind::OutputGrad: in.push_back(at_step(seeds.outputs[i], t)); break;
      }
    }
    return in;
  };

  // The seeds are exact: the error runs feed zeros for them and the error as the state.
  auto without_seeds = [&](std::vector<Tensor> in) {
    for (std::size_t i = 0; i < in.size(); ++i)
      if (backward.step_inputs[i].kind == StepInputSource::Kind::OutputGrad) std::fill(in[i].data.begin(), in[i].data.end(), 0.0);
    return in;
  };
  std::uint64_t random = 0x9e3779b97f4a7c15ULL;
  auto sign = [&] {  // xorshift64: a fixed sequence, so that a seed's check is reproducible
    random ^= random << 13, random ^= random >> 7, random ^= random << 17;
    return (random >> 11) & 1 ? 1.0 : -1.0;
  };
  auto zeros_like = [](const std::vector<Tensor>& list) {
    std::vector<Tensor> out;
    for (const auto& t : list) out.emplace_back(t.shape);
    return out;
  };
  // A value's own rounding, one sample: step_error x its magnitude x a random sign per element.
  auto add_rounding = [&](Tensor& error, const Tensor& mag) {
    for (std::size_t e = 0; e < error.data.size(); ++e) error.data[e] += step_error * mag.data[e] * sign();
  };

  constexpr int kSamples = 3;
  std::vector<std::vector<Tensor>> state_error(kSamples, zeros_like(seeds.final_states));
  std::vector<SequenceGradients<double>> sample(kSamples);
  for (auto& smp : sample) {
    smp.inputs = zeros_like(args.inputs);
    smp.params = zeros_like(args.params);
  }
  std::vector<Tensor> sum_rounding = zeros_like(args.params);  // the rounding of the T*B-row sums
  std::vector<Tensor> g = seeds.final_states;                  // the true gradient flowing into step t
  for (std::int64_t t = steps - 1; t >= 0; --t) {
    const std::vector<Tensor> inputs = step_inputs_at(t);
    const StepResult<double> mag = interpret_step(magnitude.cell, StepArgs<double>{inputs, g, args.params});
    StepResult<double> next = interpret_step(backward.step, StepArgs<double>{inputs, g, args.params});
    const std::vector<Tensor> error_inputs = without_seeds(inputs);
    auto operand = [&](const StepResult<double>& r, const StepValue& v) -> const Tensor& {
      return v.kind == StepValue::Kind::Input ? inputs[static_cast<std::size_t>(v.index)]
                                              : r.outputs[static_cast<std::size_t>(v.index)];
    };
    for (std::size_t k = 0; k < magnitude.terms.size(); ++k) {
      const ParamGradTerm& term = magnitude.terms[k];
      const Tensor& am = mag.outputs[static_cast<std::size_t>(term.a.index)];
      const Tensor* bm = term.kind == ParamGradTerm::Kind::GemmAtB ? &mag.outputs[static_cast<std::size_t>(term.b.index)] : nullptr;
      accumulate_term(sum_rounding[static_cast<std::size_t>(term.param)], am, bm, step_error);
    }
    for (int k = 0; k < kSamples; ++k) {
      // The error flowing in, carried through this step exactly (the step is linear in it) ...
      StepResult<double> carried = interpret_step(backward.step, StepArgs<double>{error_inputs, state_error[k], args.params});
      // ... plus each output's own rounding.
      for (std::size_t o = 0; o < carried.outputs.size(); ++o)
        if (magnitude.adjoint_output[o]) add_rounding(carried.outputs[o], mag.outputs[o]);
      for (std::size_t i = 0; i < sample[k].inputs.size(); ++i) {
        const auto& d = carried.outputs[i].data;
        std::copy(d.begin(), d.end(), sample[k].inputs[i].data.begin() + static_cast<std::ptrdiff_t>(t) * static_cast<std::ptrdiff_t>(d.size()));
      }
      for (std::size_t p = 0; p < backward.param_terms.size(); ++p) {
        const ParamGradTerm& term = backward.param_terms[p];
        Tensor& into = sample[k].params[static_cast<std::size_t>(term.param)];
        const auto error_of = [&](const StepValue& v) -> std::optional<Tensor> {
          if (v.kind == StepValue::Kind::Input || !magnitude.adjoint_output[static_cast<std::size_t>(v.index)]) return std::nullopt;
          return carried.outputs[static_cast<std::size_t>(v.index)];
        };
        const auto a_error = error_of(term.a);
        if (term.kind == ParamGradTerm::Kind::RowSum) {
          if (a_error) accumulate_term(into, *a_error, nullptr, 1.0);
          continue;
        }
        const auto b_error = error_of(term.b);  // first order: da b + a db
        if (a_error) accumulate_term(into, *a_error, &operand(next, term.b), 1.0);
        if (b_error) accumulate_term(into, operand(next, term.a), &*b_error, 1.0);
      }
      for (std::size_t st = 0; st < state_error[k].size(); ++st) {
        state_error[k][st] = std::move(carried.next_states[st]);
        add_rounding(state_error[k][st], mag.outputs[magnitude.first_state_output + st]);
      }
    }
    g = std::move(next.next_states);
  }
  // The estimate: per element, the largest of the samples (and for parameters the rounding of
  // the final sums on top).
  SequenceGradients<double> bound;
  bound.inputs = zeros_like(args.inputs);
  bound.params = std::move(sum_rounding);
  bound.states = zeros_like(seeds.final_states);
  auto take_largest = [](std::vector<Tensor>& into, const std::vector<Tensor>& from) {
    for (std::size_t i = 0; i < into.size(); ++i)
      for (std::size_t e = 0; e < into[i].data.size(); ++e)
        into[i].data[e] = std::max(into[i].data[e], std::abs(from[i].data[e]));
  };
  std::vector<Tensor> param_samples = zeros_like(args.params);
  for (int k = 0; k < kSamples; ++k) {
    take_largest(bound.inputs, sample[k].inputs);
    take_largest(bound.states, state_error[k]);
    take_largest(param_samples, sample[k].params);
  }
  for (std::size_t p = 0; p < bound.params.size(); ++p)
    for (std::size_t e = 0; e < bound.params[p].data.size(); ++e) bound.params[p].data[e] += param_samples[p].data[e];
  return bound;
}

}  // namespace cellfuse::stress
