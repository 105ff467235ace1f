#include "runtime/generate/quant_cell.h"

#include <llvm/IR/LLVMContext.h>  // the module handed to the JIT
#include <llvm/IR/Module.h>

#include <algorithm>
#include <cstring>

#include "compiler/ir/error.h"
#include "runtime/cpu/blas.h"
#include "runtime/generate/quant_cell_impl.h"

namespace cellfuse::generate {

using cpu::quant::Activations;
using cpu::quant::Format;
using cpu::quant::QuantMatrix;
using detail::elements;
using detail::features;
using detail::kRowChunk;
using detail::StageExec;

// The cell through the one pipeline: kernels for any rows, no product fused (each is a quantized
// matrix-vector product run here).
void QuantCell::Impl::compile(const Cell& user_cell) {
  if (user_cell.graph.dtype() != DType::f32)
    throw Error("generator: layer cell '" + user_cell.name + "' is " + std::string(dtype_name(user_cell.graph.dtype())) +
                "; generation runs f32 cells");
  if (user_cell.inputs.size() != 1 || user_cell.outputs.empty())
    throw Error("generator: layer cell '" + user_cell.name + "' has " + std::to_string(user_cell.inputs.size()) +
                " inputs and " + std::to_string(user_cell.outputs.size()) +
                " outputs; a layer takes one input (the token's embedding or the layer below) and its first "
                "output feeds the next layer");
  TargetOptions options;
  options.target = Target::Cpu;
  options.batch_agnostic = true;
  options.fuse = FuseProducts::Never;
  CompiledCell compiled = cellfuse::compile(user_cell, options);
  CompiledProgram& program = compiled.forward;
  cell = std::move(program.cell);
  plan = std::move(program.plan);
  const SequenceStage* src[3] = {&plan.pre, &plan.loop, &plan.post};
  for (int s = 0; s < 3; ++s) {
    StageExec& se = stages[s];
    se.stage = src[s];
    if (!src[s]->cell) continue;
    const Cell& sc = *src[s]->cell;
    se.program = std::move(program.stages[static_cast<std::size_t>(s)]);
    for (const auto& step : se.program.steps) {
      int param = -1;
      if (step.kind == ProgramStep::Kind::Gemm) {
        auto it = std::find(sc.params.begin(), sc.params.end(), step.gemm.weight);
        if (it != sc.params.end()) param = src[s]->params[static_cast<std::size_t>(it - sc.params.begin())];
      } else {
        for (const auto& b : step.kernel.kernel.buffers)
          if (b.transposed) throw InternalError("generator: a kernel with a fused product in an unfused stage");
      }
      se.matrix_param.push_back(param);
    }
  }
  jit = std::make_unique<LlvmJit>();
  jit->add_module(std::move(program.llvm->module), std::move(program.llvm->context));
  for (auto& se : stages)
    for (const auto& step : se.program.steps)
      se.functions.push_back(step.kind == ProgramStep::Kind::Kernel
                                 ? reinterpret_cast<llvm_codegen::KernelFunction>(jit->lookup(step.kernel.kernel.name))
                                 : nullptr);
}

// The parameters anything but a quantized product's weight reads: kept in fp32.
std::vector<bool> QuantCell::Impl::fp32_needed() const {
  std::vector<bool> need(cell.params.size(), false);
  for (const auto& se : stages) {
    if (!se.stage->cell) continue;
    const Cell& sc = *se.stage->cell;
    auto mark = [&](ValueId v) {
      auto it = std::find(sc.params.begin(), sc.params.end(), v);
      if (it != sc.params.end()) need[static_cast<std::size_t>(se.stage->params[static_cast<std::size_t>(it - sc.params.begin())])] = true;
    };
    for (std::size_t i = 0; i < se.program.steps.size(); ++i) {
      const auto& step = se.program.steps[i];
      if (step.kind == ProgramStep::Kind::Gemm) {
        mark(step.gemm.x);
        if (step.gemm.bias.valid()) mark(step.gemm.bias);
        if (se.matrix_param[i] < 0) mark(step.gemm.weight);
      } else {
        for (ValueId v : step.kernel.buffers)
          if (v.valid()) mark(v);
      }
    }
  }
  return need;
}

void QuantCell::Impl::check_weights() const {
  const auto need = fp32_needed();
  if (weights.fp32.size() != cell.params.size())
    throw Error("generator: layer '" + cell.name + "' has " + std::to_string(cell.params.size()) +
                " parameters, the stored weights " + std::to_string(weights.fp32.size()));
  for (std::size_t p = 0; p < cell.params.size(); ++p) {
    const Shape& shape = cell.graph.node(cell.params[p]).shape;
    const auto& v = weights.fp32[p];
    if (need[p] && (!v || static_cast<std::int64_t>(v->size()) != elements(shape)))
      throw Error("generator: layer '" + cell.name + "' parameter '" + std::string(cell.leaf_name(cell.params[p])) +
                  "' " + to_string(shape) + " is missing or has " + std::to_string(v ? v->size() : 0) + " values");
  }
  for (const auto& se : stages)
    for (std::size_t i = 0; i < se.program.steps.size(); ++i) {
      if (se.matrix_param[i] < 0) continue;
      const GemmStep& gm = se.program.steps[i].gemm;
      auto it = weights.matrices.find({se.matrix_param[i], gm.transposed});
      if (it == weights.matrices.end() || it->second.k() != gm.k || it->second.n() != gm.n)
        throw Error("generator: layer '" + cell.name + "' product weight '" +
                    std::string(cell.leaf_name(cell.params[static_cast<std::size_t>(se.matrix_param[i])])) +
                    "' (" + std::to_string(gm.n) + " x " + std::to_string(gm.k) + ") is missing or has another shape");
    }
}

void QuantCell::Impl::resolve_matrices() {
  for (auto& se : stages) {
    se.matrix.assign(se.program.steps.size(), nullptr);
    for (std::size_t i = 0; i < se.program.steps.size(); ++i)
      if (se.matrix_param[i] >= 0)
        se.matrix[i] = &weights.matrices.at({se.matrix_param[i], se.program.steps[i].gemm.transposed});
  }
}

QuantCell::QuantCell(const Cell& cell, const std::vector<const float*>& params, Format format)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.compile(cell);
  if (params.size() != m.cell.params.size())
    throw Error("generator: layer '" + cell.name + "' takes " + std::to_string(m.cell.params.size()) +
                " parameters, got " + std::to_string(params.size()));
  const auto need = m.fp32_needed();
  m.weights.fp32.resize(params.size());
  for (std::size_t p = 0; p < params.size(); ++p)
    if (need[p]) {
      const auto n = elements(m.cell.graph.node(m.cell.params[p]).shape);
      m.weights.fp32[p].emplace(params[p], params[p] + n);
    }
  for (const auto& se : m.stages)
    for (std::size_t i = 0; i < se.program.steps.size(); ++i) {
      const int p = se.matrix_param[i];
      if (p < 0) continue;
      const GemmStep& gm = se.program.steps[i].gemm;
      if (!m.weights.matrices.count({p, gm.transposed}))
        m.weights.matrices.emplace(WeightKey{p, gm.transposed},
                                   QuantMatrix::quantize(params[static_cast<std::size_t>(p)], gm.transposed, gm.k, gm.n, format));
    }
  m.resolve_matrices();
}

