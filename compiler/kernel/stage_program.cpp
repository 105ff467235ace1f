#include "compiler/kernel/stage_program.h"

#include <set>

#include "compiler/ir/error.h"
#include "compiler/kernel/lower_kernel.h"
#include "compiler/passes/fusion.h"

namespace cellfuse {

StageProgram compile_stage(const Cell& stage, bool fuse_small_products, const std::string& name) {
  return lower_stage(stage, plan_fusion(stage, FusionOptions{fuse_small_products}), name);
}

StageProgram lower_stage(const Cell& stage, const FusionPlan& plan, const std::string& name) {
  const Graph& g = stage.graph;
  StageProgram program;
  program.notes = plan.reasons;

  std::vector<int> group_of(g.size(), -1);
  for (std::size_t i = 0; i < plan.groups.size(); ++i)
    for (ValueId v : plan.groups[i].nodes) group_of[v.index] = static_cast<int>(i);
  std::vector<bool> root(g.size(), false);
  for (const auto& o : stage.outputs) root[o.value.index] = true;
  for (ValueId v : stage.next_states) root[v.index] = true;
  // The groups that read each value. A node in no group (invariant work, inlined where it is
  // used) reads on behalf of the groups that read it, so its inputs count as read by those.
  std::vector<std::set<int>> readers(g.size());
  for (std::uint32_t i = g.size(); i-- > 0;)
    for (ValueId in : g.nodes()[i].inputs) {
      if (group_of[i] >= 0) readers[in.index].insert(group_of[i]);
      else readers[in.index].insert(readers[i].begin(), readers[i].end());
    }
  // A value is needed outside its group when a node of another group reads it, or the stage
  // hands it out.
  std::vector<bool> needed_after(root);
  for (std::uint32_t i = 0; i < g.size(); ++i)
    if (group_of[i] >= 0)
      for (int r : readers[i])
        if (r != group_of[i]) needed_after[i] = true;

  std::vector<bool> available(g.size(), false);
  for (std::uint32_t i = 0; i < g.size(); ++i)
    available[i] = g.nodes()[i].op == OpKind::input || g.nodes()[i].op == OpKind::state ||
                   g.nodes()[i].op == OpKind::param;

  int kernel_count = 0;
  for (const FusionGroup& group : plan.groups) {
    if (group.kind == FusionGroup::Kind::Gemm) {
      ValueId v = group.nodes[0];
      const Node& n = g.node(v);
      GemmStep gemm{n.inputs[0], n.inputs[1], n.inputs.size() == 3 ? n.inputs[2] : ValueId{}, v,
                    n.op == OpKind::linear, g.node(n.inputs[0]).shape.features(), n.shape.features()};
      if (g.node(gemm.weight).op != OpKind::param)
        throw Error(std::string(op_name(n.op)) + " " + g.describe(v) + ": the weight " +
                    g.describe(gemm.weight) + " must be a parameter for the compiled backends");
      if (!available[gemm.x.index])
        throw Error(std::string(op_name(n.op)) + " " + g.describe(v) + ": the operand " +
                    g.describe(gemm.x) +
                    " is computed from parameters alone; the compiled backends need it to "
                    "depend on an input or a state");
      program.steps.push_back({ProgramStep::Kind::Gemm, gemm, {}});
      program.temporaries.push_back(v);
      available[v.index] = true;
      continue;
    }
    kernel::KernelContext ctx{&stage, group.nodes, available, needed_after,
                              name + "_k" + std::to_string(kernel_count++)};
    kernel::LoweredKernel lowered = kernel::lower_kernel(ctx);
    for (auto& note : lowered.notes) program.notes.push_back(ctx.name + ": " + note);
    for (std::size_t b = 0; b < lowered.kernel.buffers.size(); ++b)
      if (lowered.kernel.buffers[b].role == kernel::BufferRole::Output) {
        program.temporaries.push_back(lowered.values[b]);
        available[lowered.values[b].index] = true;
      }
    program.steps.push_back({ProgramStep::Kind::Kernel, {}, {std::move(lowered.kernel), lowered.values}});
  }
  for (const auto& o : stage.outputs)
    if (!available[o.value.index])
      throw InternalError("stage output " + g.describe(o.value) + " is never written");
  for (ValueId v : stage.next_states)
    if (!available[v.index]) throw InternalError("next state " + g.describe(v) + " is never written");
  return program;
}

std::string print_program(const Cell& stage, const StageProgram& program) {
  std::string out;
  for (const ProgramStep& step : program.steps) {
    if (step.kind == ProgramStep::Kind::Gemm) {
      const GemmStep& gm = step.gemm;
      out += "gemm " + stage.graph.describe(gm.out) + " = " + stage.graph.ref(gm.x) + " x " +
             stage.graph.ref(gm.weight) + (gm.transposed ? "^T" : "") +
             (gm.bias.valid() ? " + " + stage.graph.ref(gm.bias) : "") + "\n";
    } else {
      out += kernel::print_kernel(step.kernel.kernel);
    }
  }
  for (const auto& note : program.notes) out += "# " + note + "\n";
  return out;
}

}  // namespace cellfuse
