// The host side of 16-bit storage (runtime/cuda/storage.h) against independent oracles: the
// compiler's own _Float16 conversions for f16, and nearest-value rounding worked out in double
// for bf16. The device's conversion kernels are checked bit for bit against these functions in
// test_cuda_emulated.cpp (and on a GPU by tests/gpu).
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "runtime/cuda/storage.h"

namespace cellfuse {
namespace {

// The bf16 value nearest to `x`, ties to the even significand, beyond the range to inf (as if the
// exponent were unbounded: 2^128 stands for the pattern after the largest finite one).
std::uint16_t bf16_oracle(float x) {
  if (std::isnan(x)) return 0;  // not used for NaN
  const std::uint32_t u = std::bit_cast<std::uint32_t>(x);
  const std::uint32_t sign = u & 0x80000000u, mag = u & 0x7fffffffu;
  const std::uint32_t lo = mag & 0xffff0000u, hi = lo + 0x10000u;
  auto value = [](std::uint32_t bits) {
    return bits >= 0x7f800000u ? std::ldexp(1.0, 128) : static_cast<double>(std::bit_cast<float>(bits));
  };
  const double v = static_cast<double>(std::bit_cast<float>(mag)), dlo = v - value(lo), dhi = value(hi) - v;
  std::uint32_t pick = dlo < dhi ? lo : dhi < dlo ? hi : ((lo >> 16) & 1u) == 0 ? lo : hi;
  if (mag >= 0x7f800000u) pick = 0x7f800000u;  // inf stays inf
  return static_cast<std::uint16_t>((sign | pick) >> 16);
}

std::uint16_t f16_oracle(float x) { return std::bit_cast<std::uint16_t>(static_cast<_Float16>(x)); }

// Tricky values for both formats: zeros, infinities, the largest finite values and just past
// them, ties between neighbouring 16-bit values and a hair either side, subnormals.
std::vector<float> tricky_values() {
  std::vector<float> out = {0.0f, -0.0f, 1.0f, -1.0f, std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::max(),
                            std::numeric_limits<float>::min(), std::numeric_limits<float>::denorm_min(),
                            65504.0f, 65519.996f, 65520.0f, 65536.0f, -65520.0f, 5.9604645e-8f, 2.9802322e-8f,
                            2.9802326e-8f, 6.1035156e-5f, 6.0975552e-5f, 3.3895314e38f, 3.3961775e38f};
  for (std::uint32_t h = 0; h < 0x10000u; h += 7) {
    // Midpoints between neighbouring f16 and bf16 values, and one float ulp either side.
    if ((h & 0x7c00u) != 0x7c00u && (h & 0x7fffu) != 0x7bffu) {
      const float a = f16_to_f32(static_cast<std::uint16_t>(h)), b = f16_to_f32(static_cast<std::uint16_t>(h + 1));
      const float mid = (a + b) / 2;  // exact: 12 significant bits
      out.insert(out.end(), {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e30f)});
    }
    const std::uint32_t bits = h << 16;
    if ((bits & 0x7f800000u) != 0x7f800000u) {
      const float mid = std::bit_cast<float>(bits | 0x8000u);
      out.insert(out.end(), {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 3e38f)});
    }
  }
  std::mt19937 rng(5);
  for (int i = 0; i < 300000; ++i) {
    const float v = std::bit_cast<float>(static_cast<std::uint32_t>(rng()));
    if (!std::isnan(v)) out.push_back(v);
  }
  return out;
}

TEST(Storage, NamesParseBack) {
  for (Storage s : {Storage::Native, Storage::BF16, Storage::F16}) EXPECT_EQ(parse_storage(storage_name(s)), s);
  EXPECT_FALSE(parse_storage("fp8").has_value());
}

TEST(Storage, WideningIsExact) {
  for (std::uint32_t h = 0; h < 0x10000u; ++h) {
    const auto bits = static_cast<std::uint16_t>(h);
    const float f16 = f16_to_f32(bits), bf16 = bf16_to_f32(bits);
    const float want16 = static_cast<float>(std::bit_cast<_Float16>(bits));
    if (std::isnan(want16)) {
      EXPECT_TRUE(std::isnan(f16)) << h;
    } else {
      EXPECT_EQ(std::bit_cast<std::uint32_t>(f16), std::bit_cast<std::uint32_t>(want16)) << "f16 pattern " << h;
    }
    EXPECT_EQ(std::bit_cast<std::uint32_t>(bf16), h << 16);
    // Every finite 16-bit value survives the round trip.
    if (!std::isnan(f16)) {
      EXPECT_EQ(f32_to_f16(f16), bits) << h;
    }
    if (!std::isnan(bf16)) {
      EXPECT_EQ(f32_to_bf16(bf16), bits) << h;
    }
  }
}

TEST(Storage, NarrowingRoundsToNearestEven) {
  int bad_bf16 = 0, bad_f16 = 0;
  for (float v : tricky_values()) {
    if (f32_to_bf16(v) != bf16_oracle(v) && ++bad_bf16 < 5) ADD_FAILURE() << "bf16 of " << v;
    if (f32_to_f16(v) != f16_oracle(v) && ++bad_f16 < 5) ADD_FAILURE() << "f16 of " << v;
  }
  EXPECT_EQ(bad_bf16, 0);
  EXPECT_EQ(bad_f16, 0);
}

TEST(Storage, NaNStaysQuietNaNAndOverflowGoesToInfinity) {
  for (std::uint32_t payload : {0x7fc00000u, 0x7f800001u, 0xffffffffu, 0x7fa00000u}) {
    const float nan = std::bit_cast<float>(payload);
    EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(nan))));
    EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(nan))));
  }
  EXPECT_EQ(f16_to_f32(f32_to_f16(70000.0f)), std::numeric_limits<float>::infinity());
  EXPECT_EQ(f16_to_f32(f32_to_f16(-1e30f)), -std::numeric_limits<float>::infinity());
  EXPECT_EQ(f16_to_f32(f32_to_f16(65519.0f)), 65504.0f);
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::max())), std::numeric_limits<float>::infinity());
  EXPECT_EQ(round_to_storage(1.00390625f, Storage::BF16), 1.0f);  // a tie: to the even neighbour
  EXPECT_EQ(round_to_storage(1.01171875f, Storage::BF16), 1.015625f);
  EXPECT_EQ(round_to_storage(0.1f, Storage::Native), 0.1f);
}

}  // namespace
}  // namespace cellfuse
