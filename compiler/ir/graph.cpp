#include "compiler/ir/graph.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "compiler/ir/error.h"

namespace cellfuse {
namespace {

constexpr std::int64_t kMaxDim = std::int64_t{1} << 24;

std::uint64_t mix(std::uint64_t h, std::uint64_t v) {
  // FNV-1a over the 8 bytes of v: simple and stable across runs and platforms.
  for (int i = 0; i < 8; ++i) {
    h ^= (v >> (8 * i)) & 0xff;
    h *= 0x100000001b3ULL;
  }
  return h;
}

std::uint64_t mix_string(std::uint64_t h, std::string_view s) {
  h = mix(h, s.size());
  for (char c : s) h = mix(h, static_cast<unsigned char>(c));
  return h;
}

bool same_attr(const AttrValue& a, const AttrValue& b) {
  if (a.index() != b.index()) return false;
  if (const double* x = std::get_if<double>(&a))
    return std::bit_cast<std::uint64_t>(*x) == std::bit_cast<std::uint64_t>(std::get<double>(b));
  return a == b;
}

std::string attr_kind_name(AttrKind kind) {
  switch (kind) {
    case AttrKind::Int: return "an integer";
    case AttrKind::Float: return "a number";
    case AttrKind::String: return "a string";
  }
  return "?";
}

const AttrValue& find_attr(const Node& node, std::string_view name) {
  const auto& specs = op_info(node.op).attrs;
  for (std::size_t i = 0; i < specs.size() && i < node.attrs.size(); ++i)
    if (specs[i].name == name) return node.attrs[i];
  throw InternalError(std::string(op_name(node.op)) + " has no attribute " + std::string(name));
}

void check_leaf_shape(OpKind op, std::string_view name, const Shape& shape) {
  auto fail = [&](const std::string& why) {
    throw Error(std::string(op_name(op)) + " %" + std::string(name) + ": shape " +
                to_string(shape) + " " + why);
  };
  if (shape.rank < 1 || shape.rank > 2) fail("must have rank 1 or 2");
  for (int i = 0; i < shape.rank; ++i) {
    std::int64_t d = shape.dims[i];
    bool batch_ok = i == 0 && shape.rank == 2 && d == Shape::kBatch;
    if (!batch_ok && (d < 1 || d > kMaxDim))
      fail("has a dimension out of range (1.." + std::to_string(kMaxDim) + ")");
  }
  if ((op == OpKind::input || op == OpKind::state) && !shape.is_batched())
    fail("must be [B,n]: per-step inputs and states are batched");
  if (op == OpKind::param && shape.is_batched())
    fail("must not be batched: parameters are shared by the whole batch");
}

}  // namespace

std::int64_t Node::int_attr(std::string_view name) const {
  return std::get<std::int64_t>(find_attr(*this, name));
}
double Node::float_attr(std::string_view name) const {
  return std::get<double>(find_attr(*this, name));
}
const std::string& Node::string_attr(std::string_view name) const {
  return std::get<std::string>(find_attr(*this, name));
}
std::string_view Node::leaf_name() const {
  if (op == OpKind::input || op == OpKind::state || op == OpKind::param)
    return std::get<std::string>(attrs.at(0));
  return {};
}

bool same_node(const Node& a, const Node& b) {
  if (a.op != b.op || a.shape != b.shape || a.inputs != b.inputs ||
      a.attrs.size() != b.attrs.size())
    return false;
  for (std::size_t i = 0; i < a.attrs.size(); ++i)
    if (!same_attr(a.attrs[i], b.attrs[i])) return false;
  return true;
}

std::uint64_t node_hash(const Node& node) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  h = mix(h, static_cast<std::uint64_t>(node.op));
  h = mix(h, static_cast<std::uint64_t>(node.shape.rank));
  for (auto d : node.shape.dims) h = mix(h, static_cast<std::uint64_t>(d));
  h = mix(h, node.inputs.size());
  for (auto in : node.inputs) h = mix(h, in.index);
  for (const auto& a : node.attrs) {
    h = mix(h, a.index());
    if (auto* i = std::get_if<std::int64_t>(&a)) h = mix(h, static_cast<std::uint64_t>(*i));
    if (auto* d = std::get_if<double>(&a)) h = mix(h, std::bit_cast<std::uint64_t>(*d));
    if (auto* s = std::get_if<std::string>(&a)) h = mix_string(h, *s);
  }
  return h;
}

bool is_identifier(std::string_view name) {
  if (name.empty() || name.size() > 256) return false;
  auto alpha = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; };
  if (!alpha(name[0])) return false;
  for (char c : name)
    if (!alpha(c) && !(c >= '0' && c <= '9') && c != '.') return false;
  return true;
}

const Node& Graph::node(ValueId id) const {
  if (!id.valid() || id.index >= nodes_.size())
    throw InternalError("value id " + std::to_string(id.index) + " out of range");
  return nodes_[id.index];
}