QuantCell::QuantCell(const Cell& cell, LayerWeights weights) : impl_(std::make_unique<Impl>()) {
  impl_->compile(cell);
  impl_->weights = std::move(weights);
  impl_->check_weights();
  impl_->resolve_matrices();
}

QuantCell::~QuantCell() = default;
QuantCell::QuantCell(QuantCell&&) noexcept = default;

const Cell& QuantCell::cell() const { return impl_->cell; }
const LayerWeights& QuantCell::weights() const { return impl_->weights; }
std::int64_t QuantCell::input_width() const { return features(impl_->cell, impl_->cell.inputs[0]); }
std::int64_t QuantCell::output_width() const { return features(impl_->cell, impl_->cell.outputs[0].value); }
std::vector<std::int64_t> QuantCell::state_widths() const {
  std::vector<std::int64_t> out;
  for (ValueId s : impl_->cell.states) out.push_back(features(impl_->cell, s));
  return out;
}
std::size_t QuantCell::weight_bytes() const {
  std::size_t total = 0;
  for (const auto& [key, m] : impl_->weights.matrices) total += m.bytes();
  return total;
}

// Memory for `rows` rows and `sets` sets of kernel scratch.
void QuantCell::Impl::grow(StageExec& se, std::int64_t rows, int sets) {
  const Cell& sc = *se.stage->cell;
  if (se.where.empty()) {
    se.where.assign(sc.graph.size(), nullptr);
    for (std::size_t p = 0; p < sc.params.size(); ++p) {
      auto& v = weights.fp32[static_cast<std::size_t>(se.stage->params[p])];
      if (v) se.where[sc.params[p].index] = v->data();
    }
    se.pointers.resize(se.program.steps.size());
  }
  for (std::size_t i = 0; i < se.program.steps.size(); ++i) {
    const ProgramStep& step = se.program.steps[i];
    if (step.kind != ProgramStep::Kind::Kernel) continue;
    const auto& k = step.kernel.kernel;
    auto& step_sets = se.pointers[i];
    while (static_cast<int>(step_sets.size()) < sets) {
      step_sets.emplace_back(k.buffers.size(), nullptr);
      for (std::size_t b = 0; b < k.buffers.size(); ++b)
        if (k.buffers[b].role == kernel::BufferRole::Scratch) {
          se.scratch.emplace_back(static_cast<std::size_t>(kRowChunk * k.buffers[b].cols));
          step_sets.back()[b] = se.scratch.back().data();
        }
    }
  }
  if (rows <= se.capacity) return;
  se.capacity = rows;
  se.temporaries.resize(se.program.temporaries.size());
  for (std::size_t t = 0; t < se.program.temporaries.size(); ++t) {
    ValueId v = se.program.temporaries[t];
    se.temporaries[t].resize(static_cast<std::size_t>(rows * features(sc, v)));
    se.where[v.index] = se.temporaries[t].data();
  }
  se.exports.resize(sc.outputs.size());
  for (std::size_t o = 0; o < sc.outputs.size(); ++o)
    se.exports[o].resize(static_cast<std::size_t>(rows * features(sc, sc.outputs[o].value)));
}

