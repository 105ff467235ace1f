// The local gradient rule of every op, keyed by OpKind in one exhaustive switch (ops.def's `grad`
// column says the same in words). The rules are written with the IR's own ops, so the backward
// step is an ordinary cell. Masks are applied with `where`, never by multiplying with a 0/1
// comparison: a zero gradient stays exactly zero even where dy is infinite or NaN.
#include "compiler/passes/grad_rules.h"

#include <string>

#include "compiler/ir/composite_ops.h"
#include "compiler/ir/error.h"
#include "compiler/passes/autodiff.h"

namespace cellfuse {
namespace autodiff_detail {
namespace {

// Small helpers over the backward step's graph; every operand shape is checked by Graph::add.
class Ops {
 public:
  explicit Ops(Graph& g) : g_(g) {}

  ValueId op(OpKind kind, std::vector<ValueId> in, std::vector<AttrValue> attrs = {}) {
    return g_.add(kind, std::move(in), std::move(attrs));
  }
  // A constant with the shape of `like`.
  ValueId constant(double value, ValueId like) {
    Shape shape = g_.node(like).shape;
    return g_.add(OpKind::constant, {}, {value}, shape);
  }
  ValueId add(ValueId a, ValueId b) { return op(OpKind::add, {a, b}); }
  ValueId sub(ValueId a, ValueId b) { return op(OpKind::sub, {a, b}); }
  ValueId mul(ValueId a, ValueId b) { return op(OpKind::mul, {a, b}); }
  ValueId div(ValueId a, ValueId b) { return op(OpKind::div, {a, b}); }
  ValueId neg(ValueId a) { return op(OpKind::neg, {a}); }
  ValueId mul(ValueId a, double b) { return mul(a, constant(b, a)); }
  // dy where `mask` is nonzero, exactly 0 elsewhere.
  ValueId keep_where(ValueId mask, ValueId dy) {
    return op(OpKind::where, {mask, dy, constant(0.0, dy)});
  }
  // dy where `mask` is zero, exactly 0 elsewhere.
  ValueId keep_where_not(ValueId mask, ValueId dy) {
    return op(OpKind::where, {mask, constant(0.0, dy), dy});
  }

