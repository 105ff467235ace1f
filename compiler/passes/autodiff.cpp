// Reverse-mode autodiff of a cell (see autodiff.h for the contract). One sweep over the forward
// graph in reverse definition order (a reverse topological order) gathers each value's gradient
// from its users and applies the value's local rule (grad_rules.cpp); forward values a rule needs
// are rebuilt inside the backward step from its inputs ("mirrors"), reading contraction outputs
// from saves. The result goes through the ordinary simplify/CSE/DCE pipeline, then the step's
// leaves are pruned to the ones it reads and put in a fixed order.
#include "compiler/passes/autodiff.h"

#include <algorithm>
#include <map>
#include <optional>
#include <set>

#include "compiler/ir/error.h"
#include "compiler/ir/text.h"
#include "compiler/ir/verifier.h"
#include "compiler/lower.h"
#include "compiler/passes/grad_rules.h"
#include "compiler/passes/save_policy.h"

namespace cellfuse {
namespace {

using autodiff_detail::GradContext;
using autodiff_detail::min_bytes_saves;
using autodiff_detail::must_save;

// Unique names: `fresh("x")` is "x", then "x.2", "x.3", ...
class Names {
 public:
  void take(std::string name) { taken_.insert(std::move(name)); }
  std::string fresh(const std::string& base) {
    std::string name = base;
    for (int k = 2; taken_.count(name); ++k) name = base + "." + std::to_string(k);
    taken_.insert(name);
    return name;
  }

 private:
  std::set<std::string> taken_;
};

// One contribution to a value's gradient: the whole value (start < 0) or features
// [start, start + width) of it (from a slice's rule).
struct Piece {
  ValueId value;
  std::int64_t start;
};

struct PendingTerm {
  ParamGradTerm::Kind kind;
  int param;
  ValueId a, b;
  std::string name_a, name_b;  // output names, should a or b become a step output
};

// Sort key of a step input leaf: kind first, then index (for saves, the forward node's index).
struct SourceKey {
  StepInputSource::Kind kind;
  int index;
  friend auto operator<=>(const SourceKey&, const SourceKey&) = default;
};

class Differentiator final : public GradContext {
 public:
  // `saves`: which forward values to save (indexed by the optimized forward's nodes); when not
  // given, the batched outputs of contractions on a gradient path.
  Differentiator(const Cell& forward, const AutodiffOptions& options,
                 std::optional<std::vector<bool>> saves = std::nullopt)
      : f_(optimize(forward)),
        options_(options),
        step_(f_.graph.dtype()),
        saves_(std::move(saves)) {
    const Graph& g = f_.graph;
    const std::size_t n = g.size();
    active_.assign(n, false);
    needed_.assign(n, false);
    mirror_.assign(n, ValueId{});
    adj_.assign(n, {});
    role_index_.assign(n, -1);
    for (std::uint32_t i = 0; i < n; ++i) {
      const Node& node = g.nodes()[i];
      bool active =
          node.op == OpKind::input || node.op == OpKind::state || node.op == OpKind::param;
      for (ValueId in : node.inputs) active = active || active_[in.index];
      active_[i] = active;
    }
    for (std::size_t i = 0; i < f_.inputs.size(); ++i)
      role_index_[f_.inputs[i].index] = static_cast<int>(i);
    for (std::size_t i = 0; i < f_.states.size(); ++i)
      role_index_[f_.states[i].index] = static_cast<int>(i);
    for (std::size_t i = 0; i < f_.params.size(); ++i)
      role_index_[f_.params[i].index] = static_cast<int>(i);

    step_.name = f_.name.size() <= 200 ? f_.name + "_backward" : "backward";
    // Temporary leaf names (final ones are given when the step is tidied up) must not clash
    // with the parameters, which keep theirs.
    for (ValueId p : f_.params) temp_names_.take(std::string(f_.leaf_name(p)));
    for (ValueId s : f_.states)
      step_.add_state(temp_names_.fresh("tmp.dnext"), f_.graph.node(s).shape.features());
    for (ValueId p : f_.params)
      step_.add_param(std::string(f_.leaf_name(p)), f_.graph.node(p).shape);
  }

  BackwardCell run() {
    sweep();
    return finish();
  }