// Rows [r0, r1) of step i's kernel with scratch set `set`, its values where `where` says.
void QuantCell::Impl::run_kernel(StageExec& se, std::size_t i, std::int64_t r0, std::int64_t r1, int set,
                                 const std::vector<float*>& where) {
  const auto& ks = se.program.steps[i].kernel;
  auto& ptrs = se.pointers[i][static_cast<std::size_t>(set)];
  for (std::size_t b = 0; b < ks.kernel.buffers.size(); ++b)
    if (ks.kernel.buffers[b].role != kernel::BufferRole::Scratch) ptrs[b] = where[ks.buffers[b].index];
  for (std::int64_t r = r0; r < r1; r += kRowChunk) se.functions[i](ptrs.data(), r, std::min(r1, r + kRowChunk), 0, 1, nullptr, nullptr);
}

// Runs stage `se` over `rows` rows bound in se.where; copies its outputs to row `export_row` of
// its export arrays.
void QuantCell::Impl::run_stage(StageExec& se, std::int64_t rows, std::int64_t export_row, cpu::Team& team) {
  const Cell& sc = *se.stage->cell;
  for (std::size_t i = 0; i < se.program.steps.size(); ++i) {
    const ProgramStep& step = se.program.steps[i];
    if (step.kind == ProgramStep::Kind::Gemm) {
      const GemmStep& gm = step.gemm;
      const float* bias = gm.bias.valid() ? se.where[gm.bias.index] : nullptr;
      if (const QuantMatrix* w = se.matrix[i]) {
        activations.prepare(w->format(), se.where[gm.x.index], rows, gm.k, gm.k);
        w->multiply(activations, bias, se.where[gm.out.index], gm.n, &team);
      } else {  // a product of two per-step values: no weight to quantize
        cpu::gemm<float>(team, se.where[gm.x.index], se.where[gm.weight.index], gm.transposed, bias,
                         se.where[gm.out.index], rows, gm.k, gm.n);
      }
      continue;
    }
    run_kernel(se, i, 0, rows, 0, se.where);
  }
  for (std::size_t o = 0; o < sc.outputs.size(); ++o) {
    ValueId v = sc.outputs[o].value;
    const std::int64_t cols = features(sc, v);
    std::memcpy(se.exports[o].data() + export_row * cols, se.where[v.index],
                static_cast<std::size_t>(rows * cols) * sizeof(float));
  }
}

