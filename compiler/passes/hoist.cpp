#include "compiler/passes/hoist.h"

#include <functional>
#include <map>
#include <set>

#include "compiler/ir/error.h"
#include "compiler/ir/text.h"
#include "compiler/ir/verifier.h"
#include "compiler/passes/passes.h"

namespace cellfuse {
namespace {

// Recomputed: pre work that each later stage reading it computes itself (HoistOptions).
enum class Where { Invariant, Pre, Loop, Post, Recomputed };

int stage_rank(Where w) { return static_cast<int>(w); }

// Marks for recomputation the pre work that only later stages read and that is not a matrix
// product (see HoistOptions::recompute_pointwise). Users come after their operands in the
// graph, so one backward sweep takes whole chains: a value goes once every user of it has.
void mark_recomputed(const Cell& cell, std::vector<Where>& where) {
  const Graph& g = cell.graph;
  std::vector<std::vector<std::uint32_t>> users(g.size());
  for (std::uint32_t i = 0; i < g.size(); ++i)
    for (ValueId in : g.nodes()[i].inputs) users[in.index].push_back(i);
  std::vector<bool> is_output(g.size(), false);
  for (const auto& o : cell.outputs) is_output[o.value.index] = true;
  for (std::size_t i = g.size(); i-- > 0;) {
    const Node& n = g.nodes()[i];
    if (where[i] != Where::Pre || is_leaf(n.op) || op_info(n.op).op_class == OpClass::Contraction ||
        is_output[i] || users[i].empty())
      continue;
    bool later_only = true;
    for (std::uint32_t u : users[i]) later_only = later_only && where[u] != Where::Pre;
    if (later_only) where[i] = Where::Recomputed;
  }
}

// Classifies every node by what it depends on and what needs it.
std::vector<Where> classify(const Cell& cell, const HoistOptions& options) {
  const Graph& g = cell.graph;
  std::vector<bool> on_input(g.size(), false), on_state(g.size(), false), for_next(g.size(), false);
  for (std::uint32_t i = 0; i < g.size(); ++i) {
    const Node& n = g.nodes()[i];
    on_input[i] = n.op == OpKind::input;
    on_state[i] = n.op == OpKind::state;
    for (ValueId in : n.inputs) {
      on_input[i] = on_input[i] || on_input[in.index];
      on_state[i] = on_state[i] || on_state[in.index];
    }
  }
  for (ValueId v : cell.next_states) for_next[v.index] = true;
  for (std::size_t i = g.size(); i-- > 0;)
    if (for_next[i])
      for (ValueId in : g.nodes()[i].inputs) for_next[in.index] = true;
  std::vector<Where> where(g.size());
  // A state leaf belongs to the loop even when only post work reads it: the loop hands it over.
  for (std::uint32_t i = 0; i < g.size(); ++i)
    where[i] = g.nodes()[i].op == OpKind::state ? Where::Loop
               : on_state[i] ? (for_next[i] ? Where::Loop : Where::Post)
               : on_input[i] ? Where::Pre
                             : Where::Invariant;
  if (options.recompute_pointwise) mark_recomputed(cell, where);
  return where;
}

// A name not taken by any leaf or output of the cell: the boundary values between stages.
class NameSource {
 public:
  explicit NameSource(const Cell& cell) {
    for (const Node& n : cell.graph.nodes())
      if (!n.leaf_name().empty()) taken_.insert(std::string(n.leaf_name()));
    for (const auto& o : cell.outputs) taken_.insert(o.name);
  }
  std::string for_value(std::uint32_t index) {
    std::string name = "v" + std::to_string(index);
    while (taken_.count(name)) name = "_" + name;
    return name;
  }

 private:
  std::set<std::string> taken_;
};

class StageBuilder {
 public:
  StageBuilder(const Cell& cell, const std::vector<Where>& where, Where kind, NameSource& names)
      : cell_(cell), where_(where), kind_(kind), names_(names), map_(cell.graph.size()) {
    out_.emplace(cell.graph.dtype());
    out_->name = cell.name + (kind == Where::Pre ? "_pre" : kind == Where::Loop ? "_loop" : "_post");
  }

  // The value of original node `v` inside this stage: computed here, copied (invariant), or
  // imported from an earlier stage as an input leaf.
  ValueId get(ValueId v) {
    if (map_[v.index].valid()) return map_[v.index];
    const Node& n = cell_.graph.nodes()[v.index];
    Where w = where_[v.index];
    ValueId id;
    if (n.op == OpKind::param) {
      id = out_->add_param(std::string(n.leaf_name()), n.shape);
      stage_.params.push_back(param_index(v));
    } else if (n.op == OpKind::input || (w != kind_ && w != Where::Invariant && w != Where::Recomputed)) {
      id = import(v, n);
    } else {
      std::vector<ValueId> operands;
      for (ValueId in : n.inputs) operands.push_back(get(in));
      id = out_->graph.add(n.op, std::move(operands), n.attrs, n.shape);
    }
    map_[v.index] = id;
    return id;
  }

  void declare_states() {
    for (ValueId s : cell_.states)
      map_[s.index] = out_->add_state(std::string(cell_.leaf_name(s)), cell_.graph.node(s).shape.features());
  }