  // The reverse sweep: every gradient rule applied once, in reverse definition order.
  void sweep() {
    const Graph& g = f_.graph;
    // Seeds: dL/dy_t of every output and dL/ds_{t+1} of every next state.
    for (std::size_t o = 0; o < f_.outputs.size(); ++o)
      contribute(f_.outputs[o].value,
                 {source_leaf({StepInputSource::Kind::OutputGrad, static_cast<int>(o)}), -1});
    for (std::size_t s = 0; s < f_.states.size(); ++s)
      contribute(f_.next_states[s], {step_.states[s], -1});

    for (std::uint32_t i = static_cast<std::uint32_t>(g.size()); i-- > 0;) {
      const Node& node = g.nodes()[i];
      if (adj_[i].empty() || is_leaf(node.op)) continue;
      if (!has_grad_rule(node.op) ||
          std::find(options_.without_rule.begin(), options_.without_rule.end(), node.op) !=
              options_.without_rule.end())
        throw Error("autodiff: cell '" + f_.name + "': op '" + std::string(op_name(node.op)) +
                    "' (" + g.describe(ValueId{i}) +
                    ") has no gradient rule, so the cell cannot be differentiated");
      ValueId dy = gather(i);
      current_ = &node;
      current_id_ = ValueId{i};
      autodiff_detail::apply_grad_rule(node, dy, *this);
      current_ = nullptr;
    }
  }

  // The forward (optimized) and the forward values the rules read, after sweep().
  const Cell& forward() const { return f_; }
  const std::vector<bool>& active() const { return active_; }
  const std::vector<bool>& needed() const { return needed_; }

  // The backward step's outputs and next states, through the pipeline, tidied.
  BackwardCell finish() {
    // dL/dx_t of every input, then the operands of the parameter terms, as step outputs.
    Names output_names;
    for (ValueId x : f_.inputs)
      step_.add_output(output_names.fresh("d" + std::string(f_.leaf_name(x))), gradient_or_zero(x));
    std::map<ValueId, int> output_of;
    auto as_output = [&](ValueId v, const std::string& name) {
      auto [it, fresh] = output_of.emplace(v, static_cast<int>(step_.outputs.size()));
      if (fresh) step_.add_output(output_names.fresh(name), v);
      return it->second;
    };
    std::vector<std::pair<int, int>> term_outputs;
    for (const PendingTerm& t : terms_)
      term_outputs.emplace_back(as_output(t.a, t.name_a), t.kind == ParamGradTerm::Kind::GemmAtB
                                                              ? as_output(t.b, t.name_b)
                                                              : -1);
    // dL/ds_t of every state.
    for (std::size_t s = 0; s < f_.states.size(); ++s)
      step_.next_states[s] = gradient_or_zero(f_.states[s]);

    return tidy(optimize(step_), term_outputs);
  }

  // GradContext.
  Graph& graph() override { return step_.graph; }
  ValueId operand(int k) override {
    ValueId v = current_->inputs[static_cast<std::size_t>(k)];
    needed_[v.index] = true;
    return mirror(v);
  }
  ValueId result() override {
    needed_[current_id_.index] = true;
    return mirror(current_id_);
  }
  const Shape& operand_shape(int k) const override {
    return f_.graph.node(current_->inputs[static_cast<std::size_t>(k)]).shape;
  }
  bool needs_grad(int k) const override {
    return active_[current_->inputs[static_cast<std::size_t>(k)].index];
  }
  void add_grad(int k, ValueId grad) override {
    contribute(current_->inputs[static_cast<std::size_t>(k)], {grad, -1});
  }
  void add_grad_slice(int k, std::int64_t start, ValueId grad) override {
    contribute(current_->inputs[static_cast<std::size_t>(k)], {grad, start});
  }
  void weight_grad(int k, ValueId a, ValueId b) override {
    add_term(ParamGradTerm::Kind::GemmAtB, k, a, b);
  }
  void vector_grad(int k, ValueId a) override { add_term(ParamGradTerm::Kind::RowSum, k, a, {}); }

 private:
  // The step input leaf fed from `key`, made on first use (with a temporary name).
  ValueId source_leaf(SourceKey key) {
    auto it = source_leaves_.find(key);
    if (it != source_leaves_.end()) return it->second;
    Shape shape;
    switch (key.kind) {
      case StepInputSource::Kind::ForwardInput:
        shape = f_.graph.node(f_.inputs[static_cast<std::size_t>(key.index)]).shape;
        break;
      case StepInputSource::Kind::ForwardState:
        shape = f_.graph.node(f_.states[static_cast<std::size_t>(key.index)]).shape;
        break;
      case StepInputSource::Kind::Saved:
        shape = f_.graph.nodes()[static_cast<std::size_t>(key.index)].shape;
        break;
      case StepInputSource::Kind::OutputGrad:
        shape = f_.graph.node(f_.outputs[static_cast<std::size_t>(key.index)].value).shape;
        break;
    }
    ValueId leaf = step_.add_input(temp_names_.fresh("tmp.in"), shape.features());
    sources_.push_back(key);
    source_leaves_.emplace(key, leaf);
    return leaf;
  }

