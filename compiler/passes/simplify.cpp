// Algebraic simplification and constant folding. Builders and capture from PyTorch leave
// identities behind (x*1 from a scale of one, slices of a cat from chunking a concatenated gate
// vector); removing them here keeps fusion and code generation from paying for them.
#include <bit>
#include <cmath>

#include "compiler/ir/pointwise_math.h"
#include "compiler/passes/passes.h"
#include "compiler/passes/rewrite.h"

namespace cellfuse {
namespace {

class Simplifier {
 public:
  explicit Simplifier(Graph& g) : g_(g) {}

  // A simpler value equal to `n`, or nothing. `n`'s operands live in the new graph.
  std::optional<ValueId> rules(const Node& n) {
    if (auto folded = fold_constants(n)) return folded;
    switch (n.op) {
      case OpKind::add:
        if (is_const(n.inputs[1], 0.0)) return n.inputs[0];
        if (is_const(n.inputs[0], 0.0)) return n.inputs[1];
        break;
      case OpKind::sub:
        if (is_const(n.inputs[1], 0.0)) return n.inputs[0];
        if (is_const(n.inputs[0], 0.0)) return make(OpKind::neg, {n.inputs[1]});
        break;
      case OpKind::mul:
        if (is_const(n.inputs[1], 1.0)) return n.inputs[0];
        if (is_const(n.inputs[0], 1.0)) return n.inputs[1];
        if (is_const(n.inputs[1], -1.0)) return make(OpKind::neg, {n.inputs[0]});
        if (is_const(n.inputs[0], -1.0)) return make(OpKind::neg, {n.inputs[1]});
        break;
      case OpKind::div:
        if (is_const(n.inputs[1], 1.0)) return n.inputs[0];
        break;
      case OpKind::neg:
        if (def(n.inputs[0]).op == OpKind::neg) return def(n.inputs[0]).inputs[0];
        break;
      case OpKind::min:
      case OpKind::max:
        if (n.inputs[0] == n.inputs[1]) return n.inputs[0];
        break;
      case OpKind::where:
        if (def(n.inputs[0]).op == OpKind::constant)
          return def(n.inputs[0]).float_attr("value") != 0.0 ? n.inputs[1] : n.inputs[2];
        if (n.inputs[1] == n.inputs[2]) return n.inputs[1];
        break;
      // A product with a zero constant is zero. Autodiff builds these itself: the gradient of a
      // product whose result nothing reads is a constant 0, and `dx = 0 @ W` would reach code
      // generation with a constant operand, which no product kernel takes. (A bias keeps
      // linear's result from being zero.)
      case OpKind::matmul:
      case OpKind::linear:
        if (n.inputs.size() == 2 && (is_const(n.inputs[0], 0.0) || is_const(n.inputs[1], 0.0)))
          return constant(0.0, n.shape);
        break;
      case OpKind::slice: return simplify_slice(n);
      case OpKind::cat: return simplify_cat(n);
      default: break;
    }
    return std::nullopt;
  }

 private:
  const Node& def(ValueId v) const { return g_.node(v); }

  bool is_const(ValueId v, double value) const {
    const Node& n = def(v);
    return n.op == OpKind::constant && n.float_attr("value") == value;
  }

  // Adds a node, simplified first; the new node's own operands are already simplified.
  ValueId make(OpKind op, std::vector<ValueId> inputs, std::vector<AttrValue> attrs = {}) {
    Node n{op, infer_shape(g_, op, inputs, attrs), inputs, attrs};
    if (auto r = rules(n)) return *r;
    return g_.add(op, std::move(inputs), std::move(attrs));
  }

  // (The graph rounds an f32 cell's constants to float.)
  ValueId constant(double value, const Shape& shape) {
    return g_.add(OpKind::constant, {}, {value}, shape);
  }

