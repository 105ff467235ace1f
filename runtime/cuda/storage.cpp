#include "runtime/cuda/storage.h"

#include <bit>
#include <cmath>

namespace cellfuse {

// Each function mirrors the device's cf_* helper of the same meaning (cuda_emitter.cpp).

std::uint16_t f32_to_bf16(float value) {
  std::uint32_t u = std::bit_cast<std::uint32_t>(value);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x0040u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even; a carry moves into the exponent
  return static_cast<std::uint16_t>(u >> 16);
}

float bf16_to_f32(std::uint16_t bits) { return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16); }

std::uint16_t f32_to_f16(float value) {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(value);
  const std::uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x3ffu));  // quiet NaN
  if (a >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // >= 65520 rounds to inf
  if (a < 0x38800000u) {
    // Below 2^-14: a subnormal (or zero) in units of 2^-24; the scaling by 2^24 is exact.
    const float units = std::bit_cast<float>(a) * 16777216.0f;
    return static_cast<std::uint16_t>(sign | static_cast<std::uint32_t>(std::nearbyint(units)));
  }
  std::uint32_t r = a - 0x38000000u;  // exponent rebiased from 127 to 15
  r = (r + 0xfffu + ((r >> 13) & 1u)) >> 13;
  return static_cast<std::uint16_t>(sign | r);
}

float f16_to_f32(std::uint16_t bits) {
  const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000u) << 16;
  const std::uint32_t exponent = (bits >> 10) & 0x1fu, mantissa = bits & 0x3ffu;
  if (exponent == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  if (exponent == 0) {
    const float v = static_cast<float>(mantissa) * 5.9604644775390625e-8f;  // mantissa * 2^-24, exact
    return sign ? -v : v;
  }
  return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

std::uint16_t to_storage_bits(float value, Storage storage) {
  return storage == Storage::BF16 ? f32_to_bf16(value) : f32_to_f16(value);
}

float from_storage_bits(std::uint16_t bits, Storage storage) {
  return storage == Storage::BF16 ? bf16_to_f32(bits) : f16_to_f32(bits);
}

float round_to_storage(float value, Storage storage) {
  return storage == Storage::Native ? value : from_storage_bits(to_storage_bits(value, storage), storage);
}

}  // namespace cellfuse
