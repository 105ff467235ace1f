// StepParts (runtime/generate/step_parts.h): which members a generation step runs on, picked
// by timing both choices on the machine. Fed made-up step times here; the generator's tests
// check that either choice gives the same bits.
#include <gtest/gtest.h>

#include <algorithm>

#include "runtime/generate/step_parts.h"

namespace cellfuse::generate {
namespace {

// Runs one probing round: `shared_ns` / `alone_ns` per step on the team / the caller (a probe
// is a run of StepParts::kProbeSteps steps, timed as a whole).
void probe_round(StepParts& p, int team, std::int64_t shared_ns, std::int64_t alone_ns) {
  for (int i = 0; i < 2 * StepParts::kProbes; ++i) {
    ASSERT_TRUE(p.timing()) << "probe " << i;
    ASSERT_EQ(p.next(), i % 2 == 0 ? team : 1) << "probe " << i;
    ASSERT_EQ(p.steps(), StepParts::kProbeSteps);
    p.record((p.next() == 1 ? alone_ns : shared_ns) * p.steps(), p.steps());
  }
}

// Runs the stretch after a probing round: runs of at most kMaxRun steps on `want` members, not
// timed, kStretch steps in all.
void stretch(StepParts& p, int want) {
  std::int64_t done = 0;
  while (done < StepParts::kStretch) {
    ASSERT_FALSE(p.timing()) << "step " << done << " of the stretch";
    ASSERT_EQ(p.next(), want);
    const std::int64_t n = p.steps();
    ASSERT_GE(n, 1);
    ASSERT_LE(n, std::min<std::int64_t>(StepParts::kMaxRun, StepParts::kStretch - done));
    p.record(1, n);  // not timed: ignored
    done += n;
  }
}

TEST(StepParts, SmallAndLargeModelsAndTeamsOfOneNeverProbe) {
  for (auto [bytes, team, want] : {std::tuple{std::size_t{1000}, 2, 1}, std::tuple{std::size_t{64} << 20, 2, 2},
                                   std::tuple{std::size_t{64} << 20, 1, 1}, std::tuple{std::size_t{500000}, 1, 1}}) {
    StepParts p(bytes, team);
    for (int i = 0; i < 3000; ++i) {
      ASSERT_FALSE(p.timing());
      ASSERT_EQ(p.next(), want) << bytes << " bytes, team " << team;
      ASSERT_EQ(p.steps(), StepParts::kMaxRun);
      p.record(123, i % 7 + 1);
    }
  }
}

TEST(StepParts, TheFasterChoiceRunsUntilTheNextProbes) {
  // The team wins only by a tenth or more.
  for (auto [shared, alone, want] :
       {std::tuple{3000, 5000, 2}, std::tuple{9000, 5000, 1}, std::tuple{4600, 5000, 1}, std::tuple{4400, 5000, 2}}) {
    StepParts p(450 * 1024, 2);
    for (int round = 0; round < 3; ++round) {
      probe_round(p, 2, shared, alone);
      stretch(p, want);
    }
    EXPECT_TRUE(p.timing());  // probing again
  }
  // The machine changes between rounds: the choice follows.
  StepParts p(450 * 1024, 4);
  probe_round(p, 4, 3000, 5000);
  EXPECT_EQ(p.next(), 4);
  stretch(p, 4);
  probe_round(p, 4, 50000, 5000);
  EXPECT_EQ(p.next(), 1);
}

TEST(StepParts, OneSlowProbeDoesNotDecide) {
  StepParts p(450 * 1024, 2);
  for (int i = 0; i < 2 * StepParts::kProbes; ++i) {
    const bool shared = p.next() == 2;
    // The team is faster, but its second probe caught a descheduled worker and the first of
    // each (a sleeping worker to wake) is slow too.
    std::int64_t ns = shared ? 3000 : 5000;
    if (i == 0 || i == 2) ns = 1'000'000;
    p.record(ns * p.steps(), p.steps());
  }
  EXPECT_EQ(p.next(), 2);
}

// A run that ends early (generation over) counts its steps: the stretch ends after kStretch
// steps, however they came; a probe's time is per step.
TEST(StepParts, RunsCountTheirSteps) {
  StepParts p(450 * 1024, 2);
  for (int i = 0; i < 2 * StepParts::kProbes; ++i) {
    // Probes that made 1 step (a call that ended) are as valid as full ones: per-step times.
    const std::int64_t steps = i % 3 == 0 ? 1 : p.steps();
    p.record((p.next() == 2 ? 3000 : 5000) * steps, steps);
  }
  ASSERT_EQ(p.next(), 2);
  std::int64_t done = 0;
  while (!p.timing()) {
    p.record(0, 3);
    done += 3;
  }
  EXPECT_EQ(done, (StepParts::kStretch + 2) / 3 * 3);
  p.record(0, 0);  // a run that made no step changes nothing
  EXPECT_TRUE(p.timing());
  EXPECT_EQ(p.next(), 2);
}

}  // namespace
}  // namespace cellfuse::generate
