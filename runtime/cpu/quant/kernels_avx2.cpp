// The AVX2 + FMA kernels of quant_matrix.h, for CPUs without AVX-512 VNNI: every format over
// its panels 8 rows (one vector) at a time, each output summed in a fixed order.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "runtime/cpu/quant/quant_matrix.h"

#define CF_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace cellfuse::cpu::quant {
namespace {

// Stores lanes of v for rows [r, r1) (at most 8) of one output row.
CF_AVX2 inline void store_rows(float* out, __m256 v, std::int64_t count) {
  if (count >= 8) return _mm256_storeu_ps(out, v);
  alignas(32) float tmp[8];
  _mm256_store_ps(tmp, v);
  for (std::int64_t i = 0; i < count; ++i) out[i] = tmp[i];
}

CF_AVX2 inline __m256 bias_rows(const float* bias, std::int64_t r, std::int64_t count) {
  alignas(32) float b[8] = {};
  if (bias)
    for (std::int64_t i = 0; i < count; ++i) b[i] = bias[r + i];
  return _mm256_load_ps(b);
}

// Fp32 panels (quant_matrix.h), 8 of a panel's 16 rows at a time: 32 bytes are the 8 rows at
// one k, times x[k] broadcast; two accumulators (k even, odd) added at the end.
CF_AVX2 void f32_avx2(const float* w, std::int64_t kpad, const Activations& x, std::int64_t r0, std::int64_t r1,
                      const float* bias, float* out, std::int64_t ldo) {
  for (std::int64_t r = r0; r < r1; r += 8) {
    const float* wp = w + (r / kPanel) * kPanel * kpad + r % kPanel;
    const std::int64_t count = std::min<std::int64_t>(8, r1 - r);
    const __m256 add = bias_rows(bias, r, count);
    for (std::int64_t b = 0; b < x.rows; ++b) {
      const float* xr = x.f.data() + b * x.kpad;
      __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
      for (std::int64_t k = 0; k < kpad; k += 2)
        for (int a = 0; a < 2; ++a)
          acc[a] = _mm256_fmadd_ps(_mm256_loadu_ps(wp + (k + a) * kPanel), _mm256_set1_ps(xr[k + a]), acc[a]);
      store_rows(out + b * ldo + r, _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), add), count);
    }
  }
}

// Bf16 panels: a 32-bit lane per row holds k (low half) and k + 1; shifted and masked, each is
// an f32 against x[k] or x[k + 1] broadcast.
CF_AVX2 void bf16_avx2(const std::uint16_t* w, std::int64_t kpad, const Activations& x, std::int64_t r0,
                       std::int64_t r1, const float* bias, float* out, std::int64_t ldo) {
  const __m256i high = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
  for (std::int64_t r = r0; r < r1; r += 8) {
    const std::uint16_t* wp = w + (r / kPanel) * kPanel * kpad + (r % kPanel) * 2;
    const std::int64_t count = std::min<std::int64_t>(8, r1 - r);
    const __m256 add = bias_rows(bias, r, count);
    for (std::int64_t b = 0; b < x.rows; ++b) {
      const float* xr = x.f.data() + b * x.kpad;
      __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
      for (std::int64_t k = 0; k < kpad; k += 2) {
        const __m256i pair = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + k * kPanel));
        acc[0] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(pair, 16)), _mm256_set1_ps(xr[k]), acc[0]);
        acc[1] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(pair, high)), _mm256_set1_ps(xr[k + 1]), acc[1]);
      }
      store_rows(out + b * ldo + r, _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), add), count);
    }
  }
}

