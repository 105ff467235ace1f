// The AVX2 + FMA kernels of quant_matrix.h, for CPUs without AVX-512 VNNI. Same structure as
// kernels_avx512.cpp: one weight row at a time, up to four rows of x per pass, fixed summation order.
#include <immintrin.h>

#include <algorithm>

#include "runtime/cpu/quant/quant_matrix.h"

#define CF_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace cellfuse::cpu::quant {
namespace {

constexpr int kStreams = 4;

CF_AVX2 inline float hsum(__m256 v) {
  const __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 h2 = _mm_add_ps(h, _mm_movehl_ps(h, h));
  return _mm_cvtss_f32(_mm_add_ss(h2, _mm_shuffle_ps(h2, h2, 1)));
}

CF_AVX2 inline std::int32_t hsum(__m256i v) {
  const __m128i h = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  const __m128i h2 = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
  return _mm_cvtsi128_si32(_mm_add_epi32(h2, _mm_shuffle_epi32(h2, 0xb1)));
}

CF_AVX2 inline __m256 widen_bf16(const std::uint16_t* p) {
  const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

CF_AVX2 inline __m256i unpack_int4(const std::uint8_t* p) {
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i mask = _mm_set1_epi8(15);
  const __m128i lo = _mm_and_si128(bytes, mask), hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
  return _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
}

// Sum of unsigned a[i] * signed b[i] in 8 lanes of int32; the pairwise 16-bit sums must not
// saturate (|a| and |b| both <= 127, or a <= 15).
CF_AVX2 inline __m256i dot_bytes(__m256i a_unsigned, __m256i b_signed) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(a_unsigned, b_signed), _mm256_set1_epi16(1));
}

template <class Widen>
CF_AVX2 void float_rows(Widen widen, std::int64_t kpad, const Activations& x, std::int64_t r0, std::int64_t r1,
                        const float* bias, float* out, std::int64_t ldo) {
  for (std::int64_t r = r0; r < r1; ++r) {
    const float add = bias ? bias[r] : 0.0f;
    for (std::int64_t b = 0; b < x.rows; b += kStreams) {
      const int s = static_cast<int>(std::min<std::int64_t>(kStreams, x.rows - b));
      __m256 acc[kStreams][2];
      for (int j = 0; j < kStreams; ++j) acc[j][0] = acc[j][1] = _mm256_setzero_ps();
      const float* xr = x.f.data() + b * kpad;
      for (std::int64_t i = 0; i < kpad; i += 16) {
        const __m256 w0 = widen(r, i), w1 = widen(r, i + 8);
        for (int j = 0; j < s; ++j) {
          acc[j][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xr + j * kpad + i), acc[j][0]);
          acc[j][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xr + j * kpad + i + 8), acc[j][1]);
        }
      }
      for (int j = 0; j < s; ++j) out[(b + j) * ldo + r] = hsum(_mm256_add_ps(acc[j][0], acc[j][1])) + add;
    }
  }
}

CF_AVX2 void f32_avx2(const float* w, std::int64_t kpad, const Activations& x, std::int64_t r0, std::int64_t r1,
                      const float* bias, float* out, std::int64_t ldo) {
  float_rows([&](std::int64_t r, std::int64_t i) CF_AVX2 { return _mm256_loadu_ps(w + r * kpad + i); }, kpad, x, r0,
             r1, bias, out, ldo);
}

CF_AVX2 void bf16_avx2(const std::uint16_t* w, std::int64_t kpad, const Activations& x, std::int64_t r0,
                       std::int64_t r1, const float* bias, float* out, std::int64_t ldo) {
  float_rows([&](std::int64_t r, std::int64_t i) CF_AVX2 { return widen_bf16(w + r * kpad + i); }, kpad, x, r0, r1,
             bias, out, ldo);
}

// maddubs wants one unsigned operand: |x| times w with x's sign moved onto w (both within
// +-127, so a pair sums to at most 2 * 127 * 127 and never saturates 16 bits).
CF_AVX2 void int8_avx2(const std::int8_t* w, const float* scales, const std::int32_t*, std::int64_t kpad,
                       const Activations& x, std::int64_t r0, std::int64_t r1, const float* bias, float* out,
                       std::int64_t ldo) {
  for (std::int64_t r = r0; r < r1; ++r) {
    const std::int8_t* wr = w + r * kpad;
    const float add = bias ? bias[r] : 0.0f;
    for (std::int64_t b = 0; b < x.rows; b += kStreams) {
      const int s = static_cast<int>(std::min<std::int64_t>(kStreams, x.rows - b));
      __m256i acc[kStreams];
      for (int j = 0; j < kStreams; ++j) acc[j] = _mm256_setzero_si256();
      const std::int8_t* xr = x.q.data() + b * kpad;
      for (std::int64_t i = 0; i < kpad; i += 32) {
        const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wr + i));
        for (int j = 0; j < s; ++j) {
          const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xr + j * kpad + i));
          acc[j] = _mm256_add_epi32(acc[j], dot_bytes(_mm256_sign_epi8(xv, xv), _mm256_sign_epi8(wv, xv)));
        }
      }
      for (int j = 0; j < s; ++j)
        out[(b + j) * ldo + r] = static_cast<float>(hsum(acc[j])) * (scales[r] * x.scale[b + j]) + add;
    }
  }
}

CF_AVX2 void int4_avx2(const std::uint8_t* w, const std::uint16_t* scales, std::int64_t kpad, const Activations& x,
                       std::int64_t r0, std::int64_t r1, const float* bias, float* out, std::int64_t ldo) {
  const std::int64_t groups = kpad / kGroup;
  for (std::int64_t r = r0; r < r1; ++r) {
    const std::uint8_t* wr = w + r * groups * 16;
    const std::uint16_t* ws = scales + r * groups;
    const float add = bias ? bias[r] : 0.0f;
    for (std::int64_t b = 0; b < x.rows; b += kStreams) {
      const int s = static_cast<int>(std::min<std::int64_t>(kStreams, x.rows - b));
      __m256 acc[kStreams];
      float offset[kStreams] = {};
      for (int j = 0; j < kStreams; ++j) acc[j] = _mm256_setzero_ps();
      for (std::int64_t g = 0; g < groups; ++g) {
        const __m256i wv = unpack_int4(wr + g * 16);
        for (int j = 0; j < s; ++j) {
          const std::int64_t xg = (b + j) * groups + g;
          const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q.data() + xg * kGroup));
          const float d = _cvtsh_ss(ws[g]) * x.scale[static_cast<std::size_t>(xg)];
          acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_bytes(wv, xv)), _mm256_set1_ps(d), acc[j]);
          offset[j] += d * static_cast<float>(8 * x.sum[static_cast<std::size_t>(xg)]);
        }
      }
      for (int j = 0; j < s; ++j) out[(b + j) * ldo + r] = hsum(acc[j]) - offset[j] + add;
    }
  }
}

}  // namespace

const KernelSet& avx2_kernels() {
  static const KernelSet set{f32_avx2, bf16_avx2, int8_avx2, int4_avx2};
  return set;
}

}  // namespace cellfuse::cpu::quant
