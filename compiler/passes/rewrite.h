#pragma once
// The one mechanism under the graph passes: rebuild a cell node by node into a fresh graph.
// Leaves are always kept, in order, with their roles; every other node is offered to `rewrite`
// with its operands already mapped into the new graph, and is added as it is when `rewrite`
// returns nothing.
#include <functional>
#include <optional>
#include <vector>

#include "compiler/ir/graph.h"

namespace cellfuse {

struct RebuildOptions {
  // Merge a node into an identical one already in the new graph (Graph::add) instead of keeping
  // both (Graph::add_distinct).
  bool dedupe = false;
  // When set, non-leaf nodes whose entry is false are dropped (nothing live may use them).
  const std::vector<bool>* keep = nullptr;
  // Returns a value of the new graph to use instead of `node`, or nothing to keep the node.
  std::function<std::optional<ValueId>(Graph& out, const Node& node)> rewrite;
};

Cell rebuild(const Cell& in, const RebuildOptions& options);

}  // namespace cellfuse
