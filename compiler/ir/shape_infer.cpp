// Shape inference: one rule per op class, checked as each node is made so that a bad shape is
// reported where the user wrote it, naming the op, the values and their shapes.
#include "compiler/ir/error.h"
#include "compiler/ir/graph.h"

namespace cellfuse {
namespace {

[[noreturn]] void fail(const Graph& g, OpKind op, const std::vector<ValueId>& inputs,
                       const std::string& why) {
  std::string msg = std::string(op_name(op)) + ": " + why + " (operands:";
  for (std::size_t i = 0; i < inputs.size(); ++i) msg += (i ? ", " : " ") + g.describe(inputs[i]);
  throw Error(msg + ")");
}

Shape pointwise(const Graph& g, OpKind op, const std::vector<ValueId>& in) {
  const Shape& first = g.node(in[0]).shape;
  for (std::size_t i = 1; i < in.size(); ++i)
    if (g.node(in[i]).shape != first)
      fail(g, op, in,
           "shape mismatch: " + g.describe(in[0]) + " vs " + g.describe(in[i]) +
               " (use broadcast/expand to widen a vector or a column)");
  return first;
}

Shape contraction(const Graph& g, OpKind op, const std::vector<ValueId>& in) {
  const Shape& x = g.node(in[0]).shape;
  const Shape& w = g.node(in[1]).shape;
  if (w.rank != 2 || w.is_batched())
    fail(g, op, in, "the weight " + g.describe(in[1]) + " must be an unbatched matrix");
  std::int64_t k = op == OpKind::linear ? w.dims[1] : w.dims[0];
  std::int64_t n = op == OpKind::linear ? w.dims[0] : w.dims[1];
  if (x.features() != k)
    fail(g, op, in,
         "inner dimensions differ: " + g.describe(in[0]) + " has " +
             std::to_string(x.features()) + " features but " + g.describe(in[1]) + " expects " +
             std::to_string(k));
  if (in.size() == 3) {
    const Shape& b = g.node(in[2]).shape;
    if (b != Shape::vector(n))
      fail(g, op, in, "the bias " + g.describe(in[2]) + " must be [" + std::to_string(n) + "]");
  }
  return x.with_features(n);
}

Shape layout(const Graph& g, OpKind op, const std::vector<ValueId>& in,
             const std::vector<AttrValue>& attrs) {
  const Shape& x = g.node(in[0]).shape;
  switch (op) {
    case OpKind::broadcast:
      if (x.rank != 1) fail(g, op, in, "only a vector [n] is broadcast over the batch");
      return Shape::batched(x.dims[0]);
    case OpKind::expand: {
      std::int64_t n = std::get<std::int64_t>(attrs[0]);
      if (x.features() != 1) fail(g, op, in, "only a single column [..,1] is expanded");
      if (n < 1 || n > (std::int64_t{1} << 24))
        fail(g, op, in, "n=" + std::to_string(n) + " is out of range");
      return x.with_features(n);
    }
    case OpKind::cat: {
      std::int64_t total = 0;
      for (auto v : in) {
        const Shape& s = g.node(v).shape;
        if (s.rank != x.rank || s.rows() != x.rows())
          fail(g, op, in,
               "operands must agree in every axis but the last: " + g.describe(in[0]) + " vs " +
                   g.describe(v));
        total += s.features();
      }
      // The same bound as a leaf's dimensions: sizes stay far from overflow everywhere later.
      if (total > (std::int64_t{1} << 24))
        fail(g, op, in,
             "the result would have " + std::to_string(total) + " features, over 16777216");
      return x.with_features(total);
    }
    case OpKind::slice: {
      std::int64_t start = std::get<std::int64_t>(attrs[0]);
      std::int64_t len = std::get<std::int64_t>(attrs[1]);
      if (start < 0 || len < 1 || start > x.features() || len > x.features() - start)
        fail(g, op, in,
             "start=" + std::to_string(start) + " len=" + std::to_string(len) +
                 " is outside the " + std::to_string(x.features()) + " features of " +
                 g.describe(in[0]));
      return x.with_features(len);
    }
    default: break;
  }
  throw InternalError("no layout rule for " + std::string(op_name(op)));
}

}  // namespace

Shape infer_shape(const Graph& g, OpKind op, const std::vector<ValueId>& inputs,
                  const std::vector<AttrValue>& attrs) {
  switch (op_info(op).op_class) {
    case OpClass::Leaf: throw InternalError("leaf shapes are declared, not inferred");
    case OpClass::Pointwise: return pointwise(g, op, inputs);
    case OpClass::Contraction: return contraction(g, op, inputs);
    case OpClass::Layout: return layout(g, op, inputs, attrs);
    case OpClass::Reduction: return g.node(inputs[0]).shape.with_features(1);
  }
  throw InternalError("bad op class");
}

}  // namespace cellfuse