void QuantCell::run(std::int64_t steps, std::int64_t rows, const float* input, const std::vector<float*>& states,
                    float* output, cpu::Team& team) {
  Impl& m = *impl_;
  if (states.size() != m.cell.states.size())
    throw Error("generator: layer '" + m.cell.name + "' has " + std::to_string(m.cell.states.size()) + " states, got " +
                std::to_string(states.size()));
  const std::int64_t total = steps * rows;
  if (total == 0) return;
  auto source = [&](const StageInput& in) -> float* {
    switch (in.from) {
      case StageInput::From::CellInput: return const_cast<float*>(input);
      case StageInput::From::Pre: return m.stages[0].exports[static_cast<std::size_t>(in.index)].data();
      case StageInput::From::Loop: return m.stages[1].exports[static_cast<std::size_t>(in.index)].data();
    }
    return nullptr;
  };
  auto run_batch = [&](int s) {
    StageExec& se = m.stages[s];
    if (!se.stage->cell) return;
    m.grow(se, total, 1);
    const Cell& sc = *se.stage->cell;
    for (std::size_t i = 0; i < sc.inputs.size(); ++i) se.where[sc.inputs[i].index] = source(se.stage->inputs[i]);
    m.run_stage(se, total, 0, team);
  };
  run_batch(0);
  StageExec& loop = m.stages[1];
  if (loop.stage->cell) {
    const Cell& lc = *loop.stage->cell;
    m.grow(loop, rows, 1);
    // The loop's exports hold all steps: sized apart from its per-step temporaries.
    for (std::size_t o = 0; o < lc.outputs.size(); ++o)
      if (loop.exports[o].size() < static_cast<std::size_t>(total * features(lc, lc.outputs[o].value)))
        loop.exports[o].resize(static_cast<std::size_t>(total * features(lc, lc.outputs[o].value)));
    m.current.resize(states.size());
    m.next.resize(states.size());
    for (std::size_t s = 0; s < states.size(); ++s) {
      const std::size_t n = static_cast<std::size_t>(rows * features(m.cell, m.cell.states[s]));
      m.current[s].assign(states[s], states[s] + n);
      m.next[s].resize(n);
    }
    std::vector<float*> inputs;
    std::vector<std::int64_t> widths;
    for (std::size_t i = 0; i < lc.inputs.size(); ++i) {
      inputs.push_back(source(loop.stage->inputs[i]));
      widths.push_back(features(lc, lc.inputs[i]));
    }
    for (std::int64_t t = 0; t < steps; ++t) {
      for (std::size_t i = 0; i < lc.inputs.size(); ++i) loop.where[lc.inputs[i].index] = inputs[i] + t * rows * widths[i];
      for (std::size_t s = 0; s < lc.states.size(); ++s) loop.where[lc.states[s].index] = m.current[s].data();
      m.run_stage(loop, rows, t * rows, team);
      for (std::size_t s = 0; s < lc.states.size(); ++s)
        std::memcpy(m.next[s].data(), loop.where[lc.next_states[s].index], m.next[s].size() * sizeof(float));
      std::swap(m.current, m.next);
    }
    for (std::size_t s = 0; s < states.size(); ++s)
      std::memcpy(states[s], m.current[s].data(), m.current[s].size() * sizeof(float));
  }
  run_batch(2);
  const auto& src = m.plan.outputs[0];
  const std::int64_t cols = output_width();
  std::memcpy(output, m.stages[static_cast<int>(src.stage)].exports[static_cast<std::size_t>(src.index)].data(),
              static_cast<std::size_t>(total * cols) * sizeof(float));
}

}  // namespace cellfuse::generate
