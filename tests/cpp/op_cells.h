#pragma once
// Cells built around the newer ops, for the backend tests. softmax_amax_cell: the feature-axis
// maximum (amax) in a softmax made stable by subtracting the row maximum (the way a captured
// F.softmax arrives), and over a slice that straddles a concatenation (lowered as one partial
// maximum per piece, then their maximum). composite_cell: the composite ops hardsigmoid and
// softsign, with inputs wide enough to reach both flat parts of hardsigmoid.
#include "frontend/builder.h"

namespace cellfuse::testing_support {

inline Cell softmax_amax_cell(DType dtype, std::int64_t input = 5, std::int64_t hidden = 7) {
  CellBuilder b("softmax_amax", dtype);
  Val x = b.input("x", input);
  Val h = b.state("h", hidden);
  Val W = b.param("W", {hidden, input});
  Val U = b.param("U", {hidden, hidden});
  Val z = linear(x, W) + linear(h, U);
  Val m = amax(z);
  Val e = exp(z - m);
  Val p = e / sum(e);
  Val straddle = amax(slice(cat({x, h}), 1, input));  // x[1..], h[0]
  b.output("p", p * straddle);
  b.output("m", m);
  b.next(h, tanh(p + h * m * 0.25));
  return std::move(b).finish();
}

inline Cell composite_cell(DType dtype, std::int64_t input = 5, std::int64_t hidden = 7) {
  CellBuilder b("composite", dtype);
  Val x = b.input("x", input);
  Val h = b.state("h", hidden);
  Val W = b.param("W", {hidden, input});
  Val U = b.param("U", {hidden, hidden});
  Val z = linear(x, W) * 4.0 + linear(h, U);
  Val g = hardsigmoid(z);
  Val s = softsign(z * 3.0 - h);
  b.output("y", g * s);
  b.next(h, g * h + (1.0 - g) * softsign(z));
  return std::move(b).finish();
}

}  // namespace cellfuse::testing_support