  // Saved, not recomputed: as `saves_` says, else the batched result of a contraction on a
  // gradient path.
  bool is_saved(std::uint32_t i) const {
    if (saves_) return (*saves_)[i];
    return must_save(f_.graph.nodes()[i], active_[i]);
  }

  // Forward value `v` inside the backward step: a step input, a parameter, or recomputed from
  // those (an explicit stack: user graphs may be deep).
  ValueId mirror(ValueId v) {
    std::vector<ValueId> stack{v};
    while (!stack.empty()) {
      const std::uint32_t u = stack.back().index;
      if (mirror_[u].valid()) {
        stack.pop_back();
        continue;
      }
      const Node& n = f_.graph.nodes()[u];
      std::optional<ValueId> direct;
      switch (n.op) {
        case OpKind::input:
          direct = source_leaf({StepInputSource::Kind::ForwardInput, role_index_[u]});
          break;
        case OpKind::state:
          direct = source_leaf({StepInputSource::Kind::ForwardState, role_index_[u]});
          break;
        case OpKind::param:
          direct = step_.params[static_cast<std::size_t>(role_index_[u])];
          break;
        case OpKind::constant:
          direct = step_.graph.add(OpKind::constant, {}, n.attrs, n.shape);
          break;
        default:
          if (is_saved(u))
            direct = source_leaf({StepInputSource::Kind::Saved, static_cast<int>(u)});
      }
      if (direct) {
        mirror_[u] = *direct;
        stack.pop_back();
        continue;
      }
      bool ready = true;
      for (ValueId in : n.inputs)
        if (!mirror_[in.index].valid()) {
          stack.push_back(in);
          ready = false;
        }
      if (!ready) continue;
      std::vector<ValueId> operands;
      for (ValueId in : n.inputs) operands.push_back(mirror_[in.index]);
      mirror_[u] = step_.graph.add(n.op, std::move(operands), n.attrs);
      stack.pop_back();
    }
    return mirror_[v.index];
  }

  // The parameters a value depends on, in declaration order, for messages: "%p, %q".
  std::string params_of(ValueId v) const {
    std::vector<bool> reaches(v.index + 1, false);
    reaches[v.index] = true;
    std::string out;
    for (std::uint32_t i = v.index + 1; i-- > 0;) {
      if (!reaches[i]) continue;
      for (ValueId in : f_.graph.nodes()[i].inputs) reaches[in.index] = true;
    }
    for (ValueId p : f_.params)
      if (p.index <= v.index && reaches[p.index])
        out += (out.empty() ? "%" : ", %") + std::string(f_.leaf_name(p));
    return out;
  }

  [[noreturn]] void unsupported(ValueId target) const {
    const Graph& g = f_.graph;
    const Node& t = g.node(target);
    std::string via = t.op == OpKind::param
                          ? "is used directly by `" + std::string(op_name(current_->op)) + "` (" +
                                g.describe(current_id_) + ")"
                          : "would get its gradient through `" + std::string(op_name(t.op)) +
                                "` (" + g.describe(target) +
                                "), an unbatched computation on parameters";
    throw Error("autodiff: cell '" + f_.name + "': unsupported use of parameter " +
                params_of(target) + ": it " + via +
                ". Parameter gradients are supported only for a parameter used directly as a "
                "linear/matmul weight, a linear bias, or a vector broadcast over the batch; other "
                "uses are not supported yet");
  }

  void contribute(ValueId target, Piece piece) {
    if (!active_[target.index]) return;
    const Node& t = f_.graph.node(target);
    if (t.op == OpKind::param || (!t.shape.is_batched() && !is_leaf(t.op))) unsupported(target);
    adj_[target.index].push_back(piece);
  }

  void add_term(ParamGradTerm::Kind kind, int k, ValueId a, ValueId b) {
    ValueId target = current_->inputs[static_cast<std::size_t>(k)];
    if (!active_[target.index]) return;
    if (f_.graph.node(target).op != OpKind::param) unsupported(target);
    std::string p(f_.leaf_name(target));
    bool a_is_grad = current_->op != OpKind::matmul;
    terms_.push_back({kind, role_index_[target.index], a, b, (a_is_grad ? "dz." : "in.") + p,
                      (a_is_grad ? "in." : "dz.") + p});
  }

