#pragma once
// Normal random values with a fixed seed, for the benchmarks' weights and inputs: the same data
// on every run, so that timings compare like with like.
#include <cstddef>
#include <random>
#include <vector>

namespace cellfuse::bench {

inline std::vector<float> normal_values(std::size_t n, float scale) {
  std::mt19937 rng(3);
  std::normal_distribution<float> d(0, scale);
  std::vector<float> v(n);
  for (float& f : v) f = d(rng);
  return v;
}

}  // namespace cellfuse::bench
