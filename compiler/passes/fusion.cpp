#include "compiler/passes/fusion.h"

#include <algorithm>
#include <map>

#include "compiler/ir/error.h"
#include "compiler/ir/text.h"

namespace cellfuse {

std::vector<bool> invariant_values(const Cell& stage) {
  const Graph& g = stage.graph;
  std::vector<bool> invariant(g.size(), true);
  for (std::uint32_t i = 0; i < g.size(); ++i) {
    const Node& n = g.nodes()[i];
    if (n.op == OpKind::input || n.op == OpKind::state) invariant[i] = false;
    for (ValueId in : n.inputs)
      if (!invariant[in.index]) invariant[i] = false;
  }
  return invariant;
}

FusionPlan plan_fusion(const Cell& stage, const FusionOptions& options) {
  const Graph& g = stage.graph;
  const std::vector<bool> invariant = invariant_values(stage);
  std::vector<bool> is_root(g.size(), false);
  for (const auto& o : stage.outputs) is_root[o.value.index] = true;
  for (ValueId v : stage.next_states) is_root[v.index] = true;

  // level: how many GEMMs stand between the stage's leaves and a value. A kernel holds the
  // values of one level; the GEMMs of level L run after kernel L and feed kernel L+1.
  std::vector<int> level(g.size(), 0);
  std::map<int, std::vector<ValueId>> kernels, gemms;
  FusionPlan plan;
  for (std::uint32_t i = 0; i < g.size(); ++i) {
    const Node& n = g.nodes()[i];
    int l = 0;
    for (ValueId in : n.inputs) l = std::max(l, level[in.index]);
    ValueId id{i};
    bool gemm = op_info(n.op).op_class == OpClass::Contraction && !options.fuse_small_products;
    if (gemm && invariant[i])
      throw Error(std::string(op_name(n.op)) + " " + g.describe(id) +
                  ": a matrix product of parameters alone is not supported by the compiled "
                  "backends yet (compute it outside the cell)");
    if (gemm) {
      level[i] = l + 1;
      gemms[l].push_back(id);
      plan.reasons.push_back("not fused: " + std::string(op_name(n.op)) + " " + g.describe(id) +
                             " runs as a GEMM over all rows, after kernel " + std::to_string(l) +
                             (options.fuse_small_products ? "" : " (batch too large to fuse)"));
      continue;
    }
    level[i] = l;
    if (is_leaf(n.op) && n.op != OpKind::constant) continue;
    // Invariant pointwise work is recomputed inline where it is used, unless the stage must
    // store it. A reduction cannot be inlined (it is a loop of its own), so an invariant one
    // (a norm of a parameter, say) joins the first kernel and is computed there each step.
    if (invariant[i] && !is_root[i] && op_info(n.op).op_class != OpClass::Reduction) continue;
    kernels[l].push_back(id);
  }
  int last = 0;
  for (const auto& [l, _] : kernels) last = std::max(last, l);
  for (const auto& [l, _] : gemms) last = std::max(last, l + 1);
  for (int l = 0; l <= last; ++l) {
    if (kernels.count(l)) plan.groups.push_back({FusionGroup::Kind::Kernel, kernels[l]});
    for (ValueId v : gemms[l]) plan.groups.push_back({FusionGroup::Kind::Gemm, {v}});
  }
  return plan;
}

std::string print_fusion(const Cell& stage, const FusionPlan& plan) {
  std::string out;
  int k = 0;
  for (const auto& group : plan.groups) {
    if (group.kind == FusionGroup::Kind::Gemm) {
      out += "gemm: " + stage.graph.describe(group.nodes[0]) + " = " +
             std::string(op_name(stage.graph.node(group.nodes[0]).op)) + "\n";
      continue;
    }
    out += "kernel " + std::to_string(k++) + ": " + std::to_string(group.nodes.size()) +
           " op(s) fused:";
    for (ValueId v : group.nodes)
      out += " " + stage.graph.ref(v) + "=" + std::string(op_name(stage.graph.node(v).op));
    out += "\n";
  }
  for (const auto& r : plan.reasons) out += "  " + r + "\n";
  return out;
}

}  // namespace cellfuse