  // Every constant is a splat of one value, so folding is scalar arithmetic.
  std::optional<ValueId> fold_constants(const Node& n) {
    if (is_leaf(n.op) || n.op == OpKind::cat) return fold_cat(n);
    std::vector<double> v;
    for (ValueId in : n.inputs) {
      if (def(in).op != OpKind::constant) return std::nullopt;
      v.push_back(def(in).float_attr("value"));
    }
    v.resize(3, 0.0);
    switch (op_info(n.op).op_class) {
      case OpClass::Pointwise:
        if (g_.dtype() == DType::f32)
          return constant(pointwise_value<float>(n.op, static_cast<float>(v[0]),
                                                 static_cast<float>(v[1]),
                                                 static_cast<float>(v[2])),
                          n.shape);
        return constant(pointwise_value<double>(n.op, v[0], v[1], v[2]), n.shape);
      case OpClass::Layout: return constant(v[0], n.shape);
      case OpClass::Reduction:
        return constant(n.op == OpKind::mean || n.op == OpKind::amax
                            ? v[0]
                            : v[0] * static_cast<double>(def(n.inputs[0]).shape.features()),
                        n.shape);
      default: return std::nullopt;
    }
  }

  std::optional<ValueId> fold_cat(const Node& n) {
    if (n.op != OpKind::cat) return std::nullopt;
    const Node& first = def(n.inputs[0]);
    if (first.op != OpKind::constant) return std::nullopt;
    double value = first.float_attr("value");
    for (ValueId in : n.inputs)
      if (def(in).op != OpKind::constant ||
          std::bit_cast<std::uint64_t>(def(in).float_attr("value")) !=
              std::bit_cast<std::uint64_t>(value))
        return std::nullopt;
    return constant(value, n.shape);
  }

  std::optional<ValueId> simplify_slice(const Node& n) {
    std::int64_t start = n.int_attr("start"), len = n.int_attr("len");
    ValueId src = n.inputs[0];
    const Node& s = def(src);
    if (start == 0 && len == s.shape.features()) return src;
    if (s.op == OpKind::slice)
      return make(OpKind::slice, {s.inputs[0]}, {s.int_attr("start") + start, len});
    if (s.op == OpKind::cat) {
      // The piece of the cat that holds the whole range, if one does.
      std::int64_t offset = 0;
      for (ValueId part : s.inputs) {
        std::int64_t width = def(part).shape.features();
        if (start >= offset && start + len <= offset + width)
          return make(OpKind::slice, {part}, {start - offset, len});
        offset += width;
      }
    }
    return std::nullopt;
  }

  std::optional<ValueId> simplify_cat(const Node& n) {
    if (n.inputs.size() == 1) return n.inputs[0];
    // Flatten nested cats, then merge runs of adjacent slices of one source.
    std::vector<ValueId> flat;
    for (ValueId part : n.inputs) {
      if (def(part).op == OpKind::cat)
        flat.insert(flat.end(), def(part).inputs.begin(), def(part).inputs.end());
      else
        flat.push_back(part);
    }
    // A run of slices, each starting where the previous one ends, is one slice; the run is
    // measured first so that only the one slice is made, not one per step of the run.
    std::vector<ValueId> merged;
    for (std::size_t i = 0; i < flat.size();) {
      std::size_t j = i + 1;
      if (def(flat[i]).op == OpKind::slice) {
        ValueId source = def(flat[i]).inputs[0];
        std::int64_t start = def(flat[i]).int_attr("start");
        std::int64_t end = start + def(flat[i]).int_attr("len");
        for (; j < flat.size(); ++j) {
          const Node& next = def(flat[j]);
          if (next.op != OpKind::slice || next.inputs[0] != source ||
              next.int_attr("start") != end)
            break;
          end += next.int_attr("len");
        }
        // (make() adds nodes, which may move the graph's node list: hold no Node& across it.)
        if (j > i + 1) {
          merged.push_back(make(OpKind::slice, {source}, {start, end - start}));
          i = j;
          continue;
        }
      }
      merged.push_back(flat[i]);
      i = j;
    }
    if (merged == n.inputs) return std::nullopt;
    if (merged.size() == 1) return merged[0];
    return make(OpKind::cat, merged);
  }

  Graph& g_;
};

}  // namespace

Cell simplify(const Cell& cell) {
  RebuildOptions options;
  options.rewrite = [](Graph& out, const Node& node) { return Simplifier(out).rules(node); };
  return rebuild(cell, options);
}

}  // namespace cellfuse
