#pragma once
// The scalar meaning of every pointwise op, written once in compiler/ir/ops.def (its math column)
// and, for a composite op, in compiler/ir/composite_ops.h: the reference interpreter evaluates
// with it and constant folding folds with it, so the two can never disagree.
#include <algorithm>
#include <cmath>

#include "compiler/ir/composite_ops.h"
#include "compiler/ir/error.h"
#include "compiler/ir/op.h"

namespace cellfuse {

template <class T>
T pointwise_value(OpKind op, T a, T b = T(0), T c = T(0));

// Numbers of type T as a domain of composite_ops.h.
template <class T>
struct ScalarDomain {
  using Value = T;
  T op(OpKind k, T a) { return pointwise_value(k, a); }
  T op(OpKind k, T a, T b) { return pointwise_value(k, a, b); }
  T constant(double value, T) { return static_cast<T>(value); }
};

template <class T>
T pointwise_value(OpKind op, T a, T b, T c) {
  // min and max: a NaN operand wins (the first when both are).
  auto nan_or = [](T x, T y, T value) { return std::isnan(x) ? x : std::isnan(y) ? y : value; };
  auto composite = [op](T x) {
    ScalarDomain<T> d;
    return composite_value(d, op, x);
  };
  (void)b;
  (void)c;
  switch (op) {
#define CELLFUSE_OP(id, min_arity, max_arity, kind, attrs, cost, torch, grad, math, cuda) \
  CELLFUSE_IF_POINTWISE(kind, case OpKind::id: return math;)
#include "compiler/ir/ops.def"
#undef CELLFUSE_OP
    default: throw InternalError("not a pointwise op: " + std::string(op_name(op)));
  }
}

}  // namespace cellfuse
