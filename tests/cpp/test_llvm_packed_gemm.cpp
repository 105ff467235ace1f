// The packed recurrent product (runtime/cpu/packed_gemm.h) against a double-precision product,
// at sizes that cut every tile and panel short, with and without bias, in both weight layouts;
// and bitwise the same whatever the team's size.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "runtime/cpu/packed_gemm.h"
#include "runtime/cpu/team.h"

namespace {

using cellfuse::cpu::PackedWeights;
using cellfuse::cpu::Team;

std::vector<float> random_values(std::size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& f : v) {
    f = u(rng);
    if (std::fabs(f) < 1e-3f) f = 0.5f;  // never zero
  }
  return v;
}

struct Case {
  std::int64_t m, k, n;
};

// out[m, n] = x W (+ bias) in double, with W [n, k] or [k, n].
std::vector<double> reference(const std::vector<float>& x, const std::vector<float>& w, bool n_by_k,
                              const float* bias, const Case& c, std::vector<double>* magnitude) {
  std::vector<double> out(static_cast<std::size_t>(c.m * c.n));
  magnitude->assign(out.size(), 0.0);
  for (std::int64_t r = 0; r < c.m; ++r)
    for (std::int64_t j = 0; j < c.n; ++j) {
      double s = bias ? bias[j] : 0.0, a = bias ? std::fabs(bias[j]) : 0.0;
      for (std::int64_t kk = 0; kk < c.k; ++kk) {
        const double term = double(x[r * c.k + kk]) * (n_by_k ? w[j * c.k + kk] : w[kk * c.n + j]);
        s += term, a += std::fabs(term);
      }
      out[r * c.n + j] = s;
      (*magnitude)[r * c.n + j] = a;
    }
  return out;
}

void check_odd_sizes() {
  std::mt19937 rng(7);
  Team team(2);
  const Case cases[] = {{1, 1, 1},   {3, 7, 5},     {8, 33, 32},  {9, 33, 33},  {13, 100, 31},
                        {64, 512, 2048 + 17}, {65, 17, 64}, {100, 3, 200}, {7, 1000, 48}, {200, 700, 40}};
  for (const Case& c : cases)
    for (bool n_by_k : {true, false})
      for (bool with_bias : {true, false}) {
        SCOPED_TRACE(testing::Message() << "m=" << c.m << " k=" << c.k << " n=" << c.n << " n_by_k=" << n_by_k
                                        << " bias=" << with_bias);
        auto x = random_values(static_cast<std::size_t>(c.m * c.k), rng);
        auto w = random_values(static_cast<std::size_t>(c.k * c.n), rng);
        auto bias = random_values(static_cast<std::size_t>(c.n), rng);
        PackedWeights packed;
        packed.pack(w.data(), n_by_k, c.k, c.n);
        // One column past the end of each row stays untouched.
        std::vector<float> out(static_cast<std::size_t>(c.m * c.n + 1), 1234.5f);
        packed.multiply(team, x.data(), with_bias ? bias.data() : nullptr, out.data(), c.m);
        std::vector<double> magnitude;
        auto want = reference(x, w, n_by_k, with_bias ? bias.data() : nullptr, c, &magnitude);
        double worst = 0;
        for (std::size_t i = 0; i < want.size(); ++i)
          worst = std::max(worst, std::fabs(out[i] - want[i]) / magnitude[i]);
        EXPECT_LE(worst, 1e-6 * std::sqrt(double(c.k)) + 1e-7);
        EXPECT_EQ(out.back(), 1234.5f);
      }
}

TEST(PackedGemm, MatchesADoubleProductAtOddSizes) {
  if (!PackedWeights::supported()) GTEST_SKIP() << "this CPU has neither AVX-512F nor AVX2+FMA";
  check_odd_sizes();
}

// The AVX2 kernel (16-wide panels, tiles of up to 6 rows), which AVX-512 CPUs never pick.
TEST(PackedGemm, Avx2KernelMatchesADoubleProductAtOddSizes) {
  if (!PackedWeights::supported()) GTEST_SKIP() << "this CPU has neither AVX-512F nor AVX2+FMA";
  PackedWeights::use_avx2_for_testing(true);
  check_odd_sizes();
  PackedWeights::use_avx2_for_testing(false);
}

TEST(PackedGemm, NoTermsGiveTheBias) {
  if (!PackedWeights::supported()) GTEST_SKIP() << "this CPU has neither AVX-512F nor AVX2+FMA";
  Team team(1);
  PackedWeights packed;
  packed.pack(nullptr, true, 0, 3);
  const float bias[3] = {1.5f, -2.0f, 3.25f};
  std::vector<float> out(6, 99.0f);
  packed.multiply(team, nullptr, bias, out.data(), 2);
  EXPECT_EQ(out, (std::vector<float>{1.5f, -2.0f, 3.25f, 1.5f, -2.0f, 3.25f}));
}

TEST(PackedGemm, ResultsDoNotDependOnTheTeamSize) {
  if (!PackedWeights::supported()) GTEST_SKIP() << "this CPU has neither AVX-512F nor AVX2+FMA";
  std::mt19937 rng(11);
  const Case c{37, 129, 1000};
  auto x = random_values(static_cast<std::size_t>(c.m * c.k), rng);
  auto w = random_values(static_cast<std::size_t>(c.k * c.n), rng);
  auto bias = random_values(static_cast<std::size_t>(c.n), rng);
  PackedWeights packed;
  packed.pack(w.data(), true, c.k, c.n);
  std::vector<std::vector<float>> results;
  for (int threads : {1, 2, 3}) {
    Team team(threads);
    results.emplace_back(static_cast<std::size_t>(c.m * c.n));
    packed.multiply(team, x.data(), bias.data(), results.back().data(), c.m);
  }
  EXPECT_EQ(results[0], results[1]);
  EXPECT_EQ(results[0], results[2]);
}

}  // namespace