Node Graph::make_node(OpKind op, std::vector<ValueId> inputs, std::vector<AttrValue> attrs,
                      std::optional<Shape> shape) const {
  const OpInfo& info = op_info(op);
  const std::string name(info.name);
  int n = static_cast<int>(inputs.size());
  if (n < info.min_arity || (info.max_arity >= 0 && n > info.max_arity)) {
    std::string expected = info.min_arity == info.max_arity ? std::to_string(info.min_arity)
                           : info.max_arity < 0 ? "at least " + std::to_string(info.min_arity)
                                                : std::to_string(info.min_arity) + " to " +
                                                      std::to_string(info.max_arity);
    throw Error(name + ": expects " + expected + " operand(s), got " + std::to_string(n));
  }
  for (std::size_t i = 0; i < inputs.size(); ++i)
    if (!inputs[i].valid() || inputs[i].index >= nodes_.size())
      throw Error(name + ": operand " + std::to_string(i) + " is not a value of this graph");
  if (attrs.size() != info.attrs.size())
    throw Error(name + ": expects " + std::to_string(info.attrs.size()) + " attribute(s), got " +
                std::to_string(attrs.size()));
  for (std::size_t i = 0; i < attrs.size(); ++i) {
    const AttrSpec& spec = info.attrs[i];
    // An integer literal is a fine value for a float attribute.
    if (spec.kind == AttrKind::Float && std::holds_alternative<std::int64_t>(attrs[i]))
      attrs[i] = static_cast<double>(std::get<std::int64_t>(attrs[i]));
    bool ok = (spec.kind == AttrKind::Int && std::holds_alternative<std::int64_t>(attrs[i])) ||
              (spec.kind == AttrKind::Float && std::holds_alternative<double>(attrs[i])) ||
              (spec.kind == AttrKind::String && std::holds_alternative<std::string>(attrs[i]));
    if (!ok)
      throw Error(name + ": attribute " + std::string(spec.name) + " must be " +
                  attr_kind_name(spec.kind));
  }

  if (op == OpKind::constant) {
    double& value = std::get<double>(attrs[0]);
    // An f32 cell computes with the float nearest the constant: store that float, so that
    // equal floats are one node, folding agrees with the kernels, and the text shows the short
    // float spelling ("0.1", not "0.10000000149011612").
    if (dtype_ == DType::f32) value = static_cast<double>(static_cast<float>(value));
    // NaN payloads and signs mean nothing in the IR (0/0 folds to -nan on x86, "nan" parses to
    // +nan): one canonical NaN lets every NaN constant print as `nan`, parse back to the same
    // bits and share one node.
    if (std::isnan(value)) value = std::numeric_limits<double>::quiet_NaN();
  }

  Node node{op, Shape{}, std::move(inputs), std::move(attrs)};
  if (info.op_class == OpClass::Leaf) {
    std::string leaf = op == OpKind::constant ? "constant" : std::string(node.leaf_name());
    if (op != OpKind::constant && !is_identifier(leaf))
      throw Error(name + ": '" + leaf + "' is not a valid name (letters, digits, _ and .)");
    if (!shape) throw Error(name + " %" + leaf + ": a shape must be given");
    check_leaf_shape(op, leaf, *shape);
    node.shape = *shape;
    // A vector's unused second dimension is always 0, so that shapes compare and hash by value.
    if (node.shape.rank == 1) node.shape.dims[1] = 0;
  } else {
    node.shape = infer_shape(*this, op, node.inputs, node.attrs);
    if (shape && *shape != node.shape)
      throw Error(name + ": declared shape " + to_string(*shape) + " but the operands give " +
                  to_string(node.shape));
  }
  return node;
}

ValueId Graph::append(Node node) {
  if (nodes_.size() >= ValueId::kInvalid - 1) throw Error("graph too large");
  ValueId id{static_cast<std::uint32_t>(nodes_.size())};
  by_hash_.emplace(node_hash(node), id);
  if (auto leaf = node.leaf_name(); !leaf.empty()) leaves_by_name_.emplace(std::string(leaf), id);
  nodes_.push_back(std::move(node));
  return id;
}

ValueId Graph::add(OpKind op, std::vector<ValueId> inputs, std::vector<AttrValue> attrs,
                   std::optional<Shape> shape) {
  Node node = make_node(op, std::move(inputs), std::move(attrs), shape);
  if (node.leaf_name().empty()) {
    auto [lo, hi] = by_hash_.equal_range(node_hash(node));
    for (auto it = lo; it != hi; ++it)
      if (same_node(nodes_[it->second.index], node)) return it->second;
  }
  return add_distinct(node.op, std::move(node.inputs), std::move(node.attrs), node.shape);
}

ValueId Graph::add_distinct(OpKind op, std::vector<ValueId> inputs, std::vector<AttrValue> attrs,
                            std::optional<Shape> shape) {
  Node node = make_node(op, std::move(inputs), std::move(attrs), shape);
  if (auto leaf = node.leaf_name(); !leaf.empty() && leaves_by_name_.count(std::string(leaf)))
    throw Error(std::string(op_name(op)) + " %" + std::string(leaf) +
                ": the name is already declared");
  return append(std::move(node));
}

std::optional<ValueId> Graph::find_leaf(std::string_view name) const {
  auto it = leaves_by_name_.find(std::string(name));
  if (it == leaves_by_name_.end()) return std::nullopt;
  return it->second;
}

