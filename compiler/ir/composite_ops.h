#pragma once
// Pointwise ops defined by a formula over other pointwise ops (compiler/ir/ops.def marks them
// composite(a) in its math column). Each one's value and its gradient are written here once, as
// templates over a "domain": what a value is, and how an op applies to values. Every consumer
// instantiates the same formula with its own domain:
//
//   scalar numbers    pointwise_value (the reference interpreter, constant folding)
//   LLVM values       the CPU code generator (compiler/codegen/llvm/kernel_codegen.cpp)
//   CUDA C text       the GPU code generator (compiler/codegen/cuda/cuda_emitter.cpp)
//   graph values      the gradient rules (compiler/passes/grad_rules.cpp), for the gradient
//
// so a composite op is a row of ops.def plus its formulas and its name in CELLFUSE_COMPOSITE_OPS
// here: no code generator, interpreter or autodiff edit. (An op that needs machine code of its own, like erf's polynomials, is native:
// its math is in ops.def and its LLVM lowering in kernel_codegen.cpp.)
//
// A domain D provides
//   using Value = ...;
//   Value op(OpKind op, Value a);                      // a native pointwise op of one operand,
//   Value op(OpKind op, Value a, Value b);             //   two,
//   Value constant(double value, const Value& like);   // a constant shaped like `like`
// and the gradient domain (graph values) also
//   Value keep_where(Value mask, Value dy);            // dy where mask != 0, exactly 0 elsewhere
#include <string>

#include "compiler/ir/error.h"
#include "compiler/ir/op.h"

namespace cellfuse {

// The composite ops, for switches that must list every op (grad_rules.cpp).
#define CELLFUSE_COMPOSITE_OPS(X) X(hardsigmoid) X(softsign)

inline bool is_composite(OpKind op) {
  switch (op) {
#define CELLFUSE_COMPOSITE_CASE(id) case OpKind::id:
    CELLFUSE_COMPOSITE_OPS(CELLFUSE_COMPOSITE_CASE)
#undef CELLFUSE_COMPOSITE_CASE
    return true;
    default: return false;
  }
}

// The value of composite op `op` at x.
template <class D>
typename D::Value composite_value(D& d, OpKind op, const typename D::Value& x) {
  auto k = [&](double v) { return d.constant(v, x); };
  switch (op) {
    // PyTorch's hardsigmoid: relu6(x + 3) / 6, written as its kernel computes it.
    case OpKind::hardsigmoid:
      return d.op(OpKind::div, d.op(OpKind::min, d.op(OpKind::max, d.op(OpKind::add, x, k(3)), k(0)), k(6)), k(6));
    // x / (1 + |x|), as F.softsign.
    case OpKind::softsign: return d.op(OpKind::div, x, d.op(OpKind::add, d.op(OpKind::abs, x), k(1)));
    default: throw InternalError("not a composite op: " + std::string(op_name(op)));
  }
}

// The gradient of composite op `op` at x for the incoming gradient dy.
template <class D>
typename D::Value composite_grad(D& d, OpKind op, const typename D::Value& x, const typename D::Value& dy) {
  auto k = [&](double v) { return d.constant(v, x); };
  switch (op) {
    // dy / 6 strictly inside (-3, 3), exactly 0 outside (PyTorch's hardsigmoid_backward).
    case OpKind::hardsigmoid:
      return d.keep_where(d.op(OpKind::gt, x, k(-3)),
                          d.keep_where(d.op(OpKind::lt, x, k(3)), d.op(OpKind::mul, dy, k(1.0 / 6.0))));
    // d/dx x / (1 + |x|) = 1 / (1 + |x|)^2.
    case OpKind::softsign: {
      auto t = d.op(OpKind::add, d.op(OpKind::abs, x), k(1));
      return d.op(OpKind::div, dy, d.op(OpKind::mul, t, t));
    }
    default: throw InternalError("not a composite op: " + std::string(op_name(op)));
  }
}

}  // namespace cellfuse
