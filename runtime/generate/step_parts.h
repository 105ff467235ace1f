#pragma once
// How many members of the team a generation step runs on: the caller alone or the whole team.
// The results are the same bits either way (every product's output rows are summed in one
// order whoever sums them); which is faster depends on the model and on the machine. A large
// model's step streams megabytes of weights and wants every core's bandwidth; a small one's
// (a 2-layer GRU of 100, 0.45 MB of fp32 in the L2 caches) takes a few microseconds, about what
// its barriers cost; and on a busy machine every barrier waits for a descheduled worker. So a
// model in between is timed on this machine as it runs: runs of a few steps alternate between
// the two choices for a few probes, the faster runs the next stretch (the team only when it
// saves at least a tenth), then both are probed again. Steps go in runs (one Team::run for
// many steps: no wake-up and join per step), at most kMaxRun steps each.
#include <cstdint>

namespace cellfuse::generate {

class StepParts {
 public:
  // Weights a step reads (all streams' rows counted: a step of 8 streams does 8 times the
  // multiply-adds) and the team's size.
  StepParts(std::size_t step_bytes, int team_size);

  // Below this a step always runs on the caller alone, at or above it always on the team.
  static constexpr std::size_t kAlwaysAlone = 64 * 1024, kAlwaysShared = 8u << 20;
  // Probes per choice (the first of each set, which may find a sleeping worker, is dropped) of
  // kProbeSteps steps each, steps run on the winner before probing again, and the most steps
  // one run takes.
  static constexpr int kProbes = 6, kProbeSteps = 4, kStretch = 1000, kMaxRun = 256;

  // The members the next run uses (1 or the team's size), its steps at most, and whether to
  // time it.
  int next() const { return parts_; }
  std::int64_t steps() const;
  bool timing() const { return mode_ == Mode::Probing; }
  // After each run on next() members: its time in ns (read only when timing()) and the steps it
  // made (fewer than steps() when generation ended in it).
  void record(std::int64_t ns, std::int64_t steps);

 private:
  enum class Mode { Fixed, Probing, Stretch };
  void start_probing();
  Mode mode_ = Mode::Fixed;
  int team_;
  int parts_ = 1;
  int probe_ = 0;  // probes done in this round, alternating shared (even) and alone (odd)
  std::int64_t left_ = 0;  // steps left in the current stretch
  std::int64_t samples_[2][kProbes] = {};  // [shared, alone][probe]: ns per step
};

}  // namespace cellfuse::generate
