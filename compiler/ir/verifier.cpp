#include "compiler/ir/verifier.h"

#include <set>

#include "compiler/ir/error.h"

namespace cellfuse {
namespace {

void verify_node(const Graph& g, std::uint32_t index) {
  const Node& n = g.nodes()[index];
  const OpInfo& info = op_info(n.op);
  const std::string where = "%" + std::to_string(index) + " = " + std::string(info.name);
  int arity = static_cast<int>(n.inputs.size());
  if (arity < info.min_arity || (info.max_arity >= 0 && arity > info.max_arity))
    throw Error(where + ": wrong number of operands (" + std::to_string(arity) + ")");
  if (n.attrs.size() != info.attrs.size()) throw Error(where + ": wrong number of attributes");
  for (ValueId in : n.inputs)
    if (!in.valid() || in.index >= index)
      throw Error(where + ": uses %" + std::to_string(in.index) + " before it is defined");
  if (info.op_class == OpClass::Leaf) return;
  Shape inferred = infer_shape(g, n.op, n.inputs, n.attrs);
  if (inferred != n.shape)
    throw Error(where + ": recorded shape " + to_string(n.shape) + " but the operands give " +
                to_string(inferred));
}

void verify_role(const Cell& c, const std::vector<ValueId>& ids, OpKind op) {
  for (ValueId id : ids) {
    if (!id.valid() || id.index >= c.graph.size())
      throw Error(std::string(op_name(op)) + " role refers to a value outside the graph");
    if (c.graph.node(id).op != op)
      throw Error(c.graph.ref(id) + " is listed as " + std::string(op_name(op)) + " but is a " +
                  std::string(op_name(c.graph.node(id).op)));
  }
}

}  // namespace

void verify(const Cell& cell) {
  const Graph& g = cell.graph;
  std::set<std::string_view> names;
  std::size_t leaves[3] = {0, 0, 0};
  for (std::uint32_t i = 0; i < g.size(); ++i) {
    verify_node(g, i);
    const Node& n = g.nodes()[i];
    if (auto name = n.leaf_name(); !name.empty()) {
      if (!names.insert(name).second) throw Error("%" + std::string(name) + " is declared twice");
      leaves[n.op == OpKind::input ? 0 : n.op == OpKind::state ? 1 : 2]++;
    }
  }
  verify_role(cell, cell.inputs, OpKind::input);
  verify_role(cell, cell.states, OpKind::state);
  verify_role(cell, cell.params, OpKind::param);
  if (leaves[0] != cell.inputs.size() || leaves[1] != cell.states.size() ||
      leaves[2] != cell.params.size())
    throw Error("a leaf of the graph is missing from the cell's role lists");

  if (cell.next_states.size() != cell.states.size())
    throw Error("the cell has " + std::to_string(cell.states.size()) + " states but " +
                std::to_string(cell.next_states.size()) + " next values");
  for (std::size_t i = 0; i < cell.states.size(); ++i) {
    ValueId s = cell.states[i], next = cell.next_states[i];
    if (!next.valid())
      throw Error("state " + g.describe(s) + " is never updated: give it a `next " +
                  std::string(cell.leaf_name(s)) + " = ...`");
    if (next.index >= g.size()) throw Error("next value of " + g.ref(s) + " is outside the graph");
    if (g.node(next).shape != g.node(s).shape)
      throw Error("state " + g.describe(s) + " is updated with " + g.describe(next) +
                  ": shape mismatch");
  }
  std::set<std::string_view> outputs;
  for (const auto& o : cell.outputs) {
    if (!outputs.insert(o.name).second) throw Error("output '" + o.name + "' is declared twice");
    if (!o.value.valid() || o.value.index >= g.size())
      throw Error("output '" + o.name + "' refers to a value outside the graph");
    if (!g.node(o.value).shape.is_batched())
      throw Error("output '" + o.name + "': " + g.describe(o.value) +
                  " is not batched; per-step outputs must be [B,n]");
  }
  if (cell.outputs.empty() && cell.states.empty())
    throw Error("the cell has neither outputs nor states: it computes nothing");
}

}  // namespace cellfuse
