// StepParts (runtime/generate/step_parts.h): which members a generation step runs on, picked
// by timing both choices on the machine. Fed made-up step times here; the generator's tests
// check that either choice gives the same bits.
#include <gtest/gtest.h>

#include "runtime/generate/step_parts.h"

namespace cellfuse::generate {
namespace {

// Runs one probing round: `shared_ns` / `alone_ns` for the steps on the team / the caller.
void probe_round(StepParts& p, int team, std::int64_t shared_ns, std::int64_t alone_ns) {
  for (int i = 0; i < 2 * StepParts::kProbes; ++i) {
    ASSERT_TRUE(p.timing()) << "probe " << i;
    ASSERT_EQ(p.next(), i % 2 == 0 ? team : 1) << "probe " << i;
    p.record(p.next() == 1 ? alone_ns : shared_ns);
  }
}

TEST(StepParts, SmallAndLargeModelsAndTeamsOfOneNeverProbe) {
  for (auto [bytes, team, want] : {std::tuple{std::size_t{1000}, 2, 1}, std::tuple{std::size_t{64} << 20, 2, 2},
                                   std::tuple{std::size_t{64} << 20, 1, 1}, std::tuple{std::size_t{500000}, 1, 1}}) {
    StepParts p(bytes, team);
    for (int i = 0; i < 3000; ++i) {
      ASSERT_FALSE(p.timing());
      ASSERT_EQ(p.next(), want) << bytes << " bytes, team " << team;
      p.record(123);
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
      for (int i = 0; i < StepParts::kStretch; ++i) {
        ASSERT_FALSE(p.timing()) << "step " << i << " of the stretch";
        ASSERT_EQ(p.next(), want);
        p.record(1);  // not timed: ignored
      }
    }
    EXPECT_TRUE(p.timing());  // probing again
  }
  // The machine changes between rounds: the choice follows.
  StepParts p(450 * 1024, 4);
  probe_round(p, 4, 3000, 5000);
  EXPECT_EQ(p.next(), 4);
  for (int i = 0; i < StepParts::kStretch; ++i) p.record(0);
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
    p.record(ns);
  }
  EXPECT_EQ(p.next(), 2);
}

}  // namespace
}  // namespace cellfuse::generate
