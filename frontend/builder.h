#pragma once
// The C++ cell builder: write a recurrent cell as ordinary expressions.
//
//   cellfuse::CellBuilder b("elman", cellfuse::DType::f32);
//   auto x = b.input("x", 256);
//   auto h = b.state("h", 128);
//   auto W = b.param("W_ih", {128, 256}), U = b.param("W_hh", {128, 128});
//   auto bias = b.param("b", {128});
//   auto h2 = tanh(linear(x, W, bias) + linear(h, U));
//   b.output("h", h2);
//   b.next(h, h2);
//   cellfuse::Cell cell = std::move(b).finish();
//
// Binary operators broadcast like PyTorch where the IR needs an explicit op: a vector [n] meets
// [B,n] through `broadcast`, a column [..,1] meets [..,n] through `expand`, a number becomes a
// constant of the other operand's shape.
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "compiler/ir/graph.h"

namespace cellfuse {

class Val {
 public:
  Val() = default;
  Val(Cell* cell, ValueId id) : cell_(cell), id_(id) {}

  ValueId id() const { return id_; }
  Cell& cell() const;
  const Shape& shape() const { return cell().graph.node(id_).shape; }
  std::int64_t features() const { return shape().features(); }

 private:
  Cell* cell_ = nullptr;
  ValueId id_;
};

// Applies any op to operands (no implicit broadcasting): the escape hatch under the helpers.
Val apply(OpKind op, const std::vector<Val>& operands, std::vector<AttrValue> attrs = {});
Val constant_like(const Val& like, double value);

Val operator+(const Val& a, const Val& b);
Val operator-(const Val& a, const Val& b);
Val operator*(const Val& a, const Val& b);
Val operator/(const Val& a, const Val& b);
Val operator+(const Val& a, double b);
Val operator-(const Val& a, double b);
Val operator*(const Val& a, double b);
Val operator/(const Val& a, double b);
Val operator+(double a, const Val& b);
Val operator-(double a, const Val& b);
Val operator*(double a, const Val& b);
Val operator/(double a, const Val& b);
Val operator-(const Val& a);

// One function per unary op of compiler/ir/ops.def, named as the op, with the op's meaning there:
// the pointwise ops of one operand (neg, abs, sigmoid, tanh, relu, exp, log, sqrt, rsqrt,
// softplus, erf, ...) and the reductions over the features, [R,N] -> [R,1] (sum, mean, amax).
#define CELLFUSE_OP(id, min_arity, max_arity, kind, ...) \
  CELLFUSE_IF_UNARY(kind, min_arity, Val id(const Val& x);)
#include "compiler/ir/ops.def"
#undef CELLFUSE_OP

Val minimum(const Val& a, const Val& b);
Val maximum(const Val& a, const Val& b);
Val clamp(const Val& x, double lo, double hi);
Val greater(const Val& a, const Val& b);
Val greater_equal(const Val& a, const Val& b);
Val less(const Val& a, const Val& b);
Val less_equal(const Val& a, const Val& b);
Val where(const Val& cond, const Val& a, const Val& b);

// x @ W^T (+ b), W is [out, in] as in nn.Linear; matmul is a @ b with b [in, out].
Val linear(const Val& x, const Val& W);
Val linear(const Val& x, const Val& W, const Val& b);
Val matmul(const Val& a, const Val& b);

Val broadcast(const Val& vector);
Val expand(const Val& column, std::int64_t n);
Val cat(const std::vector<Val>& parts);
Val slice(const Val& x, std::int64_t start, std::int64_t len);
// n equal pieces along the features (the count must divide them, unlike torch.chunk's ragged
// last piece, which cellfuse rejects to keep gate layouts unambiguous).
std::vector<Val> chunk(const Val& x, int n);
std::vector<Val> split(const Val& x, const std::vector<std::int64_t>& sizes);
// Layer norm over the feature axis, as PyTorch's F.layer_norm (biased variance).
Val layer_norm(const Val& x, double eps = 1e-5);
Val layer_norm(const Val& x, const Val& gamma, const Val& beta, double eps = 1e-5);

class CellBuilder {
 public:
  explicit CellBuilder(std::string name, DType dtype = DType::f32);

  Val input(std::string name, std::int64_t features);
  Val state(std::string name, std::int64_t features);
  Val param(std::string name, std::initializer_list<std::int64_t> dims);
  Val param(std::string name, Shape shape);
  Val constant(double value, Shape shape);
  void output(std::string name, const Val& value);
  void next(const Val& state, const Val& value);

  Cell& cell() { return *live(); }
  // Verifies and hands out the cell; the builder is empty afterwards.
  Cell finish() &&;

 private:
  Cell* live() const;

  std::unique_ptr<Cell> cell_;
};

}  // namespace cellfuse
