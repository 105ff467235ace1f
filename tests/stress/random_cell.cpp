#include "random_cell.h"

#include <algorithm>
#include <cmath>
#include <functional>

#include "compiler/ir/op.h"
#include "frontend/builder.h"
#include "runtime/random_args.h"

// A new op in ops.def must be taught to the generator: the switch in RandomCell::emit has no
// default, and this makes a missing case a build error rather than a warning.
#pragma GCC diagnostic error "-Wswitch"

namespace cellfuse::stress {
namespace {

// The generator's starting state for a seed: SplitMix64's finalizer of it. (Seeding with
// seed x the golden ratio, as SplitMix64 steps, made seed s + 1's stream seed s's shifted by one
// draw: consecutive seeds gave nearly the same cells.)
std::uint64_t scramble(std::uint64_t seed) {
  std::uint64_t z = seed ^ 0x632be59bd9b4e019ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

struct Bounded {
  Val v;
  double bound;  // |v| never exceeds it
};

class RandomCell {
 public:
  RandomCell(std::uint64_t seed, DType dtype, const CellShapeLimits& limits)
      : rng_(scramble(seed)), limits_(limits),
        b_("random_" + std::to_string(seed), dtype) {}

  Cell make() {
    const int inputs = static_cast<int>(pick(1, limits_.max_inputs));
    const int states = static_cast<int>(pick(1, limits_.max_states));
    for (int i = 0; i < inputs; ++i) {
      Val x = b_.input("x" + std::to_string(i), width());
      inputs_.push_back(x);
      add(x, 1);
    }
    for (int s = 0; s < states; ++s) {
      Val h = b_.state("h" + std::to_string(s), width());
      states_.push_back(h);
      add(h, 1);
    }
    // At least one product that depends only on the input (hoisted out of the loop) and one that
    // depends on a state (inside it).
    product(inputs_[0], 1);
    product(states_[0], 1);
    // Mostly small cells (many per second), a third of them up to max_ops.
    const int ops = static_cast<int>(chance(67) ? pick(limits_.min_ops, std::min(10, limits_.max_ops))
                                                : pick(limits_.min_ops, limits_.max_ops));
    for (int i = 0; i < ops; ++i) emit(random_op());
    for (std::size_t s = 0; s < states_.size(); ++s) {
      const std::int64_t w = states_[s].features();
      Val next = fit(pick_value(), w);
      // Bounded over time: a squashed value, sometimes gated against the old state (an LSTM's
      // convex blend), so a long sequence stays in range.
      if (pick(0, 2) == 0) {
        Val gate = sigmoid(fit(pick_value(), w));
        next = gate * states_[s] + (1.0 - gate) * tanh(next);
      } else {
        next = tanh(next);
      }
      b_.next(states_[s], next);
      if (s == 0 || pick(0, 3) == 0) add(next, 1);  // the new state read again by an output
    }
    const int outputs = static_cast<int>(pick(1, 3));
    for (int o = 0; o < outputs; ++o) b_.output("y" + std::to_string(o), pick_value());
    return std::move(b_).finish();
  }

 private:
  std::int64_t pick(std::int64_t lo, std::int64_t hi) {
    return lo + static_cast<std::int64_t>(rng_.next() % static_cast<std::uint64_t>(hi - lo + 1));
  }
  bool chance(int percent) { return pick(0, 99) < percent; }

  // Mostly narrow (fast to run, and where edge cases of vector tails live), sometimes wide.
  std::int64_t width() {
    const std::int64_t top = limits_.max_width;
    const auto r = pick(0, 99);
    if (r < 75) return pick(1, std::min<std::int64_t>(12, top));
    if (r < 95) return pick(1, std::min<std::int64_t>(64, top));
    return pick(1, top);
  }

  const Bounded& pick_bounded() {
    // Recent values more often: deeper chains.
    const auto n = static_cast<std::int64_t>(pool_.size());
    const auto i = chance(50) ? pick(std::max<std::int64_t>(0, n - 4), n - 1) : pick(0, n - 1);
    return pool_[static_cast<std::size_t>(i)];
  }
  Val pick_value() { return pick_bounded().v; }

  Val param(Shape shape) {
    return b_.param("p" + std::to_string(params_++), shape);
  }

  void add(Val v, double bound) {
    if (bound > 8) {
      v = tanh(v) * 4.0;
      bound = 4;
    }
    pool_.push_back({v, bound});
  }

  // `v` made exactly `width` features wide: a slice when it is wider, a cat with itself (and a
  // slice) when it is narrower.
  Val fit(Val v, std::int64_t w) {
    while (v.features() < w) v = cat({v, v});
    if (v.features() > w) v = slice(v, pick(0, v.features() - w), w);
    return v;
  }

  // linear(x, W, b?) with a parameter weight, or now and then a weight computed from parameters
  // (a masked or scaled weight: work on parameters only, hoisted by the compiler, a prelude in
  // the Python front end).
  void product(Val x, double bound) {
    const std::int64_t k = x.features(), n = width();
    Val w = param(Shape::matrix(n, k));
    if (limits_.computed_weights && chance(10)) w = w * sigmoid(param(Shape::matrix(n, k))) * 2.0;
    const double out = bound * std::sqrt(static_cast<double>(k)) * (1 + 1) + 1;
    if (chance(50))
      add(linear(x, w, param(Shape::vector(n))), out + 1);
    else
      add(linear(x, w), out);
  }

  OpKind random_op() {
    // Every op of the table, plus the builder's composites (numbered past the table).
    const int extra = 3;
    const auto i = pick(0, op_count() - 1 + extra);
    if (i >= op_count()) {
      composite_ = static_cast<int>(i - op_count());
      return OpKind::slice;
    }
    composite_ = -1;
    return static_cast<OpKind>(i);
  }

  void emit(OpKind op) {
    // Copies: add() grows the pool, which would invalidate references into it.
    const Bounded a = pick_bounded();
    const Bounded other = pick_bounded();
    const Val b = fit(other.v, a.v.features());
    const double ba = a.bound, bb = other.bound;
    if (composite_ >= 0) {
      const int which = composite_;
      composite_ = -1;
      return emit_composite(which, a);
    }
    switch (op) {
      case OpKind::input: add(inputs_[static_cast<std::size_t>(pick(0, static_cast<std::int64_t>(inputs_.size()) - 1))], 1); return;
      case OpKind::state: add(states_[static_cast<std::size_t>(pick(0, static_cast<std::int64_t>(states_.size()) - 1))], 1); return;
      case OpKind::param: add(a.v + broadcast(param(Shape::vector(a.v.features()))), ba + 1); return;
      case OpKind::constant: {
        const double c = static_cast<double>(pick(-8, 8)) / 4.0;
        Val k = b_.constant(c, Shape::batched(a.v.features()));
        add(chance(50) ? where(greater(a.v, b), a.v, k) : cat({k, a.v}), std::max(ba, std::abs(c)));
        return;
      }
      case OpKind::linear: product(a.v, ba); return;
      case OpKind::matmul: {
        const std::int64_t k = a.v.features(), n = width();
        add(matmul(a.v, param(Shape::matrix(k, n))), ba * std::sqrt(static_cast<double>(k)) + 1);
        return;
      }
      case OpKind::neg: add(-a.v, ba); return;
      case OpKind::abs: add(abs(a.v), ba); return;
      case OpKind::sigmoid: add(sigmoid(a.v), 1); return;
      case OpKind::tanh: add(tanh(a.v), 1); return;
      case OpKind::relu: add(relu(a.v), ba); return;
      case OpKind::exp: add(ba <= 4 ? exp(a.v) : exp(tanh(a.v)), ba <= 4 ? std::exp(ba) : 3); return;
      case OpKind::log: add(log(softplus(a.v) + 0.1), std::max(2.4, ba + 1)); return;
      case OpKind::sqrt: add(sqrt(softplus(a.v) + 0.1), std::sqrt(ba + 1) + 1); return;
      case OpKind::rsqrt: add(rsqrt(softplus(a.v) + 0.1), 3.2); return;
      case OpKind::softplus: add(softplus(a.v), ba + 1); return;
      case OpKind::erf: add(erf(a.v * 0.5), 1); return;
      case OpKind::add: add(a.v + b, ba + bb); return;
      case OpKind::sub: add(a.v - b, ba + bb); return;
      case OpKind::mul: add(a.v * b, ba * bb); return;
      case OpKind::div: add(a.v / (abs(b) + 0.5), 2 * ba); return;
      case OpKind::min: add(minimum(a.v, b), std::max(ba, bb)); return;
      case OpKind::max: add(maximum(a.v, b), std::max(ba, bb)); return;
      case OpKind::gt: add(greater(a.v, b) * a.v, ba); return;
      case OpKind::ge: add(greater_equal(a.v, b) + b, bb + 1); return;
      case OpKind::lt: add(less(a.v, b) * (a.v - b), ba + bb); return;
      case OpKind::le: add(where(less_equal(a.v, b), a.v, b * 0.5), std::max(ba, bb)); return;
      case OpKind::where: add(where(greater(b, a.v * 0.5), a.v, -b), std::max(ba, bb)); return;
      case OpKind::broadcast: {
        Val v = param(Shape::vector(a.v.features()));
        add(a.v * broadcast(limits_.computed_weights && chance(30) ? tanh(v) : v), ba);
        return;
      }
      case OpKind::expand: {
        Val col = chance(50) ? slice(a.v, pick(0, a.v.features() - 1), 1) : mean(a.v);
        add(expand(col, width()), ba);
        return;
      }
      case OpKind::cat: {
        std::vector<Val> parts{a.v, other.v};
        if (chance(30)) parts.push_back(pick_value());
        double bound = std::max(ba, bb);
        for (const Val& p : parts) bound = std::max(bound, bound_of(p));
        add(cat(parts), bound);
        return;
      }
      case OpKind::slice: {  // a window that may straddle the pieces of a concatenation
        Val joined = chance(50) ? cat({a.v, other.v}) : a.v;
        const std::int64_t w = pick(1, joined.features());
        add(slice(joined, pick(0, joined.features() - w), w), std::max(ba, bb));
        return;
      }
      case OpKind::sum: add(expand(sum(a.v), a.v.features()) * (1.0 / static_cast<double>(a.v.features())) + b, ba + bb); return;
      case OpKind::mean: add(a.v - mean(a.v), 2 * ba); return;
      case OpKind::amax: add(a.v - expand(amax(a.v), a.v.features()), 2 * ba); return;
      case OpKind::hardsigmoid: add(hardsigmoid(a.v * 2.0), 1); return;
      case OpKind::softsign: add(softsign(a.v), 1); return;
      // Small arguments too, where log1p and expm1 keep digits log(1 + x) and exp(x) - 1 lose.
      case OpKind::log1p: add(log1p(chance(50) ? softplus(a.v) : a.v * 1e-3 * (1.0 / (ba + 1))), std::max(1.0, ba)); return;
      case OpKind::expm1: add(expm1(ba <= 4 ? a.v : tanh(a.v)), ba <= 4 ? std::exp(ba) : 2); return;
    }
  }

  void emit_composite(int which, const Bounded& a) {
    const std::int64_t w = a.v.features();
    switch (which) {
      case 0: {  // chunk into gates, as an LSTM does
        const int n = w % 4 == 0 ? 4 : w % 3 == 0 ? 3 : w % 2 == 0 ? 2 : 1;
        auto pieces = chunk(a.v, n);
        Val out = sigmoid(pieces[0]);
        for (std::size_t i = 1; i < pieces.size(); ++i) out = out * tanh(pieces[i]);
        add(out, 1);
        return;
      }
      case 1: {  // ragged split
        if (w < 2) return add(a.v * 0.5, a.bound);
        const std::int64_t first = pick(1, w - 1);
        auto pieces = split(a.v, {first, w - first});
        add(cat({tanh(pieces[1]), pieces[0] * 0.5}), std::max(1.0, a.bound));
        return;
      }
      default: {  // LayerNorm, with or without its affine parameters
        if (chance(50)) {
          // Named one after the other (argument order is unspecified: a seed's cell would differ
          // between compilers).
          Val gain = param(Shape::vector(w));
          Val bias = param(Shape::vector(w));
          add(layer_norm(a.v, gain, bias), 4 * std::sqrt(static_cast<double>(w)) + 1);
        }
        else {
          add(layer_norm(a.v), std::sqrt(static_cast<double>(w)) + 1);
        }
        return;
      }
    }
  }

  double bound_of(const Val& v) const {
    for (const Bounded& p : pool_)
      if (p.v.id() == v.id()) return p.bound;
    return 8;
  }

  SplitMix64 rng_;
  CellShapeLimits limits_;
  CellBuilder b_;
  std::vector<Val> inputs_, states_;
  std::vector<Bounded> pool_;
  int params_ = 0;
  int composite_ = -1;
};

}  // namespace

Cell random_cell(std::uint64_t seed, DType dtype, const CellShapeLimits& limits) {
  return RandomCell(seed, dtype, limits).make();
}

DType random_dtype(std::uint64_t seed) {
  SplitMix64 r(seed ^ 0xd1b54a32d192ed03ull);
  return r.next() % 2 ? DType::f64 : DType::f32;
}

std::vector<std::int64_t> op_histogram(const Cell& cell) {
  std::vector<std::int64_t> counts(static_cast<std::size_t>(op_count()), 0);
  for (const Node& n : cell.graph.nodes()) ++counts[static_cast<std::size_t>(n.op)];
  return counts;
}

int cell_depth(const Cell& cell) {
  const auto& nodes = cell.graph.nodes();
  std::vector<int> depth(nodes.size(), 0);
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    int d = 0;
    for (ValueId in : nodes[i].inputs) d = std::max(d, depth[in.index]);
    const OpClass c = op_info(nodes[i].op).op_class;
    depth[i] = d + (c == OpClass::Leaf || c == OpClass::Layout ? 0 : 1);
  }
  int deepest = 0;
  for (const auto& o : cell.outputs) deepest = std::max(deepest, depth[o.value.index]);
  for (ValueId v : cell.next_states)
    if (v.valid()) deepest = std::max(deepest, depth[v.index]);
  return deepest;
}

}  // namespace cellfuse::stress
