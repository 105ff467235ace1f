#include "runtime/random_args.h"

#include <cmath>

#include "compiler/ir/error.h"

namespace cellfuse {

std::uint64_t SplitMix64::next() {
  std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

double SplitMix64::uniform(double lo, double hi) {
  double unit = static_cast<double>(next() >> 11) * 0x1.0p-53;
  return lo + (hi - lo) * unit;
}

namespace {

template <class T>
HostTensor<T> random_tensor(SplitMix64& rng, std::vector<std::int64_t> dims, double bound) {
  HostTensor<T> t(std::move(dims));
  for (auto& v : t.data) v = static_cast<T>(rng.uniform(-bound, bound));
  return t;
}


}  // namespace

template <class T>
SequenceArgs<T> random_sequence_args(const Cell& cell, std::int64_t steps, std::int64_t batch,
                                     std::uint64_t seed) {
  if (steps < 1 || batch < 1)
    throw Error("sequence length and batch must be at least 1 (got T=" + std::to_string(steps) +
                ", B=" + std::to_string(batch) + ")");
  // Refuse sizes that would not fit in memory before trying to allocate them.
  double elements = 0;
  for (ValueId v : cell.inputs)
    elements += static_cast<double>(steps) * static_cast<double>(cell.graph.node(v).shape.elements(batch));
  for (ValueId v : cell.params) elements += static_cast<double>(cell.graph.node(v).shape.elements(batch));
  if (elements * sizeof(T) > 16e9)
    throw Error("the arguments would take " + std::to_string(elements * sizeof(T) / 1e9) +
                " GB; choose a smaller cell, batch or sequence");

  SplitMix64 rng(seed);
  SequenceArgs<T> args;
  args.steps = steps;
  for (ValueId v : cell.inputs) {
    auto dims = tensor_dims(cell.graph.node(v).shape, batch);
    dims.insert(dims.begin(), steps);
    args.inputs.push_back(random_tensor<T>(rng, dims, 1.0));
  }
  for (ValueId v : cell.states)
    args.states.push_back(random_tensor<T>(rng, tensor_dims(cell.graph.node(v).shape, batch), 1.0));
  for (ValueId v : cell.params) {
    const Shape& s = cell.graph.node(v).shape;
    double bound = 1.0 / std::sqrt(static_cast<double>(s.features()));
    args.params.push_back(random_tensor<T>(rng, tensor_dims(s, batch), bound));
  }
  return args;
}

template SequenceArgs<float> random_sequence_args(const Cell&, std::int64_t, std::int64_t,
                                                  std::uint64_t);
template SequenceArgs<double> random_sequence_args(const Cell&, std::int64_t, std::int64_t,
                                                   std::uint64_t);

}  // namespace cellfuse
