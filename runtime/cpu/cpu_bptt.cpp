#include "runtime/cpu/cpu_bptt.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>
#include <tuple>
#include <type_traits>

#include "compiler/ir/error.h"
#include "runtime/bptt_driver.h"
#include "runtime/cpu/blas.h"
#include "runtime/cpu/cpu_cell.h"
#include "runtime/cpu/team.h"
#include "runtime/profile/recorder.h"
#include "runtime/sequence_check.h"

namespace cellfuse {
namespace {

// A parameter's row sum below this many elements runs on the caller: waking the team costs more.
constexpr std::int64_t kMinSharedSum = 64 * 1024;

// Arrays kept between calls, one set for f32 runs and one for f64 runs.
struct ArraysPerType {
  std::vector<std::vector<float>> f32;
  std::vector<std::vector<double>> f64;
  template <class T>
  std::vector<std::vector<T>>& of() {
    if constexpr (std::is_same_v<T, float>) return f32;
    else return f64;
  }
};

// The profiler's call sites of the parameter-gradient products, registered once per recorder
// and shape.
class ParamGradSites {
 public:
  int a_t_b(profile::Recorder& rec, std::int64_t m, std::int64_t n, std::int64_t rows, std::size_t elem) {
    const double r = static_cast<double>(rows), dm = static_cast<double>(m), dn = static_cast<double>(n);
    return site(rec, {"param grad A^T B [" + std::to_string(m) + " x " + std::to_string(n) + "]", "param grads",
                      profile::CallKind::Gemm, 2 * r * dm * dn, (r * (dm + dn) + dm * dn) * static_cast<double>(elem)});
  }
  int column_sum(profile::Recorder& rec, std::int64_t n, std::int64_t rows, std::size_t elem) {
    const double r = static_cast<double>(rows), dn = static_cast<double>(n);
    return site(rec, {"param grad column sum [" + std::to_string(n) + "]", "param grads", profile::CallKind::Kernel, r * dn,
                      (r * dn + dn) * static_cast<double>(elem)});
  }

 private:
  int site(profile::Recorder& rec, profile::CallSite s) {
    if (generation_ != rec.generation()) ids_.clear(), generation_ = rec.generation();
    const std::string key = s.name + "/" + std::to_string(s.flops);
    if (auto it = ids_.find(key); it != ids_.end()) return it->second;
    return ids_[key] = rec.add_site(std::move(s));
  }
  std::uint64_t generation_ = 0;
  std::map<std::string, int> ids_;
};

// The parameter-gradient primitives of the shared BPTT driver on the CPU, on the cells' team.
template <class T>
class CpuParamGradients : public ParamGradientKernels<const T*, T*> {
 public:
  CpuParamGradients(cpu::Team& team, ParamGradSites& sites) : team_(team), sites_(sites) {}
  void zero(T* out, std::int64_t elements) override { std::fill(out, out + elements, T(0)); }
  void a_t_b(T* out, const T* a, const T* b, std::int64_t m, std::int64_t n, std::int64_t rows, bool accumulate) override {
    profile::Recorder* rec = profile::active();
    const std::int64_t begin = rec ? profile::Recorder::now_ns() : 0;
    if (!accumulate) zero(out, m * n);
    {
      std::lock_guard<std::mutex> lock(team_.user_mutex());
      cpu::gemm_at_b(team_, a, b, out, m, n, rows);
    }
    if (rec) rec->call(sites_.a_t_b(*rec, m, n, rows, sizeof(T)), begin, profile::Recorder::now_ns());
  }
  void column_sum(T* out, const T* a, std::int64_t n, std::int64_t rows, bool accumulate) override {
    profile::Recorder* rec = profile::active();
    const std::int64_t begin = rec ? profile::Recorder::now_ns() : 0;
    column_sum_untimed(out, a, n, rows, accumulate);
    if (rec) rec->call(sites_.column_sum(*rec, n, rows, sizeof(T)), begin, profile::Recorder::now_ns());
  }

