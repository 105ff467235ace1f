// QuantCell's step path: one generation step run by the members of a team (quant_cell.h).
#include <algorithm>
#include <cstring>

#include "compiler/ir/error.h"
#include "runtime/cpu/blas.h"
#include "runtime/generate/quant_cell_impl.h"

namespace cellfuse::generate {

using cpu::quant::Activations;
using cpu::quant::QuantMatrix;
using detail::features;
using detail::StageExec;

void StepSync::before_shared(cpu::Team& team, const float* reads) {
  if (solo || opaque || (reads && std::find(written.begin(), written.end(), reads) != written.end())) barrier(team);
}

void StepSync::before_solo(cpu::Team& team) {
  if (opaque || !written.empty()) barrier(team);
}

void StepSync::barrier(cpu::Team& team) {
  if (parts > 1) {
    team.barrier();
    ++barriers;
  }
  written.clear();
  opaque = solo = false;
}

std::pair<std::int64_t, std::int64_t> share_rows(std::int64_t total, std::int64_t unit, int part, int parts) {
  const std::int64_t blocks = (total + unit - 1) / unit;
  const std::int64_t b0 = blocks * part / parts, b1 = blocks * (part + 1) / parts;
  return {std::min(total, b0 * unit), std::min(total, b1 * unit)};
}

// Member p's `where` per stage: member 0's, with every value a kernel or a weightless product
// writes (and the states, and stage inputs fed by such values) moved to the replica's own memory.
void QuantCell::Impl::bind_replicas(const std::vector<const float*>& inputs) {
  const std::int64_t rows = step_rows;
  replicas.resize(static_cast<std::size_t>(step_parts - 1));
  for (int p = 1; p < step_parts; ++p) {
    detail::Replica& r = replicas[static_cast<std::size_t>(p - 1)];
    r.own.clear();
    auto own = [&](const Cell& sc, ValueId v) {
      r.own.emplace_back(static_cast<std::size_t>(rows * features(sc, v)));
      return r.own.back().data();
    };
    r.states.resize(step_states.size());
    r.next.resize(step_states.size());
    for (std::size_t k = 0; k < step_states.size(); ++k) {
      r.states[k].resize(static_cast<std::size_t>(rows * features(cell, cell.states[k])));
      r.next[k].resize(r.states[k].size());
    }
    for (int s = 0; s < 3; ++s) {
      StageExec& se = stages[s];
      if (!se.stage->cell) continue;
      const Cell& sc = *se.stage->cell;
      auto& where = r.where[s];
      where = se.where;
      for (std::size_t i = 0; i < sc.inputs.size(); ++i) {
        const StageInput& in = se.stage->inputs[i];
        float* from = const_cast<float*>(inputs[static_cast<std::size_t>(p)]);
        if (in.from != StageInput::From::CellInput) {
          const int producer = in.from == StageInput::From::Pre ? 0 : 1;
          from = r.where[producer][stages[producer].stage->cell->outputs[static_cast<std::size_t>(in.index)].value.index];
        }
        where[sc.inputs[i].index] = from;
      }
      if (s == 1)
        for (std::size_t k = 0; k < sc.states.size(); ++k) where[sc.states[k].index] = r.states[k].data();
      for (std::size_t i = 0; i < se.program.steps.size(); ++i) {
        const ProgramStep& step = se.program.steps[i];
        if (step.kind == ProgramStep::Kind::Gemm) {
          if (!se.matrix[i]) where[step.gemm.out.index] = own(sc, step.gemm.out);
          continue;
        }
        const auto& ks = step.kernel;
        for (std::size_t b = 0; b < ks.kernel.buffers.size(); ++b)
          if (ks.kernel.buffers[b].role == kernel::BufferRole::Output) where[ks.buffers[b].index] = own(sc, ks.buffers[b]);
      }
    }
    r.output.resize(static_cast<std::size_t>(rows * features(cell, cell.outputs[0].value)));
  }
}

// The step path binds each stage's inputs straight to the memory of the value that feeds them
// (no export copies): one step's values stay where they were computed.
void QuantCell::bind_step(std::int64_t rows, const std::vector<const float*>& inputs, const std::vector<float*>& states,
                          float* output, int parts) {
  Impl& m = *impl_;
  if (states.size() != m.cell.states.size())
    throw Error("generator: layer '" + m.cell.name + "' has " + std::to_string(m.cell.states.size()) + " states, got " +
                std::to_string(states.size()));
  if (parts < 1 || inputs.size() != static_cast<std::size_t>(parts))
    throw InternalError("generator: bind_step takes one input per member");
  m.step_rows = rows, m.step_states = states, m.step_output = output, m.step_parts = parts;
  m.replicated = parts > 1 && rows < 2 * parts;
  while (static_cast<int>(m.alone.size()) < parts) m.alone.push_back(std::make_unique<cpu::Team>(1));
  for (int s = 0; s < 3; ++s) {
    StageExec& se = m.stages[s];
    if (!se.stage->cell) continue;
    m.grow(se, rows, parts);
    auto& acts = m.member_activations[s];
    if (static_cast<int>(acts.size()) < parts) acts.resize(static_cast<std::size_t>(parts));
    for (auto& a : acts) a.resize(se.program.steps.size());
    const Cell& sc = *se.stage->cell;
    for (std::size_t i = 0; i < sc.inputs.size(); ++i) {
      const StageInput& in = se.stage->inputs[i];
      float* from = const_cast<float*>(inputs[0]);
      if (in.from != StageInput::From::CellInput) {
        const StageExec& producer = m.stages[in.from == StageInput::From::Pre ? 0 : 1];
        from = producer.where[producer.stage->cell->outputs[static_cast<std::size_t>(in.index)].value.index];
      }
      se.where[sc.inputs[i].index] = from;
    }
    if (s == 1)
      for (std::size_t k = 0; k < sc.states.size(); ++k) se.where[sc.states[k].index] = states[k];
  }
  if (m.replicated) m.bind_replicas(inputs);
}

const float* QuantCell::step_output(int part) const {
  const Impl& m = *impl_;
  if (part == 0 || !m.replicated) return m.step_output;
  return m.replicas[static_cast<std::size_t>(part - 1)].output.data();
}

bool QuantCell::step_replicated() const { return impl_->replicated; }

void QuantCell::begin_steps(int part) {
  Impl& m = *impl_;
  if (part == 0 || !m.replicated) return;
  auto& r = m.replicas[static_cast<std::size_t>(part - 1)];
  for (std::size_t k = 0; k < r.states.size(); ++k)
    std::memcpy(r.states[k].data(), m.step_states[k], r.states[k].size() * sizeof(float));
}

void QuantCell::step(int part, int parts, cpu::Team& team, StepSync& sync) {
  Impl& m = *impl_;
  const std::int64_t rows = m.step_rows;
  if (parts != 1 && parts != m.step_parts)
    throw InternalError("generator: a step bound for " + std::to_string(m.step_parts) + " members run on " +
                        std::to_string(parts));
  const bool replicated = parts > 1 && m.replicated, split_kernels = parts > 1 && !m.replicated;
  for (int s = 0; s < 3; ++s) {
    StageExec& se = m.stages[s];
    if (!se.stage->cell) continue;
    std::vector<float*>& where = m.where_of(replicated ? part : 0, s);
    for (std::size_t i = 0; i < se.program.steps.size(); ++i) {
      const ProgramStep& step = se.program.steps[i];
      if (step.kind == ProgramStep::Kind::Gemm && se.matrix[i]) {
        const GemmStep& gm = step.gemm;
        const float* x = where[gm.x.index];
        sync.before_shared(team, x);
        const auto [r0, r1] = share_rows(gm.n, QuantMatrix::kRowBlock, part, parts);
        if (r0 < r1) {
          Activations& a = m.member_activations[s][static_cast<std::size_t>(part)][i];
          a.prepare(se.matrix[i]->format(), x, rows, gm.k, gm.k);
          se.matrix[i]->multiply_rows(a, gm.bias.valid() ? where[gm.bias.index] : nullptr, where[gm.out.index], gm.n,
                                      r0, r1);
        }
        sync.written.push_back(where[gm.out.index]);
        continue;
      }
      const bool own_rows = split_kernels && step.kind == ProgramStep::Kind::Kernel;
      if (own_rows || replicated) {
        sync.before_shared(team, nullptr);
        if (!sync.written.empty()) sync.barrier(team);  // it reads what the products wrote
      } else {
        sync.before_solo(team);
      }
      if (own_rows) {  // this member's rows, into the shared values
        const auto [r0, r1] = share_rows(rows, 1, part, parts);
        m.run_kernel(se, i, r0, r1, part, where);
        sync.opaque = true;
        continue;
      }
      if (part == 0 || replicated) {  // all rows: member 0 alone, or each member on its own copies
        if (step.kind == ProgramStep::Kind::Kernel) {
          m.run_kernel(se, i, 0, rows, replicated ? part : 0, where);
        } else {  // a product of two per-step values
          const GemmStep& gm = step.gemm;
          cpu::gemm<float>(*m.alone[static_cast<std::size_t>(part)], where[gm.x.index], where[gm.weight.index],
                           gm.transposed, gm.bias.valid() ? where[gm.bias.index] : nullptr, where[gm.out.index], rows,
                           gm.k, gm.n);
        }
      }
      if (!replicated) sync.solo = true;
    }
  }
  // The output, then the next states replace the states (an output may be a state as the step
  // found it), through `next` (a next state may be another state: a cell that swaps them).
  // Replicated: every member its own; else member 0 alone.
  if (!replicated) {
    sync.before_solo(team);
    sync.solo = true;  // every member alike: all of them take the same barriers
    if (part != 0) return;
  }
  const auto& src = m.plan.outputs[0];
  const std::vector<float*>& out_where = m.where_of(replicated ? part : 0, static_cast<int>(src.stage));
  const float* from =
      out_where[m.stages[static_cast<int>(src.stage)].stage->cell->outputs[static_cast<std::size_t>(src.index)].value.index];
  float* output = part == 0 ? m.step_output : m.replicas[static_cast<std::size_t>(part - 1)].output.data();
  std::memcpy(output, from, static_cast<std::size_t>(rows * output_width()) * sizeof(float));
  const StageExec& loop = m.stages[1];
  if (loop.stage->cell) {
    const Cell& lc = *loop.stage->cell;
    const std::vector<float*>& loop_where = m.where_of(replicated ? part : 0, 1);
    auto& next = part == 0 ? m.next : m.replicas[static_cast<std::size_t>(part - 1)].next;
    next.resize(lc.states.size());
    for (std::size_t k = 0; k < lc.states.size(); ++k) {
      const float* value = loop_where[lc.next_states[k].index];
      next[k].assign(value, value + rows * features(lc, lc.states[k]));
    }
    for (std::size_t k = 0; k < lc.states.size(); ++k)
      std::memcpy(loop_where[lc.states[k].index], next[k].data(), next[k].size() * sizeof(float));
  }
}

}  // namespace cellfuse::generate
