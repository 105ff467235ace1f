#pragma once
// The scalar meaning of every pointwise op, written once: the reference interpreter evaluates
// with it and constant folding folds with it, so the two can never disagree.
#include <algorithm>
#include <cmath>

#include "compiler/ir/error.h"
#include "compiler/ir/op.h"

namespace cellfuse {

template <class T>
T pointwise_value(OpKind op, T a, T b = T(0), T c = T(0)) {
  auto nan_or = [](T x, T y, T value) { return std::isnan(x) ? x : std::isnan(y) ? y : value; };
  switch (op) {
    case OpKind::neg: return -a;
    case OpKind::abs: return std::abs(a);
    case OpKind::sigmoid: return T(1) / (T(1) + std::exp(-a));
    case OpKind::tanh: return std::tanh(a);
    case OpKind::relu: return a < T(0) ? T(0) : a;
    case OpKind::exp: return std::exp(a);
    case OpKind::log: return std::log(a);
    case OpKind::sqrt: return std::sqrt(a);
    case OpKind::rsqrt: return T(1) / std::sqrt(a);
    // log(1 + e^a) without overflow: max(a, 0) + log1p(e^-|a|).
    case OpKind::softplus: return std::max(a, T(0)) + std::log1p(std::exp(-std::abs(a)));
    case OpKind::erf: return std::erf(a);
    case OpKind::add: return a + b;
    case OpKind::sub: return a - b;
    case OpKind::mul: return a * b;
    case OpKind::div: return a / b;
    case OpKind::min: return nan_or(a, b, std::min(a, b));
    case OpKind::max: return nan_or(a, b, std::max(a, b));
    case OpKind::gt: return a > b ? T(1) : T(0);
    case OpKind::ge: return a >= b ? T(1) : T(0);
    case OpKind::lt: return a < b ? T(1) : T(0);
    case OpKind::le: return a <= b ? T(1) : T(0);
    case OpKind::where: return a != T(0) ? b : c;
    default: throw InternalError("not a pointwise op: " + std::string(op_name(op)));
  }
}

}  // namespace cellfuse
