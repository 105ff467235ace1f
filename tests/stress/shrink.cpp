#include "shrink.h"

#include <map>
#include <string>
#include <unordered_set>
#include <optional>

#include "compiler/ir/error.h"
#include "compiler/ir/text.h"
#include "compiler/ir/verifier.h"
#include "copy_node.h"

namespace cellfuse::stress {
namespace {

// A rewrite of a cell: nodes replaced (by an earlier value, or by a constant of their shape when
// there is none), outputs dropped, next states replaced by their state (the state then stays
// constant over the sequence).
struct Edit {
  std::map<std::uint32_t, std::optional<ValueId>> replace;
  std::vector<bool> drop_output;  // per output; empty: none
  std::vector<bool> keep_state;   // per state; empty: none
};

// The one node-copying loop: `cell`'s nodes in order into a new cell, skipping those `skip`
// marks (nullptr: none) and replacing those `edit` names; roles follow the copies. Returns the
// new cell with its map old index -> new value (outputs and next states still to add).
Cell copy_nodes(const Cell& cell, const std::vector<bool>* skip, const Edit& edit, std::vector<ValueId>& map) {
  Cell out(cell.graph.dtype());
  out.name = cell.name;
  const auto& nodes = cell.graph.nodes();
  map.assign(nodes.size(), ValueId{});
  for (std::uint32_t i = 0; i < nodes.size(); ++i) {
    if (skip && (*skip)[i]) continue;
    const Node& n = nodes[i];
    if (auto r = edit.replace.find(i); r != edit.replace.end()) {
      map[i] = r->second ? map[r->second->index] : out.graph.add_distinct(OpKind::constant, {}, {0.5}, n.shape);
      continue;
    }
    std::vector<ValueId> inputs;
    for (ValueId v : n.inputs) inputs.push_back(map[v.index]);
    map[i] = copy_node(out, n, std::move(inputs));
  }
  return out;
}

Cell apply(const Cell& cell, const Edit& edit) {
  std::vector<ValueId> map;
  Cell out = copy_nodes(cell, nullptr, edit, map);
  for (std::size_t o = 0; o < cell.outputs.size(); ++o)
    if (edit.drop_output.empty() || !edit.drop_output[o])
      out.outputs.push_back({cell.outputs[o].name, map[cell.outputs[o].value.index]});
  for (std::size_t s = 0; s < cell.next_states.size(); ++s)
    out.next_states.push_back(!edit.keep_state.empty() && edit.keep_state[s] ? map[cell.states[s].index]
                                                                             : map[cell.next_states[s].index]);
  return out;
}

bool is_leaf_or_constant(OpKind op) {
  return op == OpKind::input || op == OpKind::state || op == OpKind::param || op == OpKind::constant;
}

// What node i is replaced by when it is one of a group: its first operand of the same shape, or
// (none) a constant.
std::optional<ValueId> simplest_replacement(const Cell& cell, std::uint32_t i) {
  const Node& n = cell.graph.node(ValueId{i});
  for (ValueId in : n.inputs)
    if (cell.graph.node(in).shape == n.shape) return in;
  return std::nullopt;
}

}  // namespace

Cell drop_dead_nodes(const Cell& cell) {
  const auto& nodes = cell.graph.nodes();
  std::vector<bool> live(nodes.size(), false);
  for (const auto& o : cell.outputs) live[o.value.index] = true;
  for (ValueId v : cell.next_states) live[v.index] = true;
  for (std::size_t i = nodes.size(); i-- > 0;) {
    if (nodes[i].op == OpKind::input || nodes[i].op == OpKind::state || nodes[i].op == OpKind::param) live[i] = true;
    if (!live[i]) continue;
    for (ValueId in : nodes[i].inputs) live[in.index] = true;
  }
  std::vector<bool> dead(nodes.size());
  for (std::size_t i = 0; i < nodes.size(); ++i) dead[i] = !live[i];
  std::vector<ValueId> map;
  Cell out = copy_nodes(cell, &dead, Edit{}, map);
  for (const auto& o : cell.outputs) out.outputs.push_back({o.name, map[o.value.index]});
  for (ValueId v : cell.next_states) out.next_states.push_back(map[v.index]);
  return out;
}

Cell shrink_cell(const Cell& failing, const std::function<bool(const Cell&)>& still_fails, int max_tries) {
  Cell best = drop_dead_nodes(failing);
  if (!still_fails(best)) best = failing;
  int tries = 0;
  std::unordered_set<std::string> checked;
  auto attempt = [&](const Edit& e) {
    if (tries >= max_tries) return false;
    Cell candidate;
    try {
      candidate = drop_dead_nodes(apply(best, e));
      verify(candidate);
    } catch (const Error&) {
      return false;
    }
    // Only a smaller cell is worth a check (each compiles its programs at -O3: ~90% of the time),
    // and only one not checked before.
    if (candidate.graph.size() >= best.graph.size() && !(e.replace.empty() && candidate.graph.size() == best.graph.size() &&
                                                         candidate.outputs.size() < best.outputs.size()))
      return false;
    if (!checked.insert(print_cell(candidate)).second) return false;
    ++tries;
    if (!still_fails(candidate)) return false;
    best = std::move(candidate);
    return true;
  };
  // Delta debugging over a list of `count` items: try the edit of a chunk (`edit_of` the
  // indices [begin, end)), halves first, then quarters, down to single items. Indices refer to
  // the current `best`, which changes under us: `count` is re-read each round.
  auto chunks = [&](const std::function<std::size_t()>& count,
                    const std::function<std::optional<Edit>(std::size_t, std::size_t)>& edit_of) {
    bool progress = false;
    for (std::size_t size = std::max<std::size_t>(1, count() / 2);; size = std::max<std::size_t>(1, size / 2)) {
      for (std::size_t begin = 0; begin < count() && tries < max_tries;) {
        const auto e = edit_of(begin, std::min(count(), begin + size));
        if (e && attempt(*e))
          progress = true;  // the later items moved down to `begin`: look at it again
        else
          begin += size;
      }
      if (size == 1 || tries >= max_tries) return progress;
    }
  };
  // The non-leaf nodes of `best`, later ones first: replacing a node near the outputs removes its
  // whole cone at once.
  auto computing_nodes = [&] {
    std::vector<std::uint32_t> list;
    for (std::uint32_t i = static_cast<std::uint32_t>(best.graph.size()); i-- > 0;)
      if (!is_leaf_or_constant(best.graph.node(ValueId{i}).op)) list.push_back(i);
    return list;
  };
  bool progress = true;
  while (progress && tries < max_tries) {
    progress = false;
    progress |= chunks([&] { return best.outputs.size() > 1 ? best.outputs.size() : 0; },
                       [&](std::size_t b, std::size_t e) -> std::optional<Edit> {
                         if (e - b >= best.outputs.size()) return std::nullopt;  // one output stays
                         Edit edit;
                         edit.drop_output.assign(best.outputs.size(), false);
                         for (std::size_t o = b; o < e; ++o) edit.drop_output[o] = true;
                         return edit;
                       });
    progress |= chunks([&] { return best.states.size(); }, [&](std::size_t b, std::size_t e) -> std::optional<Edit> {
      Edit edit;
      edit.keep_state.assign(best.states.size(), false);
      bool any = false;
      for (std::size_t s = b; s < e; ++s)
        if (best.next_states[s] != best.states[s]) edit.keep_state[s] = any = true;
      return any ? std::optional<Edit>(edit) : std::nullopt;
    });
    // Groups of nodes, each replaced by its operand of the same shape or a constant.
    progress |= chunks([&] { return computing_nodes().size(); }, [&](std::size_t b, std::size_t e) {
      const auto nodes = computing_nodes();
      Edit edit;
      for (std::size_t k = b; k < e; ++k) edit.replace[nodes[k]] = simplest_replacement(best, nodes[k]);
      return std::optional<Edit>(edit);
    });
    // Single nodes, with the other replacements: any operand of the same shape, a state or an
    // input of its shape.
    for (std::uint32_t i = static_cast<std::uint32_t>(best.graph.size()); i-- > 0 && tries < max_tries;) {
      if (i >= best.graph.size()) continue;  // the cell shrank under us
      const Node n = best.graph.node(ValueId{i});
      if (is_leaf_or_constant(n.op)) continue;
      std::vector<ValueId> options;
      for (ValueId in : n.inputs)
        if (best.graph.node(in).shape == n.shape) options.push_back(in);
      // A state or input only for a node no operand can stand for (each option is a compile).
      if (options.empty())
        for (const auto* leaves : {&best.states, &best.inputs})
          for (ValueId leaf : *leaves)
            if (leaf.index < i && best.graph.node(leaf).shape == n.shape) options.push_back(leaf);
      for (ValueId with : options) {
        if (with == simplest_replacement(best, i)) continue;  // tried with the groups
        Edit edit;
        edit.replace[i] = with;
        if (attempt(edit)) {
          progress = true;
          break;
        }
      }
    }
  }
  return best;
}

}  // namespace cellfuse::stress