  ValueId zeros(const Shape& shape) { return step_.graph.add(OpKind::constant, {}, {0.0}, shape); }

  // The gradient of forward value i: the sum of its whole-value pieces and of its slice pieces,
  // the slices assembled into cats (zeros only in the gaps), as few cats as overlaps allow.
  ValueId gather(std::uint32_t i) {
    Graph& g = step_.graph;
    const Shape shape = f_.graph.nodes()[i].shape;
    std::optional<ValueId> total;
    auto accumulate = [&](ValueId v) { total = total ? g.add(OpKind::add, {*total, v}) : v; };
    std::vector<Piece> slices;
    for (const Piece& p : adj_[i]) {
      if (p.start < 0)
        accumulate(p.value);
      else
        slices.push_back(p);
    }
    std::stable_sort(slices.begin(), slices.end(),
                     [](const Piece& a, const Piece& b) { return a.start < b.start; });
    auto width = [&](const Piece& p) { return g.node(p.value).shape.features(); };
    std::vector<std::vector<Piece>> layers;
    for (const Piece& p : slices) {
      auto fits = [&](const std::vector<Piece>& layer) {
        return layer.back().start + width(layer.back()) <= p.start;
      };
      auto layer = std::find_if(layers.begin(), layers.end(), fits);
      if (layer == layers.end())
        layers.push_back({p});
      else
        layer->push_back(p);
    }
    for (const auto& layer : layers) {
      std::vector<ValueId> parts;
      std::int64_t at = 0;
      for (const Piece& p : layer) {
        if (p.start > at) parts.push_back(zeros(shape.with_features(p.start - at)));
        parts.push_back(p.value);
        at = p.start + width(p);
      }
      if (at < shape.features()) parts.push_back(zeros(shape.with_features(shape.features() - at)));
      accumulate(parts.size() == 1 ? parts[0] : g.add(OpKind::cat, parts));
    }
    if (!total) throw InternalError("autodiff: gathering a value without gradient pieces");
    return *total;
  }

  ValueId gradient_or_zero(ValueId leaf) {
    return adj_[leaf.index].empty() ? zeros(f_.graph.node(leaf).shape) : gather(leaf.index);
  }

