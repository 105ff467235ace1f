#include "runtime/generate/step_parts.h"

#include <algorithm>

namespace cellfuse::generate {

StepParts::StepParts(std::size_t step_bytes, int team_size) : team_(team_size < 1 ? 1 : team_size) {
  if (team_ == 1 || step_bytes < kAlwaysAlone) {
    parts_ = 1;
  } else if (step_bytes >= kAlwaysShared) {
    parts_ = team_;
  } else {
    start_probing();
  }
}

void StepParts::start_probing() {
  mode_ = Mode::Probing;
  probe_ = 0;
  parts_ = team_;
}

std::int64_t StepParts::steps() const {
  switch (mode_) {
    case Mode::Probing: return kProbeSteps;
    case Mode::Stretch: return std::min<std::int64_t>(left_, kMaxRun);
    case Mode::Fixed: break;
  }
  return kMaxRun;
}

void StepParts::record(std::int64_t ns, std::int64_t steps) {
  if (steps < 1) return;
  switch (mode_) {
    case Mode::Fixed: return;
    case Mode::Stretch:
      left_ -= steps;
      if (left_ <= 0) start_probing();
      return;
    case Mode::Probing: break;
  }
  samples_[probe_ % 2][probe_ / 2] = ns / steps;
  if (++probe_ < 2 * kProbes) {
    parts_ = probe_ % 2 == 0 ? team_ : 1;
    return;
  }
  // The median of each choice's probes but its first (a worker asleep since the last round,
  // caches filled by the other choice): a busy machine's outliers move it less than a mean.
  auto median = [&](int choice) {
    std::int64_t v[kProbes - 1];
    std::copy(samples_[choice] + 1, samples_[choice] + kProbes, v);
    std::nth_element(v, v + (kProbes - 1) / 2, v + kProbes - 1);
    return v[(kProbes - 1) / 2];
  };
  // The team only when it saves a tenth: it also takes the other cores from whatever else runs,
  // and a busier moment than the probes saw costs it more than the caller alone.
  parts_ = 10 * median(0) < 9 * median(1) ? team_ : 1;
  mode_ = Mode::Stretch;
  left_ = kStretch;
}

}  // namespace cellfuse::generate
