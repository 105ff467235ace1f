#include "runtime/cpu/cpu_bptt.h"

#include <cblas.h>

#include <chrono>
#include <map>
#include <mutex>
#include <tuple>

#include "compiler/ir/error.h"
#include "runtime/cpu/cpu_cell.h"

namespace cellfuse {
namespace {

void gemm_at_b(const float* a, const float* b, float* out, std::int64_t m, std::int64_t n, std::int64_t rows) {
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<blasint>(m), static_cast<blasint>(n),
              static_cast<blasint>(rows), 1.0f, a, static_cast<blasint>(m), b, static_cast<blasint>(n), 1.0f, out,
              static_cast<blasint>(n));
}
void gemm_at_b(const double* a, const double* b, double* out, std::int64_t m, std::int64_t n, std::int64_t rows) {
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<blasint>(m), static_cast<blasint>(n),
              static_cast<blasint>(rows), 1.0, a, static_cast<blasint>(m), b, static_cast<blasint>(n), 1.0, out,
              static_cast<blasint>(n));
}


}  // namespace

struct CpuBptt::Impl {
  BackwardCell backward;
  // The forward with saves, plus one output per state: the state each step starts from.
  Cell forward;
  int first_state_output = 0;
  std::unique_ptr<CpuCell> forward_cell, backward_step;
  std::int64_t batch = 0;
  double compile_ms = 0;
};

