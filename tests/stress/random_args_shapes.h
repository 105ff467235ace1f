#pragma once
// The sequence shapes a seed runs: one batch size (the compiled one) and two sequence lengths,
// mostly short (the time loop's edge cases are the first and last steps), sometimes long.
#include <vector>

#include "differential.h"
#include "runtime/random_args.h"

namespace cellfuse::stress {

inline std::vector<RunShape> random_run_shapes(std::uint64_t seed) {
  SplitMix64 r(seed ^ 0x5bd1e995u);
  static constexpr std::int64_t kBatches[] = {1, 1, 2, 3, 4, 5, 8, 17};
  const std::int64_t batch = kBatches[r.next() % 8];
  const auto steps = [&] { return r.next() % 8 == 0 ? 9 + static_cast<std::int64_t>(r.next() % 24) : 1 + static_cast<std::int64_t>(r.next() % 4); };
  const std::int64_t first = steps(), second = steps();
  return {{first, batch}, {second, batch}};
}

}  // namespace cellfuse::stress
