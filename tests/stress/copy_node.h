#pragma once
// Appends a copy of a node (its op, attributes and shape, over the given operands) to a cell that
// is being rebuilt, with its role when it is a leaf: what every rewrite of a cell in tests/stress
// does node by node (the shrinker, the gradient magnitude step).
#include <vector>

#include "compiler/ir/graph.h"

namespace cellfuse::stress {

inline ValueId copy_node(Cell& out, const Node& n, std::vector<ValueId> inputs) {
  const ValueId id = out.graph.add_distinct(n.op, std::move(inputs), n.attrs, n.shape);
  if (n.op == OpKind::input) out.inputs.push_back(id);
  if (n.op == OpKind::state) out.states.push_back(id);
  if (n.op == OpKind::param) out.params.push_back(id);
  return id;
}

}  // namespace cellfuse::stress