// Int8 panels (quant_matrix.h), 8 of a panel's 16 rows at a time: every 32 bytes are 4 k of the
// 8 rows against 4 bytes of x broadcast. maddubs wants one unsigned operand: |x| times w with x's
// sign moved onto w (both within +-127, so a pair sums to at most 2 * 127 * 127: no saturation).
CF_AVX2 void int8_avx2(const std::int8_t* w, const float* scales, std::int64_t kpad,
                       const Activations& x, std::int64_t r0, std::int64_t r1, const float* bias, float* out,
                       std::int64_t ldo) {
  const __m256i ones = _mm256_set1_epi16(1);
  for (std::int64_t r = r0; r < r1; r += 8) {
    const std::int8_t* wp = w + (r / kPanel) * kPanel * kpad + (r % kPanel) * 4;
    const std::int64_t count = std::min<std::int64_t>(8, r1 - r);
    for (std::int64_t b = 0; b < x.rows; ++b) {
      const std::int8_t* xr = x.q.data() + b * x.kpad;
      __m256i acc[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
      for (std::int64_t q = 0; q < kpad / 4; ++q) {
        std::int32_t four;
        std::memcpy(&four, xr + 4 * q, 4);
        const __m256i xb = _mm256_set1_epi32(four);
        const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + q * 64));
        acc[q & 1] = _mm256_add_epi32(acc[q & 1], _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(xb, xb),
                                                                                    _mm256_sign_epi8(wv, xb)), ones));
      }
      const __m256 dot = _mm256_cvtepi32_ps(_mm256_add_epi32(acc[0], acc[1]));
      const __m256 y = _mm256_mul_ps(dot, _mm256_mul_ps(_mm256_loadu_ps(scales + r), _mm256_set1_ps(x.scale[b])));
      store_rows(out + b * ldo + r, _mm256_add_ps(y, bias_rows(bias, r, count)), count);
    }
  }
}

// Int4 panels, 8 rows at a time: per group, the nibbles of 4 x 32 bytes (unsigned 0..15, so
// maddubs cannot saturate) against 4 + 4 bytes of x broadcast; less 8 times x's group sum,
// scaled by the rows' fp16 scales times x's group scale.
CF_AVX2 void int4_avx2(const std::uint8_t* w, const std::uint16_t* scales, std::int64_t kpad, const Activations& x,
                       std::int64_t r0, std::int64_t r1, const float* bias, float* out, std::int64_t ldo) {
  const std::int64_t groups = kpad / kGroup;
  const __m256i ones = _mm256_set1_epi16(1), low = _mm256_set1_epi8(15);
  for (std::int64_t r = r0; r < r1; r += 8) {
    const std::int64_t half = (r % kPanel) / 8, count = std::min<std::int64_t>(8, r1 - r);
    const std::uint8_t* wp = w + (r / kPanel) * groups * 256 + half * 32;
    const std::uint16_t* sp = scales + (r / kPanel) * groups * kPanel + half * 8;
    for (std::int64_t b = 0; b < x.rows; ++b) {
      __m256 acc = _mm256_setzero_ps();
      for (std::int64_t g = 0; g < groups; ++g) {
        __m256i dot = _mm256_setzero_si256();
        const std::int8_t* xq = x.q.data() + b * x.kpad + g * kGroup;
        for (int v = 0; v < 4; ++v) {
          const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + g * 256 + v * 64));
          const __m256i lo = _mm256_and_si256(bytes, low), hi = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low);
          std::int32_t x0, x1;
          std::memcpy(&x0, xq + 8 * v, 4);
          std::memcpy(&x1, xq + 8 * v + 4, 4);
          dot = _mm256_add_epi32(dot, _mm256_madd_epi16(_mm256_maddubs_epi16(lo, _mm256_set1_epi32(x0)), ones));
          dot = _mm256_add_epi32(dot, _mm256_madd_epi16(_mm256_maddubs_epi16(hi, _mm256_set1_epi32(x1)), ones));
        }
        const std::size_t xg = static_cast<std::size_t>(b * groups + g);
        dot = _mm256_sub_epi32(dot, _mm256_set1_epi32(8 * x.sum[xg]));
        const __m256 s = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sp + g * kPanel)));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(s, _mm256_set1_ps(x.scale[xg])), acc);
      }
      store_rows(out + b * ldo + r, _mm256_add_ps(acc, bias_rows(bias, r, count)), count);
    }
  }
}

}  // namespace

const KernelSet& avx2_kernels() {
  static const KernelSet set{f32_avx2, bf16_avx2, int8_avx2, int4_avx2, quantize_scalar};
  return set;
}

}  // namespace cellfuse::cpu::quant