 private:
  void column_sum_untimed(T* out, const T* a, std::int64_t n, std::int64_t rows, bool accumulate) {
    if (!accumulate) zero(out, n);
    // Columns shared among the team (16 at a time), each summed over the rows in order: the
    // same result whatever the team's size.
    auto sum_columns = [&](std::int64_t c0, std::int64_t c1) {
      for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t c = c0; c < c1; ++c) out[c] += a[r * n + c];
    };
    const std::int64_t groups = (n + 15) / 16;
    if (rows * n < kMinSharedSum || groups < 2 || team_.size() == 1) {
      sum_columns(0, n);
      return;
    }
    std::lock_guard<std::mutex> lock(team_.user_mutex());
    team_.run([&](int member, int count) {
      sum_columns(std::min(n, groups * member / count * 16), std::min(n, groups * (member + 1) / count * 16));
    });
  }

  cpu::Team& team_;
  ParamGradSites& sites_;
};

}  // namespace

struct CpuBptt::Impl {
  BackwardCell backward;
  // The forward with saves, plus one output per state: the state each step starts from.
  Cell forward;
  int first_state_output = 0;
  std::unique_ptr<CpuCell> forward_cell, backward_step;
  // The parameter gradients' products, shared like the cells' GEMMs (OpenBLAS is kept to one
  // thread; left to it, these large products ran on one core): the cells' team.
  std::shared_ptr<cpu::Team> team;
  // The backward step's outputs that only feed parameter gradients ([T*B, cols] each), kept from
  // one backward to the next: fresh arrays of this size cost a page fault per 4 KB every call.
  mutable std::mutex scratch_mutex;
  mutable ArraysPerType scratch;
  mutable ParamGradSites param_grad_sites;  // under scratch_mutex
  // run()'s tape, kept from one call to the next like the scratch above.
  mutable std::mutex tape_mutex;
  mutable ArraysPerType tape;
  std::int64_t batch = 0;
  double compile_ms = 0;
};