void Graph::set_debug_name(ValueId id, std::string name) {
  if (!id.valid() || id.index >= nodes_.size()) throw InternalError("set_debug_name: bad value");
  if (nodes_[id.index].leaf_name().empty()) debug_names_[id.index] = std::move(name);
}

std::string Graph::ref(ValueId id) const {
  if (!id.valid() || id.index >= nodes_.size()) return "%<invalid>";
  if (auto leaf = nodes_[id.index].leaf_name(); !leaf.empty()) return "%" + std::string(leaf);
  if (auto it = debug_names_.find(id.index); it != debug_names_.end()) return "%" + it->second;
  // print_cell numbers the values that are not named leaves, in order. Counting here costs
  // O(n), but only when a message is made.
  std::uint32_t ordinal = 0;
  for (std::uint32_t i = 0; i < id.index; ++i)
    if (nodes_[i].leaf_name().empty()) ++ordinal;
  return "%" + std::to_string(ordinal);
}

std::string Graph::describe(ValueId id) const {
  if (!id.valid() || id.index >= nodes_.size()) return "%<invalid>";
  return ref(id) + " " + to_string(nodes_[id.index].shape);
}

ValueId Cell::add_input(std::string leaf_name, std::int64_t features) {
  ValueId id = graph.add_distinct(OpKind::input, {}, {std::move(leaf_name)}, Shape::batched(features));
  inputs.push_back(id);
  return id;
}

ValueId Cell::add_state(std::string leaf_name, std::int64_t features) {
  ValueId id = graph.add_distinct(OpKind::state, {}, {std::move(leaf_name)}, Shape::batched(features));
  states.push_back(id);
  next_states.push_back(ValueId{});
  return id;
}

ValueId Cell::add_param(std::string leaf_name, Shape shape) {
  ValueId id = graph.add_distinct(OpKind::param, {}, {std::move(leaf_name)}, shape);
  params.push_back(id);
  return id;
}

void Cell::add_output(std::string output_name, ValueId value) {
  if (!is_identifier(output_name)) throw Error("output '" + output_name + "': not a valid name");
  for (const auto& o : outputs)
    if (o.name == output_name) throw Error("output '" + output_name + "': declared twice");
  if (!value.valid() || value.index >= graph.size())
    throw Error("output '" + output_name + "': not a value of this cell");
  if (!graph.node(value).shape.is_batched())
    throw Error("output '" + output_name + "': " + graph.describe(value) +
                " is not batched; per-step outputs must be [B,n]");
  outputs.push_back({std::move(output_name), value});
}

void Cell::set_next(ValueId state, ValueId value) {
  int i = state_index(state);
  if (i < 0) throw Error("next: " + graph.ref(state) + " is not a state");
  if (next_states[i].valid())
    throw Error("next: state " + graph.ref(state) + " is updated twice");
  if (!value.valid() || value.index >= graph.size())
    throw Error("next: state " + graph.ref(state) + ": the new value is not a value of this cell");
  const Shape& want = graph.node(state).shape;
  const Shape& got = graph.node(value).shape;
  if (want != got)
    throw Error("next: state " + graph.describe(state) + " cannot take " + graph.describe(value) +
                ": shape mismatch");
  next_states[i] = value;
}

int Cell::state_index(ValueId state) const {
  for (std::size_t i = 0; i < states.size(); ++i)
    if (states[i] == state) return static_cast<int>(i);
  return -1;
}

bool structurally_equal(const Cell& a, const Cell& b) {
  if (a.graph.dtype() != b.graph.dtype() || a.graph.size() != b.graph.size()) return false;
  for (std::size_t i = 0; i < a.graph.size(); ++i)
    if (!same_node(a.graph.nodes()[i], b.graph.nodes()[i])) return false;
  if (a.outputs.size() != b.outputs.size()) return false;
  for (std::size_t i = 0; i < a.outputs.size(); ++i)
    if (a.outputs[i].name != b.outputs[i].name || a.outputs[i].value != b.outputs[i].value)
      return false;
  return a.name == b.name && a.inputs == b.inputs && a.states == b.states &&
         a.params == b.params && a.next_states == b.next_states;
}

std::uint64_t cell_hash(const Cell& cell) {
  std::uint64_t h = mix_string(0xcbf29ce484222325ULL, dtype_name(cell.graph.dtype()));
  for (const Node& n : cell.graph.nodes()) h = mix(h, node_hash(n));
  // The role lists are the calling convention (the order arguments are passed in), so two cells
  // that differ only there must not share a compiled kernel.
  auto mix_list = [&](const std::vector<ValueId>& ids) {
    h = mix(h, ids.size());
    for (auto v : ids) h = mix(h, v.index);
  };
  mix_list(cell.inputs);
  mix_list(cell.states);
  mix_list(cell.params);
  h = mix(h, cell.outputs.size());
  for (const auto& o : cell.outputs) h = mix(mix_string(h, o.name), o.value.index);
  mix_list(cell.next_states);
  return h;
}

}  // namespace cellfuse
