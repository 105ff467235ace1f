#pragma once
// Random cells for property tests: random DAGs over every op the IR has, built with the builder,
// with values kept bounded (so that f32 and f64 overflow alike: never) and every math op kept
// inside its domain. The same seed gives the same cell.
#include <cmath>
#include <string>
#include <vector>

#include "frontend/builder.h"
#include "runtime/random_args.h"

namespace cellfuse::testing_support {

class RandomCellMaker {
 public:
  RandomCellMaker(std::uint64_t seed, DType dtype) : rng_(seed), b_("random", dtype) {}

  Cell make(int ops) {
    std::int64_t I = pick(1, 9), H = pick(1, 12);
    Val x = b_.input("x", I);
    Val h = b_.state("h", H);
    Val c = b_.state("c", pick(1, 6));
    add(x, 1);
    add(h, 1);
    add(c, 1);
    add(linear(x, param({H, I})), 4);
    for (int i = 0; i < ops; ++i) step();
    b_.next(h, tanh(fit(pick_value(), H)));
    b_.next(c, tanh(fit(pick_value(), c.features())) * 0.5 + sigmoid(c) * 0.5);
    int outputs = static_cast<int>(pick(1, 2));
    for (int o = 0; o < outputs; ++o) b_.output("y" + std::to_string(o), pool_[pick(0, pool_.size() - 1)].v);
    return std::move(b_).finish();
  }

 private:
  struct Bounded {
    Val v;
    double bound;  // |v| never exceeds it
  };

  std::int64_t pick(std::int64_t lo, std::int64_t hi) {
    return lo + static_cast<std::int64_t>(rng_.next() % static_cast<std::uint64_t>(hi - lo + 1));
  }
  const Bounded& pick_bounded() { return pool_[static_cast<std::size_t>(pick(0, static_cast<std::int64_t>(pool_.size()) - 1))]; }
  Val pick_value() { return pick_bounded().v; }

  Val param(std::initializer_list<std::int64_t> dims) { return b_.param("p" + std::to_string(params_++), dims); }

  void add(Val v, double bound) {
    if (bound > 8) {
      v = tanh(v) * 4.0;
      bound = 4;
    }
    pool_.push_back({v, bound});
  }

  // `v` made exactly `width` features wide: a slice when it is wider, a cat with itself (and a
  // slice) when it is narrower.
  Val fit(Val v, std::int64_t width) {
    while (v.features() < width) v = cat({v, v});
    if (v.features() > width) v = slice(v, pick(0, v.features() - width), width);
    return v;
  }

  void step() {
    // Copies: add() grows the pool, which would invalidate references into it.
    const Bounded a = pick_bounded();
    const Bounded other = pick_bounded();
    Val b = fit(other.v, a.v.features());
    double ba = a.bound, bb = other.bound;
    switch (pick(0, 18)) {
      case 0: add(-a.v, ba); break;
      case 1: add(abs(a.v), ba); break;
      case 2: add(sigmoid(a.v), 1); break;
      case 3: add(tanh(a.v), 1); break;
      case 4: add(relu(a.v), ba); break;
      case 5: add(exp(tanh(a.v)), 3); break;
      case 6: add(log(softplus(a.v) + 0.1), std::max(2.4, ba + 1)); break;
      case 7: add(sqrt(softplus(a.v) + 0.1), std::sqrt(ba + 1) + 1); break;
      case 8: add(rsqrt(softplus(a.v) + 0.1), 3.2); break;
      case 9: add(a.v + b, ba + bb); break;
      case 10: add(a.v - b, ba + bb); break;
      case 11: add(a.v * b, ba * bb); break;
      case 12: add(a.v / (abs(b) + 0.5), 2 * ba); break;
      case 13: add(pick(0, 1) ? minimum(a.v, b) : maximum(a.v, b), std::max(ba, bb)); break;
      case 14: {
        Val cond = pick(0, 1) ? greater(a.v, b) : less_equal(a.v, b);
        add(where(cond, a.v, b * 0.5), std::max(ba, bb));
        break;
      }
      case 15: {  // a concatenation read through a window that may straddle its pieces
        Val joined = cat({a.v, other.v, a.v});
        std::int64_t width = pick(1, joined.features());
        add(slice(joined, pick(0, joined.features() - width), width) * 1.5, 1.5 * std::max(ba, bb));
        break;
      }
      case 16: {  // reductions and a parameter vector broadcast over the batch
        Val centered = a.v - mean(a.v);
        Val scaled = layer_norm(a.v) * param({a.v.features()}) + sum(b) * 0.1;
        add(pick(0, 1) ? centered : scaled, pick(0, 1) ? 2 * ba : 4 + 0.1 * bb * static_cast<double>(a.v.features()));
        break;
      }
      case 17: add(erf(a.v * 0.5), 1); break;
      default: {  // a matrix product of a computed value
        std::int64_t n = pick(1, 10);
        Val w = param({n, a.v.features()});
        add(linear(a.v, w, param({n})), ba * std::sqrt(static_cast<double>(a.v.features())) + 1);
      }
    }
  }

  SplitMix64 rng_;
  CellBuilder b_;
  std::vector<Bounded> pool_;
  int params_ = 0;
};

inline Cell random_cell(std::uint64_t seed, DType dtype, int ops) {
  return RandomCellMaker(seed, dtype).make(ops);
}

}  // namespace cellfuse::testing_support
