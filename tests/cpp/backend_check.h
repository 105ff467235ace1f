#pragma once
// Shared by the backend tests: run a cell on a backend and on the f64 reference interpreter with
// the same random arguments, and compare.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "compiler/ir/graph.h"
#include "runtime/random_args.h"
#include "runtime/reference/interpreter.h"

namespace cellfuse::testing_support {

// Sanitizer builds (Debug, ASan + UBSan) run the same checks on fewer cases: they are there to
// catch memory errors, which a handful of cases exercise as well as many.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif

// The same cell in f64: what the interpreter uses as the oracle for an f32 cell.
inline Cell as_f64(const Cell& cell) {
  Cell out(DType::f64);
  out.name = cell.name;
  for (const Node& n : cell.graph.nodes()) {
    ValueId id = out.graph.add_distinct(n.op, n.inputs, n.attrs, n.shape);
    if (n.op == OpKind::input) out.inputs.push_back(id);
    if (n.op == OpKind::param) out.params.push_back(id);
    if (n.op == OpKind::state) out.states.push_back(id);
  }
  out.outputs = cell.outputs;
  out.next_states = cell.next_states;
  return out;
}

template <class From, class To>
HostTensor<To> convert(const HostTensor<From>& t) {
  HostTensor<To> out;
  out.shape = t.shape;
  for (From v : t.data) out.data.push_back(static_cast<To>(v));
  return out;
}

template <class From, class To>
SequenceArgs<To> convert(const SequenceArgs<From>& a) {
  SequenceArgs<To> out;
  out.steps = a.steps;
  for (const auto& t : a.inputs) out.inputs.push_back(convert<From, To>(t));
  for (const auto& t : a.states) out.states.push_back(convert<From, To>(t));
  for (const auto& t : a.params) out.params.push_back(convert<From, To>(t));
  return out;
}

// ||got - want|| / ||want|| (or the absolute norm when `want` is all but zero), and every
// element finite where the reference is.
template <class T>
void expect_close(const HostTensor<T>& got, const HostTensor<double>& want, double tolerance,
                  const std::string& what) {
  ASSERT_EQ(got.shape, want.shape) << what;
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < want.data.size(); ++i) {
    double g = static_cast<double>(got.data[i]), w = want.data[i];
    ASSERT_EQ(std::isnan(g), std::isnan(w)) << what << " element " << i << ": " << g << " vs " << w;
    if (std::isnan(w) || std::isinf(w)) continue;
    diff += (g - w) * (g - w);
    norm += w * w;
  }
  double rel = std::sqrt(diff) / std::max(std::sqrt(norm), 1e-30);
  EXPECT_LE(rel, tolerance) << what << ": relative error " << rel;
}

template <class T>
void expect_matches(const SequenceResult<T>& got, const SequenceResult<double>& want, double tolerance,
                    const std::string& what) {
  ASSERT_EQ(got.outputs.size(), want.outputs.size()) << what;
  ASSERT_EQ(got.final_states.size(), want.final_states.size()) << what;
  for (std::size_t o = 0; o < want.outputs.size(); ++o)
    expect_close(got.outputs[o], want.outputs[o], tolerance, what + " output " + std::to_string(o));
  for (std::size_t s = 0; s < want.final_states.size(); ++s)
    expect_close(got.final_states[s], want.final_states[s], tolerance, what + " state " + std::to_string(s));
}

}  // namespace cellfuse::testing_support