 private:
  Graph& g_;
};

// A rule adds dy's contributions to the node's operands. `grad(c, k, make)` calls make() only
// when operand k needs a gradient, so that no-gradient values cost nothing.
using Rule = void (*)(const Node& node, ValueId dy, GradContext& c);

template <class Make>
void grad(GradContext& c, int k, Make make) {
  if (c.needs_grad(k)) c.add_grad(k, make());
}

std::int64_t features_of(const GradContext& c, int k) { return c.operand_shape(k).features(); }

// Graph values as a domain of composite_ops.h: a composite op's gradient is its formula.
struct GraphDomain {
  using Value = ValueId;
  Ops& o;
  ValueId op(OpKind k, ValueId a) { return o.op(k, {a}); }
  ValueId op(OpKind k, ValueId a, ValueId b) { return o.op(k, {a, b}); }
  ValueId constant(double value, ValueId like) { return o.constant(value, like); }
  ValueId keep_where(ValueId mask, ValueId dy) { return o.keep_where(mask, dy); }
};

// The rule of every op: one exhaustive switch, so that a new op in ops.def is reported by
// -Wswitch here and, until its rule is written, rejected at run time (nullptr). The composite
// ops' rules come from their formulas (composite_ops.h).
Rule rule_for(OpKind op) {
  switch (op) {
    // Leaves: an input's or a state's gradient is read by the pass; a parameter's comes only
    // from the terms of the ops that use it; a constant has none.
    case OpKind::input:
    case OpKind::state:
    case OpKind::param:
    case OpKind::constant:
      return [](const Node&, ValueId, GradContext&) {};

    // linear(x, W, b) = x W^T + b: dx = dy W; dW = dy^T x; db = column sums of dy.
    case OpKind::linear:
      return [](const Node& n, ValueId dy, GradContext& c) {
        grad(c, 0, [&] { return Ops(c.graph()).op(OpKind::matmul, {dy, c.operand(1)}); });
        if (c.needs_grad(1)) c.weight_grad(1, dy, c.operand(0));
        if (n.inputs.size() == 3 && c.needs_grad(2)) c.vector_grad(2, dy);
      };
    // matmul(a, W) = a W: da = dy W^T (a linear with W read as [out, in]); dW = a^T dy.
    case OpKind::matmul:
      return [](const Node&, ValueId dy, GradContext& c) {
        grad(c, 0, [&] { return Ops(c.graph()).op(OpKind::linear, {dy, c.operand(1)}); });
        if (c.needs_grad(1)) c.weight_grad(1, c.operand(0), dy);
      };

    case OpKind::neg:
      return [](const Node&, ValueId dy, GradContext& c) {
        grad(c, 0, [&] { return Ops(c.graph()).neg(dy); });
      };
    // dy where x > 0, -dy where x < 0, 0 at 0 (sign(x) dy, as in PyTorch).
    case OpKind::abs:
      return [](const Node&, ValueId dy, GradContext& c) {
        grad(c, 0, [&] {
          Ops o(c.graph());
          ValueId x = c.operand(0), zero = o.constant(0.0, x);
          return o.op(OpKind::where, {o.op(OpKind::gt, {x, zero}), dy,
                                      o.keep_where(o.op(OpKind::lt, {x, zero}), o.neg(dy))});
        });
      };
    case OpKind::sigmoid:
      return [](const Node&, ValueId dy, GradContext& c) {
        grad(c, 0, [&] {
          Ops o(c.graph());
          ValueId y = c.result();
          return o.mul(dy, o.mul(y, o.sub(o.constant(1.0, y), y)));
        });
      };
    case OpKind::tanh:
      return [](const Node&, ValueId dy, GradContext& c) {
        grad(c, 0, [&] {
          Ops o(c.graph());
          ValueId y = c.result();
          return o.mul(dy, o.sub(o.constant(1.0, y), o.mul(y, y)));
        });
      };
    case OpKind::relu:
      return [](const Node&, ValueId dy, GradContext& c) {
        grad(c, 0, [&] {
          Ops o(c.graph());
          ValueId x = c.operand(0);
          return o.keep_where(o.op(OpKind::gt, {x, o.constant(0.0, x)}), dy);
        });
      };
    case OpKind::exp:
      return [](const Node&, ValueId dy, GradContext& c) {
        grad(c, 0, [&] { return Ops(c.graph()).mul(dy, c.result()); });
      };
    case OpKind::log:
      return [](const Node&, ValueId dy, GradContext& c) {
        grad(c, 0, [&] { return Ops(c.graph()).div(dy, c.operand(0)); });
      };
    case OpKind::log1p:
      return [](const Node&, ValueId dy, GradContext& c) {
        grad(c, 0, [&] {
          Ops o(c.graph());
          return o.div(dy, o.add(c.operand(0), o.constant(1.0, c.operand(0))));
        });
      };
    // d(e^x - 1) = e^x = y + 1.
    case OpKind::expm1:
      return [](const Node&, ValueId dy, GradContext& c) {
        grad(c, 0, [&] {
          Ops o(c.graph());
          return o.mul(dy, o.add(c.result(), o.constant(1.0, c.result())));
        });
      };
    case OpKind::sqrt:
      return [](const Node&, ValueId dy, GradContext& c) {
        grad(c, 0, [&] {
          Ops o(c.graph());
          return o.div(o.mul(dy, 0.5), c.result());
        });
      };
    // d(x^-1/2) = -1/2 x^-3/2 = -1/2 y^3.
    case OpKind::rsqrt:
      return [](const Node&, ValueId dy, GradContext& c) {
        grad(c, 0, [&] {
          Ops o(c.graph());
          ValueId y = c.result();
          return o.mul(dy, o.mul(o.mul(o.mul(y, y), y), -0.5));
        });
      };
    case OpKind::softplus:
      return [](const Node&, ValueId dy, GradContext& c) {
        grad(c, 0, [&] {
          Ops o(c.graph());
          return o.mul(dy, o.op(OpKind::sigmoid, {c.operand(0)}));
        });
      };
    // d erf(x) = 2/sqrt(pi) e^(-x^2) dx.
    case OpKind::erf:
      return [](const Node&, ValueId dy, GradContext& c) {
        grad(c, 0, [&] {
          Ops o(c.graph());
          ValueId x = c.operand(0);
          ValueId gauss = o.op(OpKind::exp, {o.neg(o.mul(x, x))});
          return o.mul(dy, o.mul(gauss, 1.1283791670955126));  // 2/sqrt(pi)
        });
      };

    case OpKind::add:
      return [](const Node&, ValueId dy, GradContext& c) {
        grad(c, 0, [&] { return dy; });
        grad(c, 1, [&] { return dy; });
      };
    case OpKind::sub:
      return [](const Node&, ValueId dy, GradContext& c) {
        grad(c, 0, [&] { return dy; });
        grad(c, 1, [&] { return Ops(c.graph()).neg(dy); });
      };
    case OpKind::mul:
      return [](const Node&, ValueId dy, GradContext& c) {
        grad(c, 0, [&] { return Ops(c.graph()).mul(dy, c.operand(1)); });
        grad(c, 1, [&] { return Ops(c.graph()).mul(dy, c.operand(0)); });
      };
    // da = dy / b; db = -dy a / b^2 = -(dy / b) (a / b).
    case OpKind::div:
      return [](const Node&, ValueId dy, GradContext& c) {
        Ops o(c.graph());
        auto da = [&] { return o.div(dy, c.operand(1)); };
        grad(c, 0, da);
        grad(c, 1, [&] { return o.neg(o.mul(da(), c.result())); });
      };
    // Ties go to the first operand, as ops.def says.
    case OpKind::min:
    case OpKind::max:
      return [](const Node& n, ValueId dy, GradContext& c) {
        Ops o(c.graph());
        auto first = [&] {
          return o.op(n.op == OpKind::min ? OpKind::le : OpKind::ge, {c.operand(0), c.operand(1)});
        };
        grad(c, 0, [&] { return o.keep_where(first(), dy); });
        grad(c, 1, [&] { return o.keep_where_not(first(), dy); });
      };
#define CELLFUSE_COMPOSITE_CASE(id) case OpKind::id:
    CELLFUSE_COMPOSITE_OPS(CELLFUSE_COMPOSITE_CASE)
#undef CELLFUSE_COMPOSITE_CASE
      return [](const Node& n, ValueId dy, GradContext& c) {
        grad(c, 0, [&] {
          Ops o(c.graph());
          GraphDomain d{o};
          return composite_grad(d, n.op, c.operand(0), dy);
        });
      };

    // Comparisons are piecewise constant: no gradient.
    case OpKind::gt:
    case OpKind::ge:
    case OpKind::lt:
    case OpKind::le:
      return [](const Node&, ValueId, GradContext&) {};
    // where(c, a, b): a gets dy where c != 0, b where c == 0; the condition gets nothing.
    case OpKind::where:
      return [](const Node&, ValueId dy, GradContext& c) {
        grad(c, 1, [&] { return Ops(c.graph()).keep_where(c.operand(0), dy); });
        grad(c, 2, [&] { return Ops(c.graph()).keep_where_not(c.operand(0), dy); });
      };

    // broadcast(v) [n] -> [B,n]: dv = the column sums of dy over all rows (a parameter term).
    case OpKind::broadcast:
      return [](const Node&, ValueId dy, GradContext& c) {
        if (c.needs_grad(0)) c.vector_grad(0, dy);
      };
    // expand(x [..,1], n): dx = the sum of dy over the features.
    case OpKind::expand:
      return [](const Node&, ValueId dy, GradContext& c) {
        grad(c, 0, [&] { return Ops(c.graph()).op(OpKind::sum, {dy}); });
      };
    // cat: each operand gets its slice of dy.
    case OpKind::cat:
      return [](const Node& n, ValueId dy, GradContext& c) {
        std::int64_t offset = 0;
        for (std::size_t k = 0; k < n.inputs.size(); ++k) {
          const int operand = static_cast<int>(k);
          std::int64_t width = features_of(c, operand);
          grad(c, operand, [&] { return Ops(c.graph()).op(OpKind::slice, {dy}, {offset, width}); });
          offset += width;
        }
      };
    // slice: dy placed at [start, start + len), zero elsewhere (the pass assembles the pieces
    // of all of an operand's slices into one cat, zeros only in the gaps).
    case OpKind::slice:
      return [](const Node& n, ValueId dy, GradContext& c) {
        if (c.needs_grad(0)) c.add_grad_slice(0, n.int_attr("start"), dy);
      };

    // sum and mean over the features [R,N] -> [R,1]: dx = expand(dy) (/ N).
    case OpKind::sum:
      return [](const Node&, ValueId dy, GradContext& c) {
        grad(c, 0, [&] { return Ops(c.graph()).op(OpKind::expand, {dy}, {features_of(c, 0)}); });
      };
    case OpKind::mean:
      return [](const Node&, ValueId dy, GradContext& c) {
        grad(c, 0, [&] {
          Ops o(c.graph());
          std::int64_t n = features_of(c, 0);
          return o.op(OpKind::expand, {o.mul(dy, 1.0 / static_cast<double>(n))}, {n});
        });
      };
    // amax [R,N] -> [R,1]: dy shared evenly among the positions equal to the maximum (as
    // torch.amax, so ties get equal shares whatever their order). x >= max holds exactly there,
    // nothing being above the maximum; a NaN maximum matches nowhere, so its row gets zeros.
    case OpKind::amax:
      return [](const Node&, ValueId dy, GradContext& c) {
        grad(c, 0, [&] {
          Ops o(c.graph());
          const std::int64_t n = features_of(c, 0);
          ValueId at_max = o.op(OpKind::ge, {c.operand(0), o.op(OpKind::expand, {c.result()}, {n})});
          ValueId share = o.div(dy, o.op(OpKind::sum, {at_max}));
          return o.keep_where(at_max, o.op(OpKind::expand, {share}, {n}));
        });
      };
  }
  return nullptr;
}

}  // namespace

void apply_grad_rule(const Node& node, ValueId dy, GradContext& context) {
  Rule rule = rule_for(node.op);
  if (!rule)
    throw Error("autodiff: op '" + std::string(op_name(node.op)) +
                "' has no gradient rule, so the cell cannot be differentiated");
  rule(node, dy, context);
}

}  // namespace autodiff_detail

bool has_grad_rule(OpKind op) { return autodiff_detail::rule_for(op) != nullptr; }

}  // namespace cellfuse
