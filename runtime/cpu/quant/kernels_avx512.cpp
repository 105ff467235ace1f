// The AVX-512 kernels of quant_matrix.h (F, BW, VL, VNNI: Intel Cascade Lake and later, AMD Zen 4).
// Functions carry target attributes instead of the file carrying -mavx512*, so that no inline
// function this file instantiates can leak those instructions into code a plainer CPU runs.
//
// Every kernel walks its output rows one weight row at a time and multiplies that row, while it
// is in L1, by up to four rows of x at once (B streams read each weight once per step); each
// (row, stream) dot product is summed in a fixed order.
#include <immintrin.h>

#include <algorithm>

#include "runtime/cpu/quant/quant_matrix.h"

#define CF_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,fma")))

namespace cellfuse::cpu::quant {
namespace {

constexpr int kStreams = 4;  // rows of x per pass over a weight row

CF_AVX512 inline float hsum(__m512 v) { return _mm512_reduce_add_ps(v); }
CF_AVX512 inline std::int32_t hsum(__m512i v) { return _mm512_reduce_add_epi32(v); }

// 16 bf16 values widened to fp32: the bf16 bits are the upper half of the fp32.
CF_AVX512 inline __m512 widen_bf16(const std::uint16_t* p) {
  const __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

// A group of 32 int4 levels (16 bytes: element i in the low nibble of byte i, i + 16 in the high)
// as 32 unsigned bytes 0..15 in element order.
CF_AVX512 inline __m256i unpack_int4(const std::uint8_t* p) {
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i mask = _mm_set1_epi8(15);
  const __m128i lo = _mm_and_si128(bytes, mask), hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
  return _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
}

CF_AVX512 void f32_avx512(const float* w, std::int64_t kpad, const Activations& x, std::int64_t r0, std::int64_t r1,
                          const float* bias, float* out, std::int64_t ldo) {
  for (std::int64_t r = r0; r < r1; ++r) {
    const float* wr = w + r * kpad;
    const float add = bias ? bias[r] : 0.0f;
    for (std::int64_t b = 0; b < x.rows; b += kStreams) {
      const int s = static_cast<int>(std::min<std::int64_t>(kStreams, x.rows - b));
      __m512 acc[kStreams][2];
      for (int j = 0; j < kStreams; ++j) acc[j][0] = acc[j][1] = _mm512_setzero_ps();
      const float* xr = x.f.data() + b * kpad;
      for (std::int64_t i = 0; i < kpad; i += 32) {
        const __m512 w0 = _mm512_loadu_ps(wr + i), w1 = _mm512_loadu_ps(wr + i + 16);
        for (int j = 0; j < s; ++j) {
          acc[j][0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xr + j * kpad + i), acc[j][0]);
          acc[j][1] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xr + j * kpad + i + 16), acc[j][1]);
        }
      }
      for (int j = 0; j < s; ++j) out[(b + j) * ldo + r] = hsum(_mm512_add_ps(acc[j][0], acc[j][1])) + add;
    }
  }
}

CF_AVX512 void bf16_avx512(const std::uint16_t* w, std::int64_t kpad, const Activations& x, std::int64_t r0,
                           std::int64_t r1, const float* bias, float* out, std::int64_t ldo) {
  for (std::int64_t r = r0; r < r1; ++r) {
    const std::uint16_t* wr = w + r * kpad;
    const float add = bias ? bias[r] : 0.0f;
    for (std::int64_t b = 0; b < x.rows; b += kStreams) {
      const int s = static_cast<int>(std::min<std::int64_t>(kStreams, x.rows - b));
      __m512 acc[kStreams][2];
      for (int j = 0; j < kStreams; ++j) acc[j][0] = acc[j][1] = _mm512_setzero_ps();
      const float* xr = x.f.data() + b * kpad;
      for (std::int64_t i = 0; i < kpad; i += 32) {
        const __m512 w0 = widen_bf16(wr + i), w1 = widen_bf16(wr + i + 16);
        for (int j = 0; j < s; ++j) {
          acc[j][0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xr + j * kpad + i), acc[j][0]);
          acc[j][1] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xr + j * kpad + i + 16), acc[j][1]);
        }
      }
      for (int j = 0; j < s; ++j) out[(b + j) * ldo + r] = hsum(_mm512_add_ps(acc[j][0], acc[j][1])) + add;
    }
  }
}