  void set_next(std::size_t state, ValueId value) {
    out_->set_next(out_->states[state], get(value));
  }

  int add_output(const std::string& name, ValueId v) {
    out_->add_output(name, get(v));
    return static_cast<int>(out_->outputs.size()) - 1;
  }

  // Called by the stage that owns `v` when a later stage needs it: returns its output index.
  int export_value(ValueId v) {
    auto it = exported_.find(v.index);
    if (it != exported_.end()) return it->second;
    int index = add_output(names_.for_value(v.index), v);
    exported_[v.index] = index;
    return index;
  }

  SequenceStage finish() {
    if (out_->outputs.empty() && out_->states.empty()) {
      stage_.cell.reset();
    } else {
      verify(*out_);
      stage_.cell = std::move(*out_);
    }
    return std::move(stage_);
  }

  // Set by hoist() so imports know whom to ask.
  std::function<int(Where, ValueId)> exporter;

 private:
  int param_index(ValueId v) const {
    for (std::size_t i = 0; i < cell_.params.size(); ++i)
      if (cell_.params[i] == v) return static_cast<int>(i);
    throw InternalError("param not in the cell's role list");
  }

  ValueId import(ValueId v, const Node& n) {
    StageInput source{StageInput::From::CellInput, 0};
    std::string name;
    if (n.op == OpKind::input) {
      for (std::size_t i = 0; i < cell_.inputs.size(); ++i)
        if (cell_.inputs[i] == v) source.index = static_cast<int>(i);
      name = std::string(n.leaf_name());
    } else {
      Where w = where_[v.index];
      if (stage_rank(w) >= stage_rank(kind_))
        throw InternalError("a stage imports from itself or a later stage");
      source.from = w == Where::Pre ? StageInput::From::Pre : StageInput::From::Loop;
      source.index = exporter(w, v);
      name = names_.for_value(v.index);
    }
    stage_.inputs.push_back(source);
    return out_->add_input(name, n.shape.features());
  }

  const Cell& cell_;
  const std::vector<Where>& where_;
  Where kind_;
  NameSource& names_;
  std::vector<ValueId> map_;
  std::optional<Cell> out_;
  SequenceStage stage_;
  std::map<std::uint32_t, int> exported_;
};

}  // namespace

SequencePlan hoist(const Cell& input_cell, const HoistOptions& options) {
  Cell cell = eliminate_dead_code(input_cell);
  verify(cell);
  std::vector<Where> where = classify(cell, options);
  NameSource names(cell);
  StageBuilder pre(cell, where, Where::Pre, names), loop(cell, where, Where::Loop, names),
      post(cell, where, Where::Post, names);
  auto exporter = [&](Where w, ValueId v) {
    return w == Where::Pre ? pre.export_value(v) : loop.export_value(v);
  };
  pre.exporter = loop.exporter = post.exporter = exporter;

  SequencePlan plan;
  // The loop first: its imports make pre export what it needs.
  loop.declare_states();
  for (std::size_t s = 0; s < cell.states.size(); ++s) loop.set_next(s, cell.next_states[s]);
  for (const auto& o : cell.outputs) {
    Where w = where[o.value.index];
    // An output that depends on nothing per step (a constant) is computed where it is cheapest
    // to store: with the inputs when there are any, else in the loop.
    if (w == Where::Invariant) w = cell.inputs.empty() ? Where::Loop : Where::Pre;
    StageBuilder& b = w == Where::Pre ? pre : w == Where::Loop ? loop : post;
    StageKind kind = w == Where::Pre ? StageKind::Pre : w == Where::Loop ? StageKind::Loop : StageKind::Post;
    plan.outputs.push_back({kind, b.add_output(o.name, o.value)});
  }
  // Post outputs were built above and imported from the loop and pre as they went; finishing in
  // reverse order is safe because imports only ever point to earlier stages.
  plan.post = post.finish();
  plan.loop = loop.finish();
  plan.pre = pre.finish();
  return plan;
}

std::string print_plan(const SequencePlan& plan) {
  std::string out;
  auto from_name = [](StageInput::From f) {
    return f == StageInput::From::CellInput ? "cell input" : f == StageInput::From::Pre ? "pre output" : "loop output";
  };
  const std::pair<const char*, const SequenceStage*> stages[] = {
      {"pre (all steps at once, before the loop)", &plan.pre},
      {"loop (every step)", &plan.loop},
      {"post (all steps at once, after the loop)", &plan.post}};
  for (const auto& [title, stage] : stages) {
    out += "# stage " + std::string(title) + "\n";
    if (!stage->cell) {
      out += "#   (no work)\n\n";
      continue;
    }
    for (std::size_t i = 0; i < stage->inputs.size(); ++i)
      out += "#   input %" + std::string(stage->cell->leaf_name(stage->cell->inputs[i])) + " <- " +
             from_name(stage->inputs[i].from) + " " + std::to_string(stage->inputs[i].index) + "\n";
    out += print_cell(*stage->cell) + "\n";
  }
  return out;
}

}  // namespace cellfuse
