#include "runtime/reference/interpreter.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "compiler/ir/error.h"
#include "compiler/ir/pointwise_math.h"

namespace cellfuse {
namespace {

// One value of the step: rows x cols, row-major. A vector [n] is one row.
template <class T>
struct Matrix {
  std::int64_t rows = 0, cols = 0;
  std::vector<T> data;
  T& at(std::int64_t r, std::int64_t c) { return data[r * cols + c]; }
  T at(std::int64_t r, std::int64_t c) const { return data[r * cols + c]; }
};

template <class T>
Matrix<T> make(std::int64_t rows, std::int64_t cols) {
  return Matrix<T>{rows, cols, std::vector<T>(static_cast<std::size_t>(rows * cols))};
}

template <class T>
class StepEvaluator {
 public:
  StepEvaluator(const Cell& cell, std::int64_t batch) : cell_(cell), batch_(batch) {
    values_.resize(cell.graph.size());
  }

  void set(ValueId id, const T* data) {
    const Shape& s = cell_.graph.node(id).shape;
    Matrix<T> m = make<T>(rows(s), s.features());
    std::copy(data, data + m.data.size(), m.data.begin());
    values_[id.index] = std::move(m);
  }
  const Matrix<T>& get(ValueId id) const { return values_[id.index]; }

  // Evaluates every non-leaf node, in definition order (which is topological).
  void run() {
    const auto& nodes = cell_.graph.nodes();
    for (std::uint32_t i = 0; i < nodes.size(); ++i)
      if (nodes[i].op == OpKind::constant || !is_leaf(nodes[i].op))
        values_[i] = eval(nodes[i]);
  }

 private:
  std::int64_t rows(const Shape& s) const { return s.rows() == Shape::kBatch ? batch_ : s.rows(); }

  Matrix<T> eval(const Node& n) const {
    auto in = [&](std::size_t k) -> const Matrix<T>& { return values_[n.inputs[k].index]; };
    Matrix<T> out = make<T>(rows(n.shape), n.shape.features());
    const std::int64_t R = out.rows, C = out.cols;
    switch (op_info(n.op).op_class) {
      case OpClass::Leaf:  // only constants get here
        std::fill(out.data.begin(), out.data.end(), static_cast<T>(n.float_attr("value")));
        return out;
      case OpClass::Pointwise:
        for (std::size_t e = 0; e < out.data.size(); ++e) {
          T a = in(0).data[e];
          T b = n.inputs.size() > 1 ? in(1).data[e] : T(0);
          T c = n.inputs.size() > 2 ? in(2).data[e] : T(0);
          out.data[e] = pointwise_value(n.op, a, b, c);
        }
        return out;
      case OpClass::Contraction: {
        const Matrix<T>& x = in(0);
        const Matrix<T>& w = in(1);
        const bool transposed = n.op == OpKind::linear;  // linear: W is [N,K]
        const std::int64_t K = x.cols;
        for (std::int64_t r = 0; r < R; ++r)
          for (std::int64_t c = 0; c < C; ++c) {
            T acc = n.inputs.size() == 3 ? in(2).data[c] : T(0);
            for (std::int64_t k = 0; k < K; ++k)
              acc += x.at(r, k) * (transposed ? w.at(c, k) : w.at(k, c));
            out.at(r, c) = acc;
          }
        return out;
      }
      case OpClass::Reduction:
        for (std::int64_t r = 0; r < R; ++r) {
          if (n.op == OpKind::amax) {  // NaN wins, as in the pointwise max
            T acc = -std::numeric_limits<T>::infinity();
            for (std::int64_t k = 0; k < in(0).cols; ++k) acc = pointwise_value(OpKind::max, acc, in(0).at(r, k));
            out.at(r, 0) = acc;
            continue;
          }
          T acc = T(0);
          for (std::int64_t k = 0; k < in(0).cols; ++k) acc += in(0).at(r, k);
          out.at(r, 0) = n.op == OpKind::mean ? acc / static_cast<T>(in(0).cols) : acc;
        }
        return out;
      case OpClass::Layout: return layout(n, out);
    }
    throw InternalError("bad op class");
  }

