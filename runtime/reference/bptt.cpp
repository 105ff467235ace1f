#include "runtime/reference/bptt.h"

#include <algorithm>
#include <string>

#include "compiler/ir/error.h"
#include "runtime/random_args.h"

namespace cellfuse {
namespace {

template <class T>
using Tensor = HostTensor<T>;

using Dims = std::vector<std::int64_t>;


template <class T>
void check(const std::string& what, const Tensor<T>& t, const Dims& want) {
  std::int64_t n = 1;
  for (auto d : want) n *= d;
  if (t.shape != want || t.numel() != n)
    throw Error("reference_bptt: " + what + ": expected a tensor of shape " + shape_string(want) +
                " (" + std::to_string(n) + " values), got " + shape_string(t.shape) + " (" +
                std::to_string(t.numel()) + " values)");
}

void check_count(const std::string& what, std::size_t want, std::size_t got) {
  if (want != got)
    throw Error("reference_bptt: the cell has " + std::to_string(want) + " " + what + " but " +
                std::to_string(got) + " were given");
}

// Step t of a [T,B,n] tensor, as a [B,n] tensor.
template <class T>
Tensor<T> at_step(const Tensor<T>& seq, std::int64_t t) {
  Tensor<T> out(Dims(seq.shape.begin() + 1, seq.shape.end()));
  const auto n = static_cast<std::ptrdiff_t>(out.data.size());
  std::copy_n(seq.data.begin() + t * n, n, out.data.begin());
  return out;
}

template <class T>
void put_step(Tensor<T>& seq, std::int64_t t, const Tensor<T>& value) {
  const auto n = static_cast<std::ptrdiff_t>(value.data.size());
  std::copy_n(value.data.begin(), n, seq.data.begin() + t * n);
}

std::string leaf(const Cell& c, ValueId v) { return std::string(c.leaf_name(v)); }

}  // namespace

template <class T>
BpttResult<T> reference_bptt(const BackwardCell& bw, const SequenceArgs<T>& args,
                             const LossGradients<T>& seeds) {
  const Cell& f = bw.forward;
  const Graph& g = f.graph;
  const auto user_outputs = static_cast<std::size_t>(bw.user_outputs);
  check_count("input(s)", f.inputs.size(), args.inputs.size());
  check_count("state(s)", f.states.size(), args.states.size());
  check_count("param(s)", f.params.size(), args.params.size());
  check_count("output gradient(s)", user_outputs, seeds.outputs.size());
  check_count("final state gradient(s)", f.states.size(), seeds.final_states.size());

  std::int64_t steps = args.steps;
  if (!args.inputs.empty() && !args.inputs[0].shape.empty()) steps = args.inputs[0].shape[0];
  if (steps < 0)
    throw Error("reference_bptt: cannot tell the sequence length: give steps or per-step inputs");
  std::int64_t batch = -1;
  if (!args.inputs.empty() && args.inputs[0].shape.size() >= 2)
    batch = args.inputs[0].shape[1];
  else if (!args.states.empty() && !args.states[0].shape.empty())
    batch = args.states[0].shape[0];
  else if (!seeds.outputs.empty() && seeds.outputs[0].shape.size() >= 2)
    batch = seeds.outputs[0].shape[1];
  if (batch < 0) throw Error("reference_bptt: cannot tell the batch size");

  for (std::size_t i = 0; i < f.inputs.size(); ++i)
    check("input %" + leaf(f, f.inputs[i]), args.inputs[i],
          tensor_dims(g.node(f.inputs[i]).shape, batch, steps));
  for (std::size_t i = 0; i < f.states.size(); ++i) {
    Dims want = tensor_dims(g.node(f.states[i]).shape, batch);
    check("state %" + leaf(f, f.states[i]), args.states[i], want);
    check("gradient of final state %" + leaf(f, f.states[i]), seeds.final_states[i], want);
  }
  for (std::size_t i = 0; i < f.params.size(); ++i)
    check("param %" + leaf(f, f.params[i]), args.params[i],
          tensor_dims(g.node(f.params[i]).shape, batch));
  for (std::size_t o = 0; o < user_outputs; ++o)
    check("gradient of output " + f.outputs[o].name, seeds.outputs[o],
          tensor_dims(g.node(f.outputs[o].value).shape, batch, steps));

  BpttResult<T> result;
  const auto T_ = static_cast<std::size_t>(steps);

  // Forward, keeping every step's starting states and saves.
  std::vector<std::vector<Tensor<T>>> states_at(T_), saves_at(T_);
  for (std::size_t o = 0; o < user_outputs; ++o)
    result.forward.outputs.emplace_back(tensor_dims(g.node(f.outputs[o].value).shape, batch, steps));
  StepArgs<T> fwd{{}, args.states, args.params};
  for (std::int64_t t = 0; t < steps; ++t) {
    fwd.inputs.clear();
    for (const auto& x : args.inputs) fwd.inputs.push_back(at_step(x, t));
    StepResult<T> r = interpret_step(f, fwd);
    for (std::size_t o = 0; o < user_outputs; ++o)
      put_step(result.forward.outputs[o], t, r.outputs[o]);
    for (int o : bw.saved_outputs)
      saves_at[static_cast<std::size_t>(t)].push_back(r.outputs[static_cast<std::size_t>(o)]);
    states_at[static_cast<std::size_t>(t)] = std::move(fwd.states);
    fwd.states = std::move(r.next_states);
  }
  result.forward.final_states = fwd.states;

  // The backward step's inputs at step t, as step_inputs says.
  auto step_inputs_at = [&](std::int64_t t) {
    std::vector<Tensor<T>> in;
    const auto ts = static_cast<std::size_t>(t);
    for (const StepInputSource& s : bw.step_inputs) {
      const auto i = static_cast<std::size_t>(s.index);
      switch (s.kind) {
        case StepInputSource::Kind::ForwardInput:
          in.push_back(at_step(args.inputs[i], t));
          break;
        case StepInputSource::Kind::ForwardState:
          in.push_back(states_at[ts][i]);
          break;
        case StepInputSource::Kind::Saved:
          in.push_back(saves_at[ts][i]);
          break;
        case StepInputSource::Kind::OutputGrad:
          in.push_back(at_step(seeds.outputs[i], t));
          break;
      }
    }
    return in;
  };

  // Backward, in reverse over t; the gradient states start from the final states' gradients.
  SequenceGradients<T>& grads = result.grads;
  for (std::size_t i = 0; i < f.inputs.size(); ++i) grads.inputs.emplace_back(args.inputs[i].shape);
  std::vector<std::vector<Tensor<T>>> step_outputs(T_);
  StepArgs<T> bwd{{}, seeds.final_states, args.params};
  for (std::int64_t t = steps - 1; t >= 0; --t) {
    bwd.inputs = step_inputs_at(t);
    StepResult<T> r = interpret_step(bw.step, bwd);
    for (std::size_t i = 0; i < f.inputs.size(); ++i) put_step(grads.inputs[i], t, r.outputs[i]);
    step_outputs[static_cast<std::size_t>(t)] = std::move(r.outputs);
    bwd.states = std::move(r.next_states);
  }
  grads.states = std::move(bwd.states);

  // Parameter gradients from the terms, over every row of every step (accumulated in double).
  std::vector<std::vector<double>> acc;
  for (const auto& p : args.params) acc.emplace_back(p.data.size(), 0.0);
  for (std::int64_t t = 0; t < steps; ++t) {
    std::vector<Tensor<T>> inputs = step_inputs_at(t);
    const auto& outputs = step_outputs[static_cast<std::size_t>(t)];
    auto value = [&](const StepValue& v) -> const Tensor<T>& {
      return v.kind == StepValue::Kind::Input ? inputs[static_cast<std::size_t>(v.index)]
                                              : outputs[static_cast<std::size_t>(v.index)];
    };
    for (const ParamGradTerm& term : bw.param_terms) {
      const auto p = static_cast<std::size_t>(term.param);
      const Tensor<T>& a = value(term.a);
      const std::int64_t m = a.shape[1];
      if (term.kind == ParamGradTerm::Kind::RowSum) {
        if (static_cast<std::int64_t>(acc[p].size()) != m)
          throw InternalError("reference_bptt: a row-sum term does not fit its parameter");
        for (std::int64_t r = 0; r < batch; ++r)
          for (std::int64_t j = 0; j < m; ++j)
            acc[p][static_cast<std::size_t>(j)] +=
                static_cast<double>(a.data[static_cast<std::size_t>(r * m + j)]);
      } else {
        const Tensor<T>& b = value(term.b);
        const std::int64_t n = b.shape[1];
        if (static_cast<std::int64_t>(acc[p].size()) != m * n)
          throw InternalError("reference_bptt: a GEMM term does not fit its parameter");
        for (std::int64_t r = 0; r < batch; ++r)
          for (std::int64_t i = 0; i < m; ++i)
            for (std::int64_t j = 0; j < n; ++j)
              acc[p][static_cast<std::size_t>(i * n + j)] +=
                  static_cast<double>(a.data[static_cast<std::size_t>(r * m + i)]) *
                  static_cast<double>(b.data[static_cast<std::size_t>(r * n + j)]);
      }
    }
  }
  for (std::size_t p = 0; p < args.params.size(); ++p) {
    Tensor<T> d(args.params[p].shape);
    for (std::size_t k = 0; k < d.data.size(); ++k) d.data[k] = static_cast<T>(acc[p][k]);
    grads.params.push_back(std::move(d));
  }
  return result;
}

template <class T>
LossGradients<T> random_loss_gradients(const Cell& cell, std::int64_t steps, std::int64_t batch,
                                       std::uint64_t seed) {
  if (steps < 0 || batch < 1)
    throw Error(
        "loss gradients: the sequence length must be at least 0 and the batch at least 1 (got T=" +
        std::to_string(steps) + ", B=" + std::to_string(batch) + ")");
  // A stream of its own: the first digits of sqrt(2), added to the seed.
  SplitMix64 rng(seed + 0x6a09e667f3bcc908ULL);
  auto fill = [&](Dims dims) {
    Tensor<T> t(std::move(dims));
    for (auto& v : t.data) v = static_cast<T>(rng.uniform(-1.0, 1.0));
    return t;
  };
  LossGradients<T> seeds;
  for (const auto& o : cell.outputs)
    seeds.outputs.push_back(fill(tensor_dims(cell.graph.node(o.value).shape, batch, steps)));
  for (ValueId s : cell.states)
    seeds.final_states.push_back(fill(tensor_dims(cell.graph.node(s).shape, batch)));
  return seeds;
}

template <class T>
double gradient_checksum(const SequenceGradients<T>& grads) {
  double sum = 0;
  for (const auto* group : {&grads.inputs, &grads.states, &grads.params})
    for (const auto& t : *group)
      for (T v : t.data) sum += static_cast<double>(v);
  return sum;
}

template BpttResult<float> reference_bptt(const BackwardCell&, const SequenceArgs<float>&,
                                          const LossGradients<float>&);
template BpttResult<double> reference_bptt(const BackwardCell&, const SequenceArgs<double>&,
                                           const LossGradients<double>&);
template LossGradients<float> random_loss_gradients(const Cell&, std::int64_t, std::int64_t,
                                                    std::uint64_t);
template LossGradients<double> random_loss_gradients(const Cell&, std::int64_t, std::int64_t,
                                                     std::uint64_t);
template double gradient_checksum(const SequenceGradients<float>&);
template double gradient_checksum(const SequenceGradients<double>&);

}  // namespace cellfuse
