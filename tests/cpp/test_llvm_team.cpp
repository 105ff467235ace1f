// The CPU team's fallback to the caller alone on an oversubscribed machine (runtime/cpu/team.h):
// a member that does not run for milliseconds (as when it lost its core) sends the next runs to
// the caller alone; a probe later brings the whole team back; balanced runs never leave it.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "runtime/cpu/team.h"

using cellfuse::cpu::Team;

namespace {

// One run in which member 1 stalls for `stall` before its share: the caller waits that long.
void run_with_stall(Team& team, std::chrono::microseconds stall, std::vector<int>* parts_seen = nullptr) {
  team.run([&](int part, int parts) {
    if (parts_seen && part == 0) parts_seen->push_back(parts);
    if (part == 1) std::this_thread::sleep_for(stall);
    team.barrier();
  });
}

}  // namespace

TEST(Team, AStalledMemberSendsTheNextRunsToTheCallerAlone) {
  Team team(2);
  team.set_adaptive(true);
  ASSERT_EQ(team.active(), 2);
  run_with_stall(team, std::chrono::milliseconds(3));
  EXPECT_EQ(team.active(), 1);
  // The solo runs call the function once, as part 0 of 1.
  std::atomic<int> calls{0};
  std::vector<int> parts;
  team.run([&](int part, int count) {
    calls++;
    EXPECT_EQ(part, 0);
    parts.push_back(count);
    team.barrier();  // a barrier of one member returns at once
  });
  EXPECT_EQ(calls.load(), 1);
  ASSERT_EQ(parts.size(), 1u);
  EXPECT_EQ(parts[0], 1);
}

TEST(Team, AfterAStallTheWholeTeamIsTriedAgainSoon) {
  Team team(2);
  team.set_adaptive(true);
  run_with_stall(team, std::chrono::milliseconds(3));
  ASSERT_EQ(team.active(), 1);
  // Whether the probe then keeps the whole team depends on how busy this machine is (the rule is
  // checked by OnlyLongWaitsThatDominateARunMeanABusyMachine); that it comes, and when, does not.
  std::vector<int> parts;
  for (int i = 0; i < 16; ++i) run_with_stall(team, std::chrono::microseconds(0), &parts);
  for (int i = 0; i < 15; ++i) EXPECT_EQ(parts[i], 1) << "run " << i << " after the stall";
  EXPECT_EQ(parts[15], 2) << "no probe of the whole team after 15 solo runs";
}

TEST(Team, ProbesThatFindTheMachineBusyBackOffForLonger) {
  Team team(2);
  team.set_adaptive(true);
  // Member 1 stalls whenever it runs: every run of the whole team (a probe) finds it busy.
  std::vector<int> parts;
  for (int i = 0; i < 1 + 16 + 32 + 64; ++i) run_with_stall(team, std::chrono::milliseconds(2), &parts);
  std::vector<int> whole;
  for (int i = 0; i < static_cast<int>(parts.size()); ++i)
    if (parts[i] == 2) whole.push_back(i);
  ASSERT_GE(whole.size(), 3u);
  EXPECT_EQ(whole[0], 0);
  for (std::size_t k = 2; k < whole.size(); ++k)
    EXPECT_GT(whole[k] - whole[k - 1], whole[k - 1] - whole[k - 2]) << "solo stretches do not grow";
  EXPECT_LE(whole.size(), 4u) << "too many probes of a busy machine";
}

TEST(Team, OnlyLongWaitsThatDominateARunMeanABusyMachine) {
  using namespace std::chrono;
  auto ns = [](auto d) { return duration_cast<nanoseconds>(d).count(); };
  EXPECT_FALSE(Team::busy(ns(milliseconds(1)), ns(microseconds(100))));   // a small share
  EXPECT_TRUE(Team::busy(ns(milliseconds(1)), ns(microseconds(600))));    // most of the run
  EXPECT_FALSE(Team::busy(ns(microseconds(100)), ns(microseconds(90))));  // a wake-up, not a lost core
  EXPECT_TRUE(Team::busy(ns(milliseconds(4)), ns(milliseconds(3))));
}

TEST(Team, NotAdaptiveAlwaysUsesTheWholeTeam) {
  Team team(2);
  team.set_adaptive(false);
  run_with_stall(team, std::chrono::milliseconds(3));
  EXPECT_EQ(team.active(), 2);
  std::vector<int> parts;
  run_with_stall(team, std::chrono::microseconds(0), &parts);
  EXPECT_EQ(parts.back(), 2);
}