CpuBptt::CpuBptt(const Cell& cell, std::int64_t batch, int threads) : impl_(std::make_unique<Impl>()) {
  auto start = std::chrono::steady_clock::now();
  Impl& m = *impl_;
  m.batch = batch;
  m.backward = differentiate(cell);
  m.forward = m.backward.forward;
  m.first_state_output = static_cast<int>(m.forward.outputs.size());
  for (std::size_t s = 0; s < m.forward.states.size(); ++s) {
    std::string name = "state_at_step_" + std::to_string(s);
    for (bool taken = true; taken;) {
      taken = false;
      for (const auto& o : m.forward.outputs) taken = taken || o.name == name;
      if (taken) name = "_" + name;
    }
    m.forward.add_output(name, m.forward.states[s]);
  }
  m.forward_cell = std::make_unique<CpuCell>(m.forward, batch, threads);
  m.backward_step = std::make_unique<CpuCell>(m.backward.step, batch, threads);
  m.compile_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

CpuBptt::~CpuBptt() = default;

const BackwardCell& CpuBptt::backward_cell() const { return impl_->backward; }
double CpuBptt::compile_ms() const { return impl_->compile_ms; }

std::string CpuBptt::describe() const {
  return print_backward(impl_->backward) + "\n# forward\n" + impl_->forward_cell->describe() +
         "\n# backward step\n" + impl_->backward_step->describe();
}

template <class T>
BpttResult<T> CpuBptt::run(const SequenceArgs<T>& args, const LossGradients<T>& seeds) const {
  const Impl& m = *impl_;
  const BackwardCell& bc = m.backward;
  const Cell& fwd = m.forward;
  const Cell& step = bc.step;
  const std::int64_t B = m.batch;

  SequenceResult<T> forward;
  m.forward_cell->run_into(args, forward);
  const std::int64_t steps = forward.outputs.empty() ? args.steps : forward.outputs[0].shape[0];
  if (seeds.outputs.size() != static_cast<std::size_t>(bc.user_outputs) || seeds.final_states.size() != fwd.states.size())
    throw Error("CPU backward: expected gradients for " + std::to_string(bc.user_outputs) + " output(s) and " +
                std::to_string(fwd.states.size()) + " final state(s)");
  for (std::size_t o = 0; o < seeds.outputs.size(); ++o)
    if (seeds.outputs[o].shape != forward.outputs[o].shape)
      throw Error("CPU backward: the gradient of output '" + fwd.outputs[o].name + "' is " +
                  shape_string(seeds.outputs[o].shape) + " but the output is " + shape_string(forward.outputs[o].shape));
  for (std::size_t s = 0; s < seeds.final_states.size(); ++s)
    if (seeds.final_states[s].shape != forward.final_states[s].shape)
      throw Error("CPU backward: the gradient of final state %" + std::string(fwd.leaf_name(fwd.states[s])) + " is " +
                  shape_string(seeds.final_states[s].shape) + " but the state is " +
                  shape_string(forward.final_states[s].shape));

  // The backward step's arguments, all borrowed: the forward's inputs, its states at every step,
  // its saves, and the loss gradients.
  SequenceView<T> view;
  view.steps = steps;
  view.reverse = true;
  for (const auto& source : bc.step_inputs) {
    switch (source.kind) {
      case StepInputSource::Kind::ForwardInput: view.inputs.push_back(args.inputs[source.index].data.data()); break;
      case StepInputSource::Kind::ForwardState:
        view.inputs.push_back(forward.outputs[m.first_state_output + source.index].data.data());
        break;
      case StepInputSource::Kind::Saved:
        view.inputs.push_back(forward.outputs[bc.saved_outputs[source.index]].data.data());
        break;
      case StepInputSource::Kind::OutputGrad: view.inputs.push_back(seeds.outputs[source.index].data.data()); break;
    }
  }
  for (const auto& s : seeds.final_states) view.states.push_back(s.data.data());
  for (const auto& p : args.params) view.params.push_back(p.data.data());
  std::vector<HostTensor<T>> step_outputs;
  for (const auto& o : step.outputs)
    step_outputs.emplace_back(std::vector<std::int64_t>{steps, B, step.graph.node(o.value).shape.features()});
  for (auto& o : step_outputs) view.outputs.push_back(o.data.data());
  BpttResult<T> result;
  for (ValueId s : fwd.states) result.grads.states.emplace_back(tensor_dims(fwd.graph.node(s).shape, B));
  for (auto& s : result.grads.states) view.final_states.push_back(s.data.data());
  m.backward_step->run_view(view);

  for (std::size_t i = 0; i < fwd.inputs.size(); ++i) result.grads.inputs.push_back(std::move(step_outputs[i]));
  // Parameter gradients: one product or one column sum over all T*B rows per term.
  auto value = [&](const StepValue& v) -> const T* {
    return v.kind == StepValue::Kind::Input ? view.inputs[v.index] : view.outputs[v.index];
  };
  auto width = [&](const StepValue& v) {
    ValueId id = v.kind == StepValue::Kind::Input ? step.inputs[v.index] : step.outputs[v.index].value;
    return step.graph.node(id).shape.features();
  };
  for (ValueId p : fwd.params) result.grads.params.emplace_back(tensor_dims(fwd.graph.node(p).shape, B));
  const std::int64_t rows = steps * B;
  for (const ParamGradTerm& term : bc.param_terms) {
    T* out = result.grads.params[term.param].data.data();
    const T* a = value(term.a);
    const std::int64_t n = width(term.a);
    if (rows == 0) continue;
    if (term.kind == ParamGradTerm::Kind::RowSum) {
      for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t c = 0; c < n; ++c) out[c] += a[r * n + c];
    } else {
      gemm_at_b(a, value(term.b), out, n, width(term.b), rows);
    }
  }
  result.forward.outputs.assign(std::make_move_iterator(forward.outputs.begin()),
                                std::make_move_iterator(forward.outputs.begin() + bc.user_outputs));
  result.forward.final_states = std::move(forward.final_states);
  return result;
}

template BpttResult<float> CpuBptt::run(const SequenceArgs<float>&, const LossGradients<float>&) const;
template BpttResult<double> CpuBptt::run(const SequenceArgs<double>&, const LossGradients<double>&) const;

std::shared_ptr<const CpuBptt> compile_cpu_bptt(const Cell& cell, std::int64_t batch) {
  static std::mutex mutex;
  static std::map<std::tuple<std::uint64_t, std::int64_t, int>, std::shared_ptr<const CpuBptt>> cache;
  auto key = std::make_tuple(cell_hash(cell), batch, static_cast<int>(cell.graph.dtype()));
  std::lock_guard<std::mutex> lock(mutex);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  auto compiled = std::make_shared<const CpuBptt>(cell, batch);
  cache[key] = compiled;
  return compiled;
}

}  // namespace cellfuse
