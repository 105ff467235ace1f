// Common-subexpression elimination. The builder already shares identical nodes as they are made;
// this pass also merges what arrives by other roads (parsed text, other passes' rewrites, and
// commutative ops written with their operands swapped, like `a*b` and `b*a`).
#include <algorithm>

#include "compiler/passes/passes.h"
#include "compiler/passes/rewrite.h"

namespace cellfuse {

Cell eliminate_common_subexpressions(const Cell& cell) {
  RebuildOptions options;
  options.dedupe = true;
  options.rewrite = [](Graph& out, const Node& node) -> std::optional<ValueId> {
    if (!is_commutative(node.op)) return std::nullopt;
    std::vector<ValueId> operands = node.inputs;
    std::sort(operands.begin(), operands.end());
    return out.add(node.op, operands, node.attrs);
  };
  return rebuild(cell, options);
}

}  // namespace cellfuse
