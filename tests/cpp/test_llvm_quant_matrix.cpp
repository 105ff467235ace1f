// The weight formats of generation (runtime/cpu/quant): every kernel set this CPU runs, every
// format, odd sizes and stream counts, against float64 oracles written here.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "compiler/ir/error.h"
#include "runtime/cpu/quant/quant_matrix.h"
#include "runtime/cpu/team.h"

namespace cellfuse::cpu::quant {
namespace {

const Format kFormats[] = {Format::F32, Format::BF16, Format::Int8, Format::Int4};

std::vector<Isa> runnable_isas() {
  std::vector<Isa> out{Isa::Scalar};
  if (static_cast<int>(host_isa()) >= static_cast<int>(Isa::Avx2)) out.push_back(Isa::Avx2);
  if (host_isa() == Isa::Avx512) out.push_back(Isa::Avx512);
  return out;
}

struct IsaGuard {
  explicit IsaGuard(Isa isa) { force_isa(isa); }
  ~IsaGuard() { force_isa(host_isa()); }
};

std::vector<float> random_values(std::size_t n, std::mt19937& rng, float scale) {
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  // Some rows of real weights have a few large entries: make a few elements stand out.
  for (std::size_t i = 0; i < n; i += 37) v[i] *= 4.0f;
  return v;
}

// x as the kernel sees it: padded and, for the integer formats, dequantized.
double activation(const Activations& a, std::int64_t row, std::int64_t col) {
  switch (a.format) {
    case Format::F32:
    case Format::BF16: return a.f[static_cast<std::size_t>(row * a.kpad + col)];
    case Format::Int8: return a.q[static_cast<std::size_t>(row * a.kpad + col)] * static_cast<double>(a.scale[row]);
    case Format::Int4: {
      const std::int64_t groups = a.kpad / kGroup;
      return a.q[static_cast<std::size_t>(row * a.kpad + col)] *
             static_cast<double>(a.scale[static_cast<std::size_t>(row * groups + col / kGroup)]);
    }
  }
  return 0;
}

struct Case {
  std::int64_t n, k, rows;
};
// Rows past 4 take the many-stream kernels (k in blocks: 700 spans several, with a short last
// one); one row of several panels takes two panels at a time (an odd count: one left alone).
const Case kCases[] = {{1, 1, 1},   {7, 33, 3},   {33, 100, 5},  {64, 1000, 2}, {129, 64, 8},
                       {40, 96, 1}, {300, 257, 4}, {45, 700, 11}, {37, 101, 6},  {80, 530, 1}};

TEST(QuantMatrix, KernelsMatchTheDequantizedOracle) {
  std::mt19937 rng(123);
  for (Isa isa : runnable_isas()) {
    IsaGuard guard(isa);
    for (Format f : kFormats)
      for (const Case& c : kCases) {
        SCOPED_TRACE(std::string(isa_name(isa)) + " " + format_name(f) + " n=" + std::to_string(c.n) +
                     " k=" + std::to_string(c.k) + " rows=" + std::to_string(c.rows));
        const std::int64_t ldx = c.k + 3, ldo = c.n + 2;
        auto w = random_values(static_cast<std::size_t>(c.n * c.k), rng, 0.3f);
        auto x = random_values(static_cast<std::size_t>(c.rows * ldx), rng, 1.0f);
        auto bias = random_values(static_cast<std::size_t>(c.n), rng, 0.5f);
        const bool n_by_k = (c.n + c.k) % 2 == 0;
        std::vector<float> wt(w.size());  // the [k, n] layout of the same matrix
        for (std::int64_t r = 0; r < c.n; ++r)
          for (std::int64_t i = 0; i < c.k; ++i) wt[static_cast<std::size_t>(i * c.n + r)] = w[static_cast<std::size_t>(r * c.k + i)];
        QuantMatrix m = QuantMatrix::quantize(n_by_k ? w.data() : wt.data(), n_by_k, c.k, c.n, f);
        Activations a;
        a.prepare(f, x.data(), c.rows, c.k, ldx);
        std::vector<float> out(static_cast<std::size_t>(c.rows * ldo), 7.0f);
        m.multiply(a, bias.data(), out.data(), ldo);
        for (std::int64_t b = 0; b < c.rows; ++b)
          for (std::int64_t r = 0; r < c.n; ++r) {
            double want = bias[static_cast<std::size_t>(r)], size = std::fabs(want);
            for (std::int64_t i = 0; i < m.kpad(); ++i) {
              want += m.at(r, i) * activation(a, b, i);
              size += std::fabs(m.at(r, i) * activation(a, b, i));
            }
            ASSERT_NEAR(out[static_cast<std::size_t>(b * ldo + r)], want, 2e-6 * size + 1e-7) << "row " << r;
          }
        // Padding columns of out are never written.
        for (std::int64_t b = 0; b < c.rows; ++b) EXPECT_EQ(out[static_cast<std::size_t>(b * ldo + c.n)], 7.0f);
      }
  }
}

// The stored weights are within the format's rounding of the fp32 ones, and padding is zero.
TEST(QuantMatrix, WeightsWithinTheirFormatsRounding) {
  std::mt19937 rng(7);
  const std::int64_t n = 19, k = 77;
  auto w = random_values(static_cast<std::size_t>(n * k), rng, 2.0f);
  for (Format f : kFormats) {
    QuantMatrix m = QuantMatrix::quantize(w.data(), true, k, n, f);
    EXPECT_EQ(m.kpad(), 96);
    for (std::int64_t r = 0; r < n; ++r) {
      double amax = 0;
      for (std::int64_t i = 0; i < k; ++i) amax = std::max(amax, std::fabs(double(w[static_cast<std::size_t>(r * k + i)])));
      for (std::int64_t i = 0; i < m.kpad(); ++i) {
        const double exact = i < k ? w[static_cast<std::size_t>(r * k + i)] : 0.0, got = m.at(r, i);
        if (i >= k) {
          EXPECT_EQ(got, 0.0);
          continue;
        }
        double bound = 0;
        if (f == Format::BF16) bound = std::fabs(exact) * std::ldexp(1.0, -8);
        if (f == Format::Int8) bound = amax / 127 / 2 * 1.0001;
        if (f == Format::Int4) {
          double gmax = 0;
          for (std::int64_t j = i / 32 * 32; j < std::min(k, i / 32 * 32 + 32); ++j)
            gmax = std::max(gmax, std::fabs(double(w[static_cast<std::size_t>(r * k + j)])));
          // A step of gmax / 8 (its fp16 rounding: 1 + 2^-11); the clamped top level is one step off.
          bound = gmax / 8 * 1.001;
        }
        EXPECT_LE(std::fabs(got - exact), bound + 1e-12) << format_name(f) << " [" << r << "," << i << "]";
      }
    }
  }
}

// What activation quantization keeps: within half a step of x, group by group for int4.
TEST(QuantMatrix, ActivationsWithinHalfAStep) {
  std::mt19937 rng(9);
  const std::int64_t rows = 3, k = 70;
  auto x = random_values(static_cast<std::size_t>(rows * k), rng, 3.0f);
  for (Format f : {Format::Int8, Format::Int4}) {
    Activations a;
    a.prepare(f, x.data(), rows, k, k);
    for (std::int64_t b = 0; b < rows; ++b)
      for (std::int64_t i = 0; i < a.kpad; ++i) {
        const double exact = i < k ? x[static_cast<std::size_t>(b * k + i)] : 0.0;
        double amax = 0;
        const std::int64_t lo = f == Format::Int8 ? 0 : i / 32 * 32, hi = f == Format::Int8 ? k : std::min(k, lo + 32);
        for (std::int64_t j = lo; j < hi; ++j) amax = std::max(amax, std::fabs(double(x[static_cast<std::size_t>(b * k + j)])));
        EXPECT_LE(std::fabs(activation(a, b, i) - exact), amax / 254 * 1.0001 + 1e-12);
      }
  }
}

// Shared among a team, every output is summed by one member in the same order: the same bits.
TEST(QuantMatrix, SameBitsOnAnyTeamSize) {
  std::mt19937 rng(11);
  const std::int64_t n = 1031, k = 515, rows = 3;
  auto w = random_values(static_cast<std::size_t>(n * k), rng, 0.2f);
  auto x = random_values(static_cast<std::size_t>(rows * k), rng, 1.0f);
  auto team = shared_team(2);
  for (Format f : kFormats) {
    QuantMatrix m = QuantMatrix::quantize(w.data(), true, k, n, f);
    Activations a;
    a.prepare(f, x.data(), rows, k, k);
    std::vector<float> alone(static_cast<std::size_t>(rows * n)), shared(alone.size());
    m.multiply(a, nullptr, alone.data(), n);
    {
      std::lock_guard<std::mutex> lock(team->user_mutex());
      m.multiply(a, nullptr, shared.data(), n, team.get());
    }
    EXPECT_EQ(alone, shared) << format_name(f);
  }
}

// Each stream of a product gets the bits of its own product alone: whatever the streams beside
// it (1 to 12: every kernel width, several groups of 8) and whether its panel ran paired with
// another, its sums run in the same order. A generation stream's text then never depends on the
// number of streams.
TEST(QuantMatrix, EachStreamGetsTheBitsOfItsOwnProduct) {
  std::mt19937 rng(17);
  for (Isa isa : runnable_isas()) {
    IsaGuard guard(isa);
    for (Format f : kFormats)
      for (std::int64_t n : {35, 64})
        for (std::int64_t k : {45, 1100}) {
          const std::int64_t rows = 12;
          auto w = random_values(static_cast<std::size_t>(n * k), rng, 0.3f);
          auto x = random_values(static_cast<std::size_t>(rows * k), rng, 1.0f);
          auto bias = random_values(static_cast<std::size_t>(n), rng, 0.5f);
          QuantMatrix m = QuantMatrix::quantize(w.data(), true, k, n, f);
          std::vector<std::vector<float>> alone;
          for (std::int64_t b = 0; b < rows; ++b) {
            Activations a;
            a.prepare(f, x.data() + b * k, 1, k, k);
            alone.emplace_back(static_cast<std::size_t>(n));
            m.multiply(a, bias.data(), alone.back().data(), n);
          }
          for (std::int64_t count = 1; count <= rows; ++count) {
            Activations a;
            a.prepare(f, x.data(), count, k, k);
            std::vector<float> out(static_cast<std::size_t>(count * n));
            m.multiply(a, bias.data(), out.data(), n);
            for (std::int64_t b = 0; b < count; ++b)
              ASSERT_EQ(std::vector<float>(out.begin() + b * n, out.begin() + (b + 1) * n), alone[static_cast<std::size_t>(b)])
                  << isa_name(isa) << " " << format_name(f) << " n=" << n << " k=" << k << ": stream " << b << " of "
                  << count;
          }
        }
  }
}

// fp16 (int4's group scales) against the exact values it can hold and their neighbours.
TEST(QuantMatrix, HalfPrecisionRoundsToNearestEven) {
  EXPECT_EQ(float_to_half(1.0f), 0x3c00);
  EXPECT_EQ(float_to_half(-2.0f), 0xc000);
  EXPECT_EQ(float_to_half(65504.0f), 0x7bff);
  EXPECT_EQ(float_to_half(0x1.0p-24f), 0x0001);  // the smallest subnormal
  EXPECT_EQ(float_to_half(0x1.0p-14f), 0x0400);  // the smallest normal
  EXPECT_EQ(float_to_half(1.0f + 0x1.0p-11f), 0x3c00);  // a tie goes to the even mantissa
  EXPECT_EQ(float_to_half(1.0f + 0x1.8p-11f), 0x3c01);
  EXPECT_THROW(float_to_half(1e6f), Error);
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-8.0f, 8.0f);
  for (int i = 0; i < 2000; ++i) {
    const float v = std::ldexp(u(rng), static_cast<int>(rng() % 30) - 25);
    const float back = half_to_float(float_to_half(v));
    // The nearest half: no representable neighbour of `back` is closer to v.
    const std::uint16_t h = float_to_half(v);
    for (int step : {-1, 1}) {
      const std::uint16_t n = static_cast<std::uint16_t>(h + step);
      if ((n & 0x7fff) >= 0x7c00 || ((h & 0x7fff) == 0 && step < 0)) continue;
      EXPECT_LE(std::fabs(double(back) - v), std::fabs(double(half_to_float(n)) - v)) << v;
    }
  }
}

TEST(QuantMatrix, ClearErrors) {
  std::vector<float> w(12, 0.5f);
  w[5] = std::nanf("");
  try {
    QuantMatrix::quantize(w.data(), true, 4, 3, Format::Int8);
    FAIL() << "a NaN weight was quantized";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[1, 1]"), std::string::npos) << e.what();
  }
  w[5] = 0.5f;
  QuantMatrix m = QuantMatrix::quantize(w.data(), true, 4, 3, Format::Int4);
  Activations a;
  a.prepare(Format::Int8, w.data(), 1, 4, 4);
  std::vector<float> out(3);
  EXPECT_THROW(m.multiply(a, nullptr, out.data(), 3), Error);
  EXPECT_THROW(QuantMatrix::from_raw(Format::Int8, 4, 3, std::vector<std::uint8_t>(95), std::vector<float>(3)), Error);
  EXPECT_THROW(parse_format("int3"), Error);
  if (host_isa() != Isa::Avx512) {
    EXPECT_THROW(force_isa(Isa::Avx512), Error);
  }
  // The stored rows keep padded(k) columns (zeros past k) whatever the panels keep.
  for (Format f : kFormats) {
    std::vector<float> v(3 * 37, 0.25f);
    QuantMatrix q = QuantMatrix::quantize(v.data(), true, 37, 3, f);
    EXPECT_EQ(q.kpad(), 64);
    EXPECT_EQ(q.kpanel(), f == Format::F32 || f == Format::BF16 ? 40 : 64);
    const std::size_t element = f == Format::F32 ? 4 : f == Format::BF16 ? 2 : 1;
    if (f != Format::Int4) {
      EXPECT_EQ(q.raw_data().size(), 3 * 64 * element) << format_name(f);
    }
    QuantMatrix r = QuantMatrix::from_raw(f, 37, 3, q.raw_data(), q.raw_scales());
    for (std::int64_t i = 0; i < 64; ++i) EXPECT_EQ(r.at(2, i), q.at(2, i)) << format_name(f) << " column " << i;
  }
  // A matrix rebuilt from its bytes multiplies the same.
  QuantMatrix back = QuantMatrix::from_raw(m.format(), m.k(), m.n(), m.raw_data(), m.raw_scales());
  a.prepare(Format::Int4, w.data(), 1, 4, 4);
  std::vector<float> again(3);
  m.multiply(a, nullptr, out.data(), 3);
  back.multiply(a, nullptr, again.data(), 3);
  EXPECT_EQ(out, again);
}

}  // namespace
}  // namespace cellfuse::cpu::quant
