#include "frontend/builder.h"

#include "compiler/ir/error.h"
#include "compiler/ir/verifier.h"

namespace cellfuse {
namespace {

Cell& same_cell(const Val& a, const Val& b) {
  if (&a.cell() != &b.cell()) throw Error("operands come from different cells");
  return a.cell();
}

// Widens one side to the other's shape, PyTorch style, with explicit IR ops.
Val widen(const Val& v, const Shape& target) {
  const Shape& s = v.shape();
  if (s == target) return v;
  if (s.rank == 1 && target.is_batched() && s.dims[0] == target.features()) return broadcast(v);
  if (s.features() == 1 && s.rank == target.rank && s.rows() == target.rows())
    return expand(v, target.features());
  if (s.rank == 1 && s.dims[0] == 1 && target.is_batched())
    return expand(broadcast(v), target.features());
  return v;  // let the op report the mismatch
}

// The shape the other operands widen to: more axes first, then more features.
bool bigger(const Shape& x, const Shape& y) {
  return x.rank > y.rank || (x.rank == y.rank && x.features() > y.features());
}

Val binary(OpKind op, const Val& a, const Val& b) {
  same_cell(a, b);
  const Shape& sa = a.shape();
  const Shape& sb = b.shape();
  if (sa == sb) return apply(op, {a, b});
  if (bigger(sa, sb)) return apply(op, {a, widen(b, sa)});
  return apply(op, {widen(a, sb), b});
}

Val unary(OpKind op, const Val& x) { return apply(op, {x}); }

}  // namespace

Cell& Val::cell() const {
  if (!cell_) throw Error("use of an empty cellfuse::Val");
  return *cell_;
}

Val apply(OpKind op, const std::vector<Val>& operands, std::vector<AttrValue> attrs) {
  if (operands.empty()) throw Error(std::string(op_name(op)) + ": needs at least one operand");
  Cell& cell = operands[0].cell();
  std::vector<ValueId> ids;
  for (const Val& v : operands) {
    same_cell(operands[0], v);
    ids.push_back(v.id());
  }
  return Val(&cell, cell.graph.add(op, std::move(ids), std::move(attrs)));
}

Val constant_like(const Val& like, double value) {
  Cell& cell = like.cell();
  return Val(&cell, cell.graph.add(OpKind::constant, {}, {value}, like.shape()));
}

Val operator+(const Val& a, const Val& b) { return binary(OpKind::add, a, b); }
Val operator-(const Val& a, const Val& b) { return binary(OpKind::sub, a, b); }
Val operator*(const Val& a, const Val& b) { return binary(OpKind::mul, a, b); }
Val operator/(const Val& a, const Val& b) { return binary(OpKind::div, a, b); }
Val operator+(const Val& a, double b) { return a + constant_like(a, b); }
Val operator-(const Val& a, double b) { return a - constant_like(a, b); }
Val operator*(const Val& a, double b) { return a * constant_like(a, b); }
Val operator/(const Val& a, double b) { return a / constant_like(a, b); }
Val operator+(double a, const Val& b) { return constant_like(b, a) + b; }
Val operator-(double a, const Val& b) { return constant_like(b, a) - b; }
Val operator*(double a, const Val& b) { return constant_like(b, a) * b; }
Val operator/(double a, const Val& b) { return constant_like(b, a) / b; }
Val operator-(const Val& a) { return unary(OpKind::neg, a); }

#define CELLFUSE_OP(id, min_arity, max_arity, kind, ...) \
  CELLFUSE_IF_UNARY(kind, min_arity, Val id(const Val& x) { return unary(OpKind::id, x); })
#include "compiler/ir/ops.def"
#undef CELLFUSE_OP
Val minimum(const Val& a, const Val& b) { return binary(OpKind::min, a, b); }
Val maximum(const Val& a, const Val& b) { return binary(OpKind::max, a, b); }
Val clamp(const Val& x, double lo, double hi) {
  if (!(lo <= hi))
    throw Error("clamp: lo=" + std::to_string(lo) + " is above hi=" + std::to_string(hi));
  return minimum(maximum(x, constant_like(x, lo)), constant_like(x, hi));
}
Val greater(const Val& a, const Val& b) { return binary(OpKind::gt, a, b); }
Val greater_equal(const Val& a, const Val& b) { return binary(OpKind::ge, a, b); }
Val less(const Val& a, const Val& b) { return binary(OpKind::lt, a, b); }
Val less_equal(const Val& a, const Val& b) { return binary(OpKind::le, a, b); }
Val where(const Val& cond, const Val& a, const Val& b) {
  // All three operands widen to the widest of them, as torch.where broadcasts (a [B,1] branch
  // against a [B,n] one, or a column condition).
  Shape target = cond.shape();
  if (bigger(a.shape(), target)) target = a.shape();
  if (bigger(b.shape(), target)) target = b.shape();
  return apply(OpKind::where, {widen(cond, target), widen(a, target), widen(b, target)});
}

Val linear(const Val& x, const Val& W) { return apply(OpKind::linear, {x, W}); }
Val linear(const Val& x, const Val& W, const Val& b) { return apply(OpKind::linear, {x, W, b}); }
Val matmul(const Val& a, const Val& b) { return apply(OpKind::matmul, {a, b}); }

Val broadcast(const Val& vector) { return apply(OpKind::broadcast, {vector}); }
Val expand(const Val& column, std::int64_t n) { return apply(OpKind::expand, {column}, {n}); }
Val cat(const std::vector<Val>& parts) { return apply(OpKind::cat, parts); }
Val slice(const Val& x, std::int64_t start, std::int64_t len) {
  return apply(OpKind::slice, {x}, {start, len});
}

std::vector<Val> chunk(const Val& x, int n) {
  std::int64_t f = x.features();
  if (n < 1 || f % n != 0)
    throw Error("chunk: " + x.cell().graph.describe(x.id()) + " has " + std::to_string(f) +
                " features, which do not split into " + std::to_string(n) + " equal chunks");
  std::vector<Val> out;
  for (int i = 0; i < n; ++i) out.push_back(slice(x, i * (f / n), f / n));
  return out;
}

std::vector<Val> split(const Val& x, const std::vector<std::int64_t>& sizes) {
  std::int64_t total = 0;
  for (auto s : sizes) total += s;
  if (total != x.features())
    throw Error("split: sizes add up to " + std::to_string(total) + " but " +
                x.cell().graph.describe(x.id()) + " has " + std::to_string(x.features()) +
                " features");
  std::vector<Val> out;
  std::int64_t start = 0;
  for (auto s : sizes) {
    out.push_back(slice(x, start, s));
    start += s;
  }
  return out;
}


Val layer_norm(const Val& x, double eps) {
  Val centered = x - mean(x);
  Val var = mean(centered * centered);
  return centered * rsqrt(var + eps);
}

Val layer_norm(const Val& x, const Val& gamma, const Val& beta, double eps) {
  return layer_norm(x, eps) * gamma + beta;
}

CellBuilder::CellBuilder(std::string name, DType dtype) : cell_(std::make_unique<Cell>(dtype)) {
  if (!is_identifier(name)) throw Error("cell name '" + name + "' is not a valid name");
  cell_->name = std::move(name);
}

Val CellBuilder::input(std::string name, std::int64_t features) {
  return Val(cell_.get(), live()->add_input(std::move(name), features));
}
Val CellBuilder::state(std::string name, std::int64_t features) {
  return Val(cell_.get(), live()->add_state(std::move(name), features));
}
Val CellBuilder::param(std::string name, std::initializer_list<std::int64_t> dims) {
  if (dims.size() == 1) return param(std::move(name), Shape::vector(*dims.begin()));
  if (dims.size() == 2) return param(std::move(name), Shape::matrix(*dims.begin(), dims.begin()[1]));
  throw Error("param %" + name + ": give one or two dimensions, not " +
              std::to_string(dims.size()));
}
Val CellBuilder::param(std::string name, Shape shape) {
  return Val(cell_.get(), live()->add_param(std::move(name), shape));
}
Val CellBuilder::constant(double value, Shape shape) {
  return Val(cell_.get(), live()->graph.add(OpKind::constant, {}, {value}, shape));
}
void CellBuilder::output(std::string name, const Val& value) {
  if (&value.cell() != live()) throw Error("output '" + name + "': value of another cell");
  cell_->add_output(std::move(name), value.id());
}
void CellBuilder::next(const Val& state, const Val& value) {
  if (&value.cell() != live() || &state.cell() != cell_.get())
    throw Error("next: value of another cell");
  cell_->set_next(state.id(), value.id());
}

Cell* CellBuilder::live() const {
  if (!cell_) throw Error("CellBuilder used after finish(): the cell was handed out");
  return cell_.get();
}

Cell CellBuilder::finish() && {
  if (!cell_) throw Error("CellBuilder::finish called twice");
  verify(*cell_);
  Cell out = std::move(*cell_);
  cell_.reset();
  return out;
}

}  // namespace cellfuse
