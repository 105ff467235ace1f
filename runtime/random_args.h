#pragma once
// Deterministic random arguments for a cell: what `cellfuse run` feeds every target, so that the
// checksums of the reference interpreter and of the backends compare.
#include <cstdint>

#include "compiler/ir/graph.h"
#include "runtime/reference/interpreter.h"

namespace cellfuse {

// SplitMix64: tiny, fast, and the same numbers on every platform (std distributions are not).
class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next();
  // Uniform in [lo, hi).
  double uniform(double lo, double hi);

 private:
  std::uint64_t state_;
};

// Inputs and initial states uniform in [-1, 1); parameters uniform in [-1/sqrt(n), 1/sqrt(n))
// with n the parameter's last dimension (PyTorch's RNN initialization).
template <class T>
SequenceArgs<T> random_sequence_args(const Cell& cell, std::int64_t steps, std::int64_t batch,
                                     std::uint64_t seed);

extern template SequenceArgs<float> random_sequence_args(const Cell&, std::int64_t, std::int64_t,
                                                         std::uint64_t);
extern template SequenceArgs<double> random_sequence_args(const Cell&, std::int64_t,
                                                          std::int64_t, std::uint64_t);

}  // namespace cellfuse
