// Dead-code elimination. Parsed text and other passes leave nodes that nothing reads; later
// stages (fusion, code generation) should never see them.
#include "compiler/passes/passes.h"
#include "compiler/passes/rewrite.h"

namespace cellfuse {

Cell eliminate_dead_code(const Cell& cell) {
  const Graph& g = cell.graph;
  std::vector<bool> live(g.size(), false);
  for (const auto& o : cell.outputs) live[o.value.index] = true;
  for (ValueId v : cell.next_states)
    if (v.valid()) live[v.index] = true;
  // Definition order is topological, so one backward sweep marks every operand of a live node.
  for (std::size_t i = g.size(); i-- > 0;)
    if (live[i])
      for (ValueId in : g.nodes()[i].inputs) live[in.index] = true;
  RebuildOptions options;
  options.keep = &live;
  return rebuild(cell, options);
}

}  // namespace cellfuse
