#pragma once
// The graph IR: a Graph owns its nodes in definition order (every operand is defined before its
// user, so the node list is a topological order). A Cell is a graph with roles: per-step inputs,
// recurrent states, parameters, named outputs and the next value of every state.
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

#include "compiler/ir/op.h"
#include "compiler/ir/types.h"

namespace cellfuse {

struct ValueId {
  static constexpr std::uint32_t kInvalid = std::numeric_limits<std::uint32_t>::max();
  std::uint32_t index = kInvalid;

  bool valid() const { return index != kInvalid; }
  friend bool operator==(ValueId, ValueId) = default;
  friend auto operator<=>(ValueId, ValueId) = default;
};

using AttrValue = std::variant<std::int64_t, double, std::string>;

struct Node {
  OpKind op;
  Shape shape;
  std::vector<ValueId> inputs;
  std::vector<AttrValue> attrs;  // in the order ops.def declares them

  std::int64_t int_attr(std::string_view name) const;
  double float_attr(std::string_view name) const;
  const std::string& string_attr(std::string_view name) const;
  // The leaf's name for input/state/param nodes, empty otherwise.
  std::string_view leaf_name() const;
};

// Equality with floats compared bit for bit (so a NaN constant equals itself).
bool same_node(const Node& a, const Node& b);
std::uint64_t node_hash(const Node& node);

class Graph {
 public:
  explicit Graph(DType dtype = DType::f32) : dtype_(dtype) {}

  DType dtype() const { return dtype_; }
  std::size_t size() const { return nodes_.size(); }
  const Node& node(ValueId id) const;
  const std::vector<Node>& nodes() const { return nodes_; }

  // Adds a node after checking the op's arity, attributes and operand shapes (throws Error
  // naming the op, the values and the shapes). Leaves and constants need their shape given.
  // Returns the existing node when an identical one exists (hash-consing); leaves are unique by
  // name and a second leaf with a used name is an error.
  ValueId add(OpKind op, std::vector<ValueId> inputs, std::vector<AttrValue> attrs = {},
              std::optional<Shape> shape = std::nullopt);
  // The same checks, but always appends: the parser keeps the text's nodes one for one, so that
  // the CSE pass has something to do and the round trip is exact.
  ValueId add_distinct(OpKind op, std::vector<ValueId> inputs, std::vector<AttrValue> attrs = {},
                       std::optional<Shape> shape = std::nullopt);

  std::optional<ValueId> find_leaf(std::string_view name) const;

  // Names a non-leaf value for error messages only: the parser passes on the text's own names
  // (`%gates`), so that a message points at what the user wrote. Not part of the structure:
  // never hashed, compared, printed or carried through a pass.
  void set_debug_name(ValueId id, std::string name);

  // How messages name a value: "%x" for a leaf named x, the text's own name when the value came
  // from parsed text, else "%7" numbered as print_cell numbers it (so a message about a printed
  // cell names the line it means).
  std::string ref(ValueId id) const;
  // "%7 [B,33]": a value as error messages name it.
  std::string describe(ValueId id) const;

 private:
  Node make_node(OpKind op, std::vector<ValueId> inputs, std::vector<AttrValue> attrs,
                 std::optional<Shape> shape) const;
  ValueId append(Node node);

  DType dtype_;
  std::vector<Node> nodes_;
  std::unordered_multimap<std::uint64_t, ValueId> by_hash_;
  std::unordered_map<std::string, ValueId> leaves_by_name_;
  std::unordered_map<std::uint32_t, std::string> debug_names_;
};

// Shape inference for one op application; throws Error naming the op, the values and the shapes.
Shape infer_shape(const Graph& graph, OpKind op, const std::vector<ValueId>& inputs,
                  const std::vector<AttrValue>& attrs);

struct OutputRole {
  std::string name;
  ValueId value;
};

struct Cell {
  std::string name = "cell";
  Graph graph;
  std::vector<ValueId> inputs;       // input leaves, in declaration order
  std::vector<ValueId> states;       // state leaves, in declaration order
  std::vector<ValueId> params;       // param leaves, in declaration order
  std::vector<OutputRole> outputs;   // per-step outputs, in declaration order
  std::vector<ValueId> next_states;  // parallel to states; invalid until set

  explicit Cell(DType dtype = DType::f32) : graph(dtype) {}

  // Declares a leaf and records its role.
  ValueId add_input(std::string name, std::int64_t features);
  ValueId add_state(std::string name, std::int64_t features);
  ValueId add_param(std::string name, Shape shape);
  void add_output(std::string name, ValueId value);
  void set_next(ValueId state, ValueId value);

  // Index of a state leaf in `states`, or -1.
  int state_index(ValueId state) const;
  std::string_view leaf_name(ValueId id) const { return graph.node(id).leaf_name(); }
};

// Node-for-node equality: same dtype, same nodes in the same order, same roles.
bool structurally_equal(const Cell& a, const Cell& b);
// Stable hash of a cell's structure (the JIT cache key's graph part).
std::uint64_t cell_hash(const Cell& cell);

bool is_identifier(std::string_view name);

}  // namespace cellfuse