CpuBptt::CpuBptt(const Cell& cell, std::int64_t batch, int threads) : impl_(std::make_unique<Impl>()) {
  auto start = std::chrono::steady_clock::now();
  Impl& m = *impl_;
  m.batch = batch;
  TargetOptions options;
  options.target = Target::Cpu;
  options.batch = batch;
  options.threads = threads;
  options.training = true;
  CompiledCell compiled = compile(cell, options);
  if (profile::Recorder* rec = profile::active()) rec->compile_log(compiled.log, cell.name + " (training)");
  m.backward = std::move(*compiled.backward);
  m.forward = forward_with_tape(m.backward);
  m.first_state_output = static_cast<int>(m.forward.outputs.size() - m.forward.states.size());
  m.forward_cell = std::make_unique<CpuCell>(std::move(compiled.forward), compiled.options);
  m.backward_step = std::make_unique<CpuCell>(std::move(*compiled.backward_step), compiled.options);
  m.team = cpu::shared_team(m.backward_step->threads());
  m.compile_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

CpuBptt::~CpuBptt() = default;

const BackwardCell& CpuBptt::backward_cell() const { return impl_->backward; }
double CpuBptt::compile_ms() const { return impl_->compile_ms; }

std::string CpuBptt::describe() const {
  return print_backward(impl_->backward) + "\n# forward\n" + impl_->forward_cell->describe() +
         "\n# backward step\n" + impl_->backward_step->describe();
}

std::vector<std::int64_t> CpuBptt::tape_widths() const { return cellfuse::tape_widths(impl_->backward); }

template <class T>
void CpuBptt::forward_view(const TrainingView<T>& v) const {
  profile::PhaseScope phase(profile::Phase::Forward);
  impl_->forward_cell->run_view(forward_sequence(impl_->backward, v, "CPU training forward"));
}

template <class T>
void CpuBptt::backward_view(const TrainingView<T>& v) const {
  const Impl& m = *impl_;
  const BackwardCell& bc = m.backward;
  const Cell& fwd = m.forward;
  const Cell& step = bc.step;
  profile::PhaseScope phase(profile::Phase::Backward);
  profile::SpanTimer pass("backward pass " + fwd.name);
  if (v.inputs.size() != fwd.inputs.size() || v.params.size() != fwd.params.size() ||
      v.outputs.size() != static_cast<std::size_t>(bc.user_outputs) ||
      v.tape.size() != fwd.outputs.size() - v.outputs.size() || v.output_grads.size() != v.outputs.size() ||
      v.final_state_grads.size() != fwd.states.size() || v.input_grads.size() != fwd.inputs.size() ||
      v.state_grads.size() != fwd.states.size() || v.param_grads.size() != fwd.params.size() || v.steps < 0)
    throw Error("CPU training backward: a view with the wrong number of tensors");
  // The backward step's outputs after the input gradients are parameter-term operands: scratch
  // memory of this object, [T*B, cols] each.
  std::lock_guard<std::mutex> scratch_lock(m.scratch_mutex);
  auto& scratch = m.scratch.template of<T>();
  scratch.resize(step.outputs.size() - fwd.inputs.size());
  std::vector<T*> scratch_memory;
  for (std::size_t o = 0; o < scratch.size(); ++o) {
    const ValueId value = step.outputs[fwd.inputs.size() + o].value;
    scratch[o].resize(static_cast<std::size_t>(v.steps * m.batch * step.graph.node(value).shape.features()));
    scratch_memory.push_back(scratch[o].data());
  }
  const SequenceView<T> view = backward_sequence(bc, v, scratch_memory);
  m.backward_step->run_view(view);
  CpuParamGradients<T> kernels(*m.team, m.param_grad_sites);
  profile::SpanTimer grads("parameter gradients");
  parameter_gradients(bc, v, view, m.batch, kernels);
}

template <class T>
void CpuBptt::run_into(const SequenceArgs<T>& args, const LossGradients<T>& seeds, BpttResult<T>& result) const {
  const Impl& m = *impl_;
  const BackwardCell& bc = m.backward;
  const Cell& fwd = m.forward;
  const std::int64_t B = m.batch;
  const std::int64_t steps = check_sequence_args(fwd, args, B, "CPU backward");

  auto per_step = [&](ValueId id) { return tensor_dims(fwd.graph.node(id).shape, B, steps); };
  auto per_batch = [&](ValueId id) { return tensor_dims(fwd.graph.node(id).shape, B); };
  // The caller's result tensors are written in place when they have the right shapes: a training
  // loop that passes the same result again touches no fresh memory.
  result.forward.outputs.resize(static_cast<std::size_t>(bc.user_outputs));
  for (int o = 0; o < bc.user_outputs; ++o) result.forward.outputs[o].fit(per_step(fwd.outputs[o].value));
  result.forward.final_states.resize(fwd.states.size());
  for (std::size_t s = 0; s < fwd.states.size(); ++s) result.forward.final_states[s].fit(per_batch(fwd.states[s]));

  if (seeds.outputs.size() != static_cast<std::size_t>(bc.user_outputs) || seeds.final_states.size() != fwd.states.size())
    throw Error("CPU backward: expected gradients for " + std::to_string(bc.user_outputs) + " output(s) and " +
                std::to_string(fwd.states.size()) + " final state(s)");
  for (std::size_t o = 0; o < seeds.outputs.size(); ++o)
    if (seeds.outputs[o].shape != result.forward.outputs[o].shape)
      throw Error("CPU backward: the gradient of output '" + fwd.outputs[o].name + "' is " +
                  shape_string(seeds.outputs[o].shape) + " but the output is " +
                  shape_string(result.forward.outputs[o].shape));
  for (std::size_t s = 0; s < seeds.final_states.size(); ++s)
    if (seeds.final_states[s].shape != result.forward.final_states[s].shape)
      throw Error("CPU backward: the gradient of final state %" + std::string(fwd.leaf_name(fwd.states[s])) + " is " +
                  shape_string(seeds.final_states[s].shape) + " but the state is " +
                  shape_string(result.forward.final_states[s].shape));

  result.grads.inputs.resize(fwd.inputs.size());
  for (std::size_t i = 0; i < fwd.inputs.size(); ++i) result.grads.inputs[i].fit(per_step(fwd.inputs[i]));
  result.grads.states.resize(fwd.states.size());
  for (std::size_t s = 0; s < fwd.states.size(); ++s) result.grads.states[s].fit(per_batch(fwd.states[s]));
  result.grads.params.resize(fwd.params.size());
  for (std::size_t p = 0; p < fwd.params.size(); ++p) result.grads.params[p].fit(per_batch(fwd.params[p]));

  // The tape lives from the forward to the backward of this call only; its memory is kept for
  // the next call (W3's is 100 MB: fresh, it cost a page fault per 4 KB, ~15% of a step).
  std::lock_guard<std::mutex> tape_lock(m.tape_mutex);
  auto& tape = m.tape.template of<T>();
  tape.resize(fwd.outputs.size() - static_cast<std::size_t>(bc.user_outputs));
  for (std::size_t o = static_cast<std::size_t>(bc.user_outputs); o < fwd.outputs.size(); ++o)
    tape[o - static_cast<std::size_t>(bc.user_outputs)].resize(
        static_cast<std::size_t>(steps * B * fwd.graph.node(fwd.outputs[o].value).shape.features()));

  TrainingView<T> view;
  view.steps = steps;
  for (const auto& t : args.inputs) view.inputs.push_back(t.data.data());
  for (const auto& t : args.states) view.states.push_back(t.data.data());
  for (const auto& t : args.params) view.params.push_back(t.data.data());
  for (auto& t : result.forward.outputs) view.outputs.push_back(t.data.data());
  for (auto& t : result.forward.final_states) view.final_states.push_back(t.data.data());
  for (auto& t : tape) view.tape.push_back(t.data());
  for (const auto& t : seeds.outputs) view.output_grads.push_back(t.data.data());
  for (const auto& t : seeds.final_states) view.final_state_grads.push_back(t.data.data());
  for (auto& t : result.grads.inputs) view.input_grads.push_back(t.data.data());
  for (auto& t : result.grads.states) view.state_grads.push_back(t.data.data());
  for (auto& t : result.grads.params) view.param_grads.push_back(t.data.data());
  forward_view(view);
  backward_view(view);
}

template <class T>
BpttResult<T> CpuBptt::run(const SequenceArgs<T>& args, const LossGradients<T>& seeds) const {
  BpttResult<T> result;
  run_into(args, seeds, result);
  return result;
}

template BpttResult<float> CpuBptt::run(const SequenceArgs<float>&, const LossGradients<float>&) const;
template BpttResult<double> CpuBptt::run(const SequenceArgs<double>&, const LossGradients<double>&) const;
template void CpuBptt::run_into(const SequenceArgs<float>&, const LossGradients<float>&, BpttResult<float>&) const;
template void CpuBptt::run_into(const SequenceArgs<double>&, const LossGradients<double>&, BpttResult<double>&) const;
template void CpuBptt::forward_view(const TrainingView<float>&) const;
template void CpuBptt::forward_view(const TrainingView<double>&) const;
template void CpuBptt::backward_view(const TrainingView<float>&) const;
template void CpuBptt::backward_view(const TrainingView<double>&) const;

std::shared_ptr<const CpuBptt> compile_cpu_bptt(const Cell& cell, std::int64_t batch) {
  static std::mutex mutex;
  static std::map<std::tuple<std::uint64_t, std::int64_t, int>, std::shared_ptr<const CpuBptt>> cache;
  auto key = std::make_tuple(cell_hash(cell), batch, static_cast<int>(cell.graph.dtype()));
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key);
  if (profile::Recorder* rec = profile::active())
    rec->cache("CPU training program " + cell.name + " (batch " + std::to_string(batch) + ")", it != cache.end());
  if (it != cache.end()) return it->second;
  auto compiled = std::make_shared<const CpuBptt>(cell, batch);
  cache[key] = compiled;
  return compiled;
}

}  // namespace cellfuse
