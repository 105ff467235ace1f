#include "compiler/passes/rewrite.h"

#include "compiler/ir/error.h"

namespace cellfuse {

Cell rebuild(const Cell& in, const RebuildOptions& options) {
  const Graph& g = in.graph;
  Cell out(g.dtype());
  out.name = in.name;
  std::vector<ValueId> map(g.size());
  for (std::uint32_t i = 0; i < g.size(); ++i) {
    const Node& n = g.nodes()[i];
    if (!n.leaf_name().empty()) {
      map[i] = out.graph.add_distinct(n.op, {}, n.attrs, n.shape);
      if (n.op == OpKind::input) out.inputs.push_back(map[i]);
      if (n.op == OpKind::param) out.params.push_back(map[i]);
      if (n.op == OpKind::state) {
        out.states.push_back(map[i]);
        out.next_states.push_back(ValueId{});
      }
      continue;
    }
    if (options.keep && !(*options.keep)[i]) continue;
    Node mapped = n;
    for (ValueId& v : mapped.inputs) {
      v = map[v.index];
      if (!v.valid()) throw InternalError("rebuild: a kept node uses a dropped one");
    }
    std::optional<ValueId> replacement;
    if (options.rewrite) replacement = options.rewrite(out.graph, mapped);
    if (replacement) {
      map[i] = *replacement;
    } else if (options.dedupe) {
      map[i] = out.graph.add(mapped.op, mapped.inputs, mapped.attrs, mapped.shape);
    } else {
      map[i] = out.graph.add_distinct(mapped.op, mapped.inputs, mapped.attrs, mapped.shape);
    }
  }
  for (const auto& o : in.outputs) out.outputs.push_back({o.name, map[o.value.index]});
  for (std::size_t s = 0; s < in.next_states.size(); ++s)
    if (in.next_states[s].valid()) out.next_states[s] = map[in.next_states[s].index];
  return out;
}

}  // namespace cellfuse