// VNNI multiplies unsigned by signed bytes: x + 128 (unsigned) times w, less 128 times w's row sum.
CF_AVX512 void int8_avx512(const std::int8_t* w, const float* scales, const std::int32_t* row_sum, std::int64_t kpad,
                           const Activations& x, std::int64_t r0, std::int64_t r1, const float* bias, float* out,
                           std::int64_t ldo) {
  const std::int64_t whole = kpad / 64 * 64;
  for (std::int64_t r = r0; r < r1; ++r) {
    const std::int8_t* wr = w + r * kpad;
    const float add = bias ? bias[r] : 0.0f;
    for (std::int64_t b = 0; b < x.rows; b += kStreams) {
      const int s = static_cast<int>(std::min<std::int64_t>(kStreams, x.rows - b));
      __m512i acc[kStreams];
      for (int j = 0; j < kStreams; ++j) acc[j] = _mm512_setzero_si512();
      const std::uint8_t* xr = x.u.data() + b * kpad;
      for (std::int64_t i = 0; i < whole; i += 64) {
        const __m512i wv = _mm512_loadu_si512(wr + i);
        for (int j = 0; j < s; ++j) acc[j] = _mm512_dpbusd_epi32(acc[j], _mm512_loadu_si512(xr + j * kpad + i), wv);
      }
      for (int j = 0; j < s; ++j) {
        std::int32_t dot = hsum(acc[j]);
        if (whole < kpad) {  // the last 32
          const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wr + whole));
          const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xr + j * kpad + whole));
          const __m256i t = _mm256_dpbusd_epi32(_mm256_setzero_si256(), xv, wv);
          dot += _mm512_reduce_add_epi32(_mm512_zextsi256_si512(t));
        }
        out[(b + j) * ldo + r] = static_cast<float>(dot - 128 * row_sum[r]) * (scales[r] * x.scale[b + j]) + add;
      }
    }
  }
}

CF_AVX512 void int4_avx512(const std::uint8_t* w, const float* scales, std::int64_t kpad, const Activations& x,
                           std::int64_t r0, std::int64_t r1, const float* bias, float* out, std::int64_t ldo) {
  const std::int64_t groups = kpad / kGroup;
  for (std::int64_t r = r0; r < r1; ++r) {
    const std::uint8_t* wr = w + r * groups * 16;
    const float* ws = scales + r * groups;
    const float add = bias ? bias[r] : 0.0f;
    for (std::int64_t b = 0; b < x.rows; b += kStreams) {
      const int s = static_cast<int>(std::min<std::int64_t>(kStreams, x.rows - b));
      __m256 acc[kStreams];
      float offset[kStreams] = {};  // sum over groups of scale * 8 * (sum of x's levels)
      for (int j = 0; j < kStreams; ++j) acc[j] = _mm256_setzero_ps();
      for (std::int64_t g = 0; g < groups; ++g) {
        const __m256i wv = unpack_int4(wr + g * 16);
        for (int j = 0; j < s; ++j) {
          const std::int64_t xg = (b + j) * groups + g;
          const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q.data() + xg * kGroup));
          const __m256i dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), wv, xv);
          const float d = ws[g] * x.scale[static_cast<std::size_t>(xg)];
          acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(d), acc[j]);
          offset[j] += d * static_cast<float>(8 * x.sum[static_cast<std::size_t>(xg)]);
        }
      }
      for (int j = 0; j < s; ++j) {
        const __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc[j]), _mm256_extractf128_ps(acc[j], 1));
        const __m128 h2 = _mm_add_ps(h, _mm_movehl_ps(h, h));
        const float sum = _mm_cvtss_f32(_mm_add_ss(h2, _mm_shuffle_ps(h2, h2, 1)));
        out[(b + j) * ldo + r] = sum - offset[j] + add;
      }
    }
  }
}

}  // namespace

const KernelSet& avx512_kernels() {
  static const KernelSet set{f32_avx512, bf16_avx512, int8_avx512, int4_avx512};
  return set;
}

}  // namespace cellfuse::cpu::quant