  // The final step: only the input leaves it reads, in the order forward inputs, forward
  // states, saves (in forward order), output gradients; then the gradient states and the
  // parameters; final names; term operands that are step inputs read from there.
  BackwardCell tidy(const Cell& s, const std::vector<std::pair<int, int>>& term_outputs) {
    const Graph& g = s.graph;
    std::vector<bool> used(g.size(), false);
    for (const Node& n : g.nodes())
      for (ValueId in : n.inputs) used[in.index] = true;
    for (const auto& o : s.outputs) used[o.value.index] = true;
    for (ValueId v : s.next_states) used[v.index] = true;

    std::vector<std::size_t> order;  // indices into s.inputs (parallel to sources_)
    for (std::size_t j = 0; j < s.inputs.size(); ++j)
      if (used[s.inputs[j].index]) order.push_back(j);
    std::sort(order.begin(), order.end(),
              [&](std::size_t a, std::size_t b) { return sources_[a] < sources_[b]; });

    BackwardCell out;
    out.forward = f_;
    out.user_outputs = static_cast<int>(f_.outputs.size());
    Cell step(g.dtype());
    step.name = s.name;
    Names names;
    for (ValueId p : f_.params) names.take(std::string(f_.leaf_name(p)));
    std::vector<ValueId> map(g.size());
    std::vector<std::uint32_t> saved_nodes;
    for (std::size_t j : order) {
      const SourceKey& key = sources_[j];
      const auto idx = static_cast<std::size_t>(key.index);
      std::string name;
      StepInputSource source{key.kind, key.index};
      switch (key.kind) {
        case StepInputSource::Kind::ForwardInput:
          name = std::string(f_.leaf_name(f_.inputs[idx]));
          break;
        case StepInputSource::Kind::ForwardState:
          name = std::string(f_.leaf_name(f_.states[idx]));
          break;
        case StepInputSource::Kind::Saved:
          source.index = static_cast<int>(saved_nodes.size());
          saved_nodes.push_back(static_cast<std::uint32_t>(key.index));
          name = "saved." + std::to_string(source.index);
          break;
        case StepInputSource::Kind::OutputGrad:
          name = "dout." + f_.outputs[idx].name;
          break;
      }
      map[s.inputs[j].index] =
          step.add_input(names.fresh(name), g.node(s.inputs[j]).shape.features());
      out.step_inputs.push_back(source);
    }
    for (std::size_t i = 0; i < s.states.size(); ++i)
      map[s.states[i].index] =
          step.add_state(names.fresh("dnext." + std::string(f_.leaf_name(f_.states[i]))),
                         g.node(s.states[i]).shape.features());
    for (std::size_t i = 0; i < s.params.size(); ++i)
      map[s.params[i].index] =
          step.add_param(std::string(f_.leaf_name(f_.params[i])), g.node(s.params[i]).shape);
    for (std::uint32_t i = 0; i < g.size(); ++i) {
      const Node& n = g.nodes()[i];
      if (!n.leaf_name().empty()) continue;
      std::vector<ValueId> operands;
      for (ValueId in : n.inputs) operands.push_back(map[in.index]);
      map[i] = step.graph.add_distinct(n.op, std::move(operands), n.attrs, n.shape);
    }

    // Outputs: every dx; then the term operands, each once, unless it is a step input.
    std::map<ValueId, int> input_of, output_of;
    for (std::size_t j = 0; j < step.inputs.size(); ++j)
      input_of[step.inputs[j]] = static_cast<int>(j);
    const std::size_t n_dx = f_.inputs.size();
    for (std::size_t o = 0; o < n_dx; ++o) {
      ValueId v = map[s.outputs[o].value.index];
      output_of.emplace(v, static_cast<int>(step.outputs.size()));
      step.add_output(s.outputs[o].name, v);
    }
    auto term_value = [&](int output) -> StepValue {
      ValueId v = map[s.outputs[static_cast<std::size_t>(output)].value.index];
      if (auto it = input_of.find(v); it != input_of.end())
        return {StepValue::Kind::Input, it->second};
      auto [it, fresh] = output_of.emplace(v, static_cast<int>(step.outputs.size()));
      if (fresh) step.add_output(s.outputs[static_cast<std::size_t>(output)].name, v);
      return {StepValue::Kind::Output, it->second};
    };
    for (std::size_t t = 0; t < terms_.size(); ++t) {
      ParamGradTerm term{terms_[t].kind, terms_[t].param, term_value(term_outputs[t].first), {}};
      if (term.kind == ParamGradTerm::Kind::GemmAtB) term.b = term_value(term_outputs[t].second);
      out.param_terms.push_back(term);
    }
    for (std::size_t i = 0; i < s.next_states.size(); ++i)
      step.next_states[i] = map[s.next_states[i].index];
    // Once more through the pipeline: the leaves' new order changes how CSE orders the operands
    // of commutative ops, and the step should print as its own optimized form.
    out.step = optimize(step);

    // The forward with its saves as extra outputs.
    Names forward_outputs;
    for (const auto& o : out.forward.outputs) forward_outputs.take(o.name);
    for (std::size_t k = 0; k < saved_nodes.size(); ++k) {
      out.saved_outputs.push_back(static_cast<int>(out.forward.outputs.size()));
      out.forward.add_output(forward_outputs.fresh("saved." + std::to_string(k)),
                             ValueId{saved_nodes[k]});
    }
    verify(out.forward);
    return out;
  }

  Cell f_;  // the forward, optimized
  const AutodiffOptions& options_;
  Cell step_;  // the backward step being built
  std::optional<std::vector<bool>> saves_;
  std::vector<bool> active_;             // depends on an input, a state or a parameter
  std::vector<bool> needed_;             // read by a gradient rule
  std::vector<ValueId> mirror_;          // forward value -> its value in step_
  std::vector<std::vector<Piece>> adj_;  // forward value -> its gradient's pieces
  std::vector<int> role_index_;          // forward leaf -> its index in inputs/states/params
  std::map<SourceKey, ValueId> source_leaves_;
  std::vector<SourceKey> sources_;  // parallel to step_.inputs
  std::vector<PendingTerm> terms_;
  Names temp_names_;
  const Node* current_ = nullptr;  // the node whose rule runs
  ValueId current_id_;
};

}  // namespace

BackwardCell differentiate(const Cell& forward, const AutodiffOptions& options) {
  if (options.save == SavePolicy::Contractions) return Differentiator(forward, options).run();
  // What the rules read does not depend on what is saved: one sweep finds it, a second one
  // builds the step with the cheapest saves.
  Differentiator probe(forward, options);
  probe.sweep();
  return Differentiator(forward, options,
                        min_bytes_saves(probe.forward(), probe.active(), probe.needed()))
      .run();
}

}  // namespace cellfuse