  Matrix<T> layout(const Node& n, Matrix<T>& out) const {
    const Matrix<T>& x = values_[n.inputs[0].index];
    for (std::int64_t r = 0; r < out.rows; ++r) {
      switch (n.op) {
        case OpKind::broadcast:
          for (std::int64_t c = 0; c < out.cols; ++c) out.at(r, c) = x.at(0, c);
          break;
        case OpKind::expand:
          for (std::int64_t c = 0; c < out.cols; ++c) out.at(r, c) = x.at(r, 0);
          break;
        case OpKind::slice: {
          std::int64_t start = n.int_attr("start");
          for (std::int64_t c = 0; c < out.cols; ++c) out.at(r, c) = x.at(r, start + c);
          break;
        }
        case OpKind::cat: {
          std::int64_t c = 0;
          for (ValueId part : n.inputs) {
            const Matrix<T>& p = values_[part.index];
            for (std::int64_t k = 0; k < p.cols; ++k) out.at(r, c++) = p.at(r, k);
          }
          break;
        }
        default: throw InternalError("not a layout op: " + std::string(op_name(n.op)));
      }
    }
    return out;
  }

  const Cell& cell_;
  std::int64_t batch_;
  std::vector<Matrix<T>> values_;
};

[[noreturn]] void bad_arg(const Cell& cell, ValueId leaf, const std::vector<std::int64_t>& want,
                          const std::vector<std::int64_t>& got) {
  throw Error(std::string(op_name(cell.graph.node(leaf).op)) + " %" +
              std::string(cell.leaf_name(leaf)) + ": expected a tensor of shape " +
              shape_string(want) + ", got " + shape_string(got));
}

void check_count(std::string_view role, std::size_t want, std::size_t got) {
  if (want != got)
    throw Error("the cell has " + std::to_string(want) + " " + std::string(role) + "(s) but " +
                std::to_string(got) + " were given");
}

template <class T>
void check_tensor(const Cell& cell, ValueId leaf, const HostTensor<T>& t,
                  const std::vector<std::int64_t>& want) {
  if (t.shape != want) bad_arg(cell, leaf, want, t.shape);
  std::int64_t n = 1;
  for (auto d : want) n *= d;
  // The shape is right but the data is not: say so, rather than "expected [3,7], got [3,7]".
  if (static_cast<std::int64_t>(t.data.size()) != n)
    throw Error(std::string(op_name(cell.graph.node(leaf).op)) + " %" +
                std::string(cell.leaf_name(leaf)) + ": a tensor of shape " + shape_string(want) +
                " needs " + std::to_string(n) + " values, but it holds " +
                std::to_string(t.data.size()));
}

// The batch size from the first batched argument; every other argument is checked against it.
template <class T>
std::int64_t batch_of(const Cell& cell, const std::vector<HostTensor<T>>& inputs,
                      const std::vector<HostTensor<T>>& states, bool sequence) {
  const std::size_t axis = sequence ? 1 : 0;
  if (!inputs.empty() && inputs[0].shape.size() > axis) return inputs[0].shape[axis];
  if (!states.empty() && !states[0].shape.empty()) return states[0].shape[0];
  (void)cell;
  throw Error("cannot tell the batch size: the cell has no per-step inputs or states");
}

template <class T>
void check_common(const Cell& cell, const std::vector<HostTensor<T>>& states,
                  const std::vector<HostTensor<T>>& params, std::int64_t batch) {
  check_count("state", cell.states.size(), states.size());
  check_count("param", cell.params.size(), params.size());
  for (std::size_t i = 0; i < states.size(); ++i)
    check_tensor(cell, cell.states[i], states[i],
                 tensor_dims(cell.graph.node(cell.states[i]).shape, batch));
  for (std::size_t i = 0; i < params.size(); ++i)
    check_tensor(cell, cell.params[i], params[i],
                 tensor_dims(cell.graph.node(cell.params[i]).shape, batch));
}

template <class T>
HostTensor<T> to_tensor(const Matrix<T>& m) {
  HostTensor<T> t;
  t.shape = {m.rows, m.cols};
  t.data = m.data;
  return t;
}

}  // namespace

template <class T>
StepResult<T> interpret_step(const Cell& cell, const StepArgs<T>& args) {
  check_count("input", cell.inputs.size(), args.inputs.size());
  std::int64_t batch = batch_of(cell, args.inputs, args.states, false);
  for (std::size_t i = 0; i < args.inputs.size(); ++i)
    check_tensor(cell, cell.inputs[i], args.inputs[i],
                 tensor_dims(cell.graph.node(cell.inputs[i]).shape, batch));
  check_common(cell, args.states, args.params, batch);

  StepEvaluator<T> ev(cell, batch);
  for (std::size_t i = 0; i < args.inputs.size(); ++i) ev.set(cell.inputs[i], args.inputs[i].data.data());
  for (std::size_t i = 0; i < args.states.size(); ++i) ev.set(cell.states[i], args.states[i].data.data());
  for (std::size_t i = 0; i < args.params.size(); ++i) ev.set(cell.params[i], args.params[i].data.data());
  ev.run();
  StepResult<T> result;
  for (const auto& o : cell.outputs) result.outputs.push_back(to_tensor(ev.get(o.value)));
  for (ValueId v : cell.next_states) result.next_states.push_back(to_tensor(ev.get(v)));
  return result;
}

template <class T>
SequenceResult<T> interpret_sequence(const Cell& cell, const SequenceArgs<T>& args) {
  check_count("input", cell.inputs.size(), args.inputs.size());
  std::int64_t steps = args.steps;
  if (!args.inputs.empty() && !args.inputs[0].shape.empty()) steps = args.inputs[0].shape[0];
  if (steps < 0) throw Error("cannot tell the sequence length: give steps or per-step inputs");
  std::int64_t batch = batch_of(cell, args.inputs, args.states, true);
  for (std::size_t i = 0; i < args.inputs.size(); ++i)
    check_tensor(cell, cell.inputs[i], args.inputs[i],
                 tensor_dims(cell.graph.node(cell.inputs[i]).shape, batch, steps));
  check_common(cell, args.states, args.params, batch);

  SequenceResult<T> result;
  for (const auto& o : cell.outputs)
    result.outputs.emplace_back(tensor_dims(cell.graph.node(o.value).shape, batch, steps));
  StepArgs<T> step{{}, args.states, args.params};
  for (std::size_t i = 0; i < args.inputs.size(); ++i)
    step.inputs.emplace_back(tensor_dims(cell.graph.node(cell.inputs[i]).shape, batch));
  for (std::int64_t t = 0; t < steps; ++t) {
    for (std::size_t i = 0; i < args.inputs.size(); ++i) {
      auto n = step.inputs[i].data.size();
      std::copy_n(args.inputs[i].data.begin() + static_cast<std::ptrdiff_t>(t * n), n,
                  step.inputs[i].data.begin());
    }
    StepResult<T> r = interpret_step(cell, step);
    for (std::size_t o = 0; o < r.outputs.size(); ++o) {
      auto n = r.outputs[o].data.size();
      std::copy_n(r.outputs[o].data.begin(), n,
                  result.outputs[o].data.begin() + static_cast<std::ptrdiff_t>(t * n));
    }
    step.states = std::move(r.next_states);
  }
  result.final_states = std::move(step.states);
  return result;
}

template StepResult<float> interpret_step(const Cell&, const StepArgs<float>&);
template StepResult<double> interpret_step(const Cell&, const StepArgs<double>&);
template SequenceResult<float> interpret_sequence(const Cell&, const SequenceArgs<float>&);
template SequenceResult<double> interpret_sequence(const Cell&, const SequenceArgs<double>&);

}  // namespace cellfuse
