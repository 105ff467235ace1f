#include "shrink.h"

#include <optional>

#include "compiler/ir/error.h"
#include "compiler/ir/verifier.h"

namespace cellfuse::stress {
namespace {

// A copy of `cell` with node `victim` replaced: by the value `with` (defined before it) or, when
// there is none, by a constant of its shape. keep_output: the outputs kept; next_is_state: next
// states replaced by their state.
struct Edit {
  std::uint32_t victim = ValueId::kInvalid;
  std::optional<ValueId> with;
  double constant = 0.5;
  int drop_output = -1;
  int keep_state = -1;  // this state's next value becomes the state itself
};

Edit drop_output(int o) {
  Edit e;
  e.drop_output = o;
  return e;
}
Edit keep_state(int s) {
  Edit e;
  e.keep_state = s;
  return e;
}
Edit replace(std::uint32_t victim, std::optional<ValueId> with) {
  Edit e;
  e.victim = victim;
  e.with = with;
  return e;
}

Cell apply(const Cell& cell, const Edit& edit) {
  Cell out(cell.graph.dtype());
  out.name = cell.name;
  const auto& nodes = cell.graph.nodes();
  std::vector<ValueId> map(nodes.size());
  for (std::uint32_t i = 0; i < nodes.size(); ++i) {
    const Node& n = nodes[i];
    if (i == edit.victim) {
      map[i] = edit.with ? map[edit.with->index]
                         : out.graph.add_distinct(OpKind::constant, {}, {edit.constant}, n.shape);
      continue;
    }
    std::vector<ValueId> inputs;
    for (ValueId v : n.inputs) inputs.push_back(map[v.index]);
    map[i] = out.graph.add_distinct(n.op, inputs, n.attrs, n.shape);
    if (n.op == OpKind::input) out.inputs.push_back(map[i]);
    if (n.op == OpKind::state) out.states.push_back(map[i]);
    if (n.op == OpKind::param) out.params.push_back(map[i]);
  }
  for (std::size_t o = 0; o < cell.outputs.size(); ++o)
    if (static_cast<int>(o) != edit.drop_output) out.outputs.push_back({cell.outputs[o].name, map[cell.outputs[o].value.index]});
  for (std::size_t s = 0; s < cell.next_states.size(); ++s)
    out.next_states.push_back(static_cast<int>(s) == edit.keep_state ? map[cell.states[s].index]
                                                                     : map[cell.next_states[s].index]);
  return out;
}

}  // namespace

Cell drop_dead_nodes(const Cell& cell) {
  const auto& nodes = cell.graph.nodes();
  std::vector<bool> live(nodes.size(), false);
  for (const auto& o : cell.outputs) live[o.value.index] = true;
  for (ValueId v : cell.next_states) live[v.index] = true;
  for (std::size_t i = nodes.size(); i-- > 0;) {
    const OpKind op = nodes[i].op;
    if (op == OpKind::input || op == OpKind::state || op == OpKind::param) live[i] = true;
    if (!live[i]) continue;
    for (ValueId in : nodes[i].inputs) live[in.index] = true;
  }
  Cell out(cell.graph.dtype());
  out.name = cell.name;
  std::vector<ValueId> map(nodes.size());
  for (std::uint32_t i = 0; i < nodes.size(); ++i) {
    if (!live[i]) continue;
    const Node& n = nodes[i];
    std::vector<ValueId> inputs;
    for (ValueId v : n.inputs) inputs.push_back(map[v.index]);
    map[i] = out.graph.add_distinct(n.op, inputs, n.attrs, n.shape);
    if (n.op == OpKind::input) out.inputs.push_back(map[i]);
    if (n.op == OpKind::state) out.states.push_back(map[i]);
    if (n.op == OpKind::param) out.params.push_back(map[i]);
  }
  for (const auto& o : cell.outputs) out.outputs.push_back({o.name, map[o.value.index]});
  for (ValueId v : cell.next_states) out.next_states.push_back(map[v.index]);
  return out;
}

Cell shrink_cell(const Cell& failing, const std::function<bool(const Cell&)>& still_fails, int max_tries) {
  Cell best = drop_dead_nodes(failing);
  if (!still_fails(best)) best = failing;
  int tries = 0;
  auto attempt = [&](const Edit& e) {
    if (tries >= max_tries) return false;
    Cell candidate;
    try {
      candidate = drop_dead_nodes(apply(best, e));
      verify(candidate);
    } catch (const Error&) {
      return false;
    }
    ++tries;
    if (!still_fails(candidate)) return false;
    best = std::move(candidate);
    return true;
  };
  bool progress = true;
  while (progress && tries < max_tries) {
    progress = false;
    for (int o = static_cast<int>(best.outputs.size()) - 1; o >= 0 && best.outputs.size() > 1; --o)
      if (attempt(drop_output(o))) progress = true;
    for (int s = 0; s < static_cast<int>(best.states.size()); ++s)
      if (best.next_states[static_cast<std::size_t>(s)] != best.states[static_cast<std::size_t>(s)] &&
          attempt(keep_state(s)))
        progress = true;
    // Later nodes first: replacing a node near the outputs removes its whole cone at once.
    for (std::uint32_t i = static_cast<std::uint32_t>(best.graph.size()); i-- > 0;) {
      if (i >= best.graph.size()) continue;  // the cell shrank under us
      const Node n = best.graph.node(ValueId{i});
      if (n.op == OpKind::input || n.op == OpKind::state || n.op == OpKind::param || n.op == OpKind::constant) continue;
      bool replaced = false;
      for (ValueId in : n.inputs)
        if (!replaced && best.graph.node(in).shape == n.shape && attempt(replace(i, in))) replaced = true;
      for (ValueId leaf : best.states)
        if (!replaced && leaf.index < i && best.graph.node(leaf).shape == n.shape && attempt(replace(i, leaf)))
          replaced = true;
      for (ValueId leaf : best.inputs)
        if (!replaced && leaf.index < i && best.graph.node(leaf).shape == n.shape && attempt(replace(i, leaf)))
          replaced = true;
      if (!replaced && attempt(replace(i, std::nullopt))) replaced = true;
      progress = progress || replaced;
    }
  }
  return best;
}

}  // namespace cellfuse::stress
