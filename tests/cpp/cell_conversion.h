#pragma once
// An f32 cell and its arguments as f64 (the reference interpreter's oracle) and back, for every
// test program: no GoogleTest here, so that the GPU programs (tests/gpu) can include it too.
#include <vector>

#include "compiler/ir/graph.h"
#include "runtime/reference/bptt.h"
#include "runtime/reference/interpreter.h"

namespace cellfuse::testing_support {

// The same cell in another dtype: f64 is the interpreter's oracle for an f32 cell, f32 the
// conditioning probe of an f64 one (tests/stress).
inline Cell as_dtype(const Cell& cell, DType dtype) {
  Cell out(dtype);
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
inline Cell as_f64(const Cell& cell) { return as_dtype(cell, DType::f64); }
inline Cell as_f32(const Cell& cell) { return as_dtype(cell, DType::f32); }

template <class From, class To>
HostTensor<To> convert(const HostTensor<From>& t) {
  HostTensor<To> out;
  out.shape = t.shape;
  for (From v : t.data) out.data.push_back(static_cast<To>(v));
  return out;
}

template <class From, class To>
std::vector<HostTensor<To>> convert(const std::vector<HostTensor<From>>& list) {
  std::vector<HostTensor<To>> out;
  for (const auto& t : list) out.push_back(convert<From, To>(t));
  return out;
}

template <class From, class To>
SequenceArgs<To> convert(const SequenceArgs<From>& a) {
  SequenceArgs<To> out;
  out.steps = a.steps;
  out.inputs = convert<From, To>(a.inputs);
  out.states = convert<From, To>(a.states);
  out.params = convert<From, To>(a.params);
  return out;
}

template <class From, class To>
LossGradients<To> convert_seeds(const LossGradients<From>& s) {
  LossGradients<To> out;
  out.outputs = convert<From, To>(s.outputs);
  out.final_states = convert<From, To>(s.final_states);
  return out;
}

}  // namespace cellfuse::testing_support
