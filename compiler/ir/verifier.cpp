#include "compiler/ir/verifier.h"

#include <set>

#include "compiler/ir/error.h"

namespace cellfuse {
namespace {

// A Graph only ever holds nodes that passed its own checks, so these mostly guard against a bug
// in a pass; they are cheap and keep every later stage free of its own checks.
void verify_node(const Graph& g, std::uint32_t index) {
  const Node& n = g.nodes()[index];
  const OpInfo& info = op_info(n.op);
  // Made only on failure: naming a value costs O(n).
  auto fail = [&](const std::string& why) {
    throw Error(g.ref(ValueId{index}) + " = " + std::string(info.name) + ": " + why);
  };
  int arity = static_cast<int>(n.inputs.size());
  if (arity < info.min_arity || (info.max_arity >= 0 && arity > info.max_arity))
    fail("wrong number of operands (" + std::to_string(arity) + ")");
  if (n.attrs.size() != info.attrs.size()) fail("wrong number of attributes");
  for (ValueId in : n.inputs)
    if (!in.valid() || in.index >= index) fail("uses " + g.ref(in) + " before it is defined");
  if (info.op_class == OpClass::Leaf) return;
  Shape inferred = infer_shape(g, n.op, n.inputs, n.attrs);
  if (inferred != n.shape)
    fail("recorded shape " + to_string(n.shape) + " but the operands give " + to_string(inferred));
}

// Every entry is a leaf of the right op, and none is listed twice.
void verify_role(const Cell& c, const std::vector<ValueId>& ids, OpKind op) {
  std::set<ValueId> seen;
  const std::string role(op_name(op));
  for (ValueId id : ids) {
    if (!id.valid() || id.index >= c.graph.size())
      throw Error("the " + role + " list refers to a value outside the graph");
    if (c.graph.node(id).op != op)
      throw Error(c.graph.describe(id) + " is listed as " + (op == OpKind::input ? "an " : "a ") +
                  role + " but is " + (c.graph.node(id).op == OpKind::input ? "an " : "a ") +
                  std::string(op_name(c.graph.node(id).op)));
    if (!seen.insert(id).second)
      throw Error(c.graph.ref(id) + " is listed twice as " + (op == OpKind::input ? "an " : "a ") +
                  role);
  }
}

}  // namespace

void verify(const Cell& cell) {
  const Graph& g = cell.graph;
  // The name heads the text form, which must parse back.
  if (!is_identifier(cell.name)) throw Error("cell name '" + cell.name + "' is not a valid name");
  std::set<std::string_view> names;
  for (std::uint32_t i = 0; i < g.size(); ++i) {
    verify_node(g, i);
    if (auto name = g.nodes()[i].leaf_name(); !name.empty() && !names.insert(name).second)
      throw Error("%" + std::string(name) + " is declared twice");
  }
  verify_role(cell, cell.inputs, OpKind::input);
  verify_role(cell, cell.states, OpKind::state);
  verify_role(cell, cell.params, OpKind::param);
  // Every leaf has its role: the role lists are the calling convention, so a leaf missing from
  // them would have no argument to read.
  std::set<ValueId> listed(cell.inputs.begin(), cell.inputs.end());
  listed.insert(cell.states.begin(), cell.states.end());
  listed.insert(cell.params.begin(), cell.params.end());
  for (std::uint32_t i = 0; i < g.size(); ++i)
    if (!g.nodes()[i].leaf_name().empty() && !listed.count(ValueId{i}))
      throw Error(g.describe(ValueId{i}) + " is a " + std::string(op_name(g.nodes()[i].op)) +
                  " leaf missing from the cell's role lists");

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
    if (!is_identifier(o.name)) throw Error("output '" + o.name + "': not a valid name");
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
