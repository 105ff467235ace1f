// The AVX-512 kernels of quant_matrix.h (F, BW, VL, VNNI: Intel Cascade Lake and later, AMD Zen 4).
// Functions carry target attributes instead of the file carrying -mavx512*, so that no inline
// function this file instantiates can leak those instructions into code a plainer CPU runs.
//
// Every format's weights are in panels of 16 rows (quant_matrix.h): a kernel keeps one output
// per lane, multiplies each weight vector by x broadcast for up to 4 streams (S) at a time, and
// never sums across lanes; each panel is read once for all streams while it is in L1. Each
// output's accumulators sum its k in the same order whatever S, so the result does not depend on
// the streams or the thread count.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "runtime/cpu/quant/quant_matrix.h"

#define CF_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")))

namespace cellfuse::cpu::quant {
namespace {

struct Ctx {
  const std::uint8_t* w;  // the matrix's bytes
  const float* scales;        // int8
  const std::uint16_t* halves;  // int4: fp16 group scales
  const std::int32_t* row_sum;
  std::int64_t kpad;
  const Activations* x;
  const float* bias;
  float* out;
  std::int64_t ldo;
};

CF_AVX512 inline __mmask16 rows_mask(std::int64_t r, std::int64_t r1) {
  const std::int64_t valid = std::min<std::int64_t>(16, r1 - r);
  return valid == 16 ? __mmask16(0xffff) : __mmask16((1u << valid) - 1);
}

// Rows [r, r + 16) (a panel; the store is masked to r1) for streams [b, b + S) of fp32 weights
// in panels: each 64 bytes are the 16 rows at one k, times x[k] broadcast. Four accumulators per
// stream (k mod 4) hide the multiply-add's latency, added in a fixed order at the end.
template <int S>
CF_AVX512 void f32_panel(const Ctx& c, std::int64_t r, std::int64_t r1, std::int64_t b) {
  const float* w = reinterpret_cast<const float*>(c.w) + r * c.kpad;
  const float* x = c.x->f.data() + b * c.kpad;
  __m512 acc[S][4];
  for (int j = 0; j < S; ++j)
    for (int a = 0; a < 4; ++a) acc[j][a] = _mm512_setzero_ps();
  for (std::int64_t k = 0; k < c.kpad; k += 4)
    for (int a = 0; a < 4; ++a) {
      const __m512 wv = _mm512_loadu_ps(w + (k + a) * kPanel);
      for (int j = 0; j < S; ++j) acc[j][a] = _mm512_fmadd_ps(wv, _mm512_set1_ps(x[j * c.kpad + k + a]), acc[j][a]);
    }
  const __mmask16 m = rows_mask(r, r1);
  const __m512 bias = c.bias ? _mm512_maskz_loadu_ps(m, c.bias + r) : _mm512_setzero_ps();
  for (int j = 0; j < S; ++j) {
    const __m512 sum = _mm512_add_ps(_mm512_add_ps(acc[j][0], acc[j][1]), _mm512_add_ps(acc[j][2], acc[j][3]));
    _mm512_mask_storeu_ps(c.out + (b + j) * c.ldo + r, m, _mm512_add_ps(sum, bias));
  }
}

// The same for bf16 panels: each 64 bytes hold the 16 rows at k and k + 1 as one 32-bit lane
// per row (k in the low half): shifted, the lane is the f32 of k; masked, that of k + 1.
template <int S>
CF_AVX512 void bf16_panel(const Ctx& c, std::int64_t r, std::int64_t r1, std::int64_t b) {
  const std::uint16_t* w = reinterpret_cast<const std::uint16_t*>(c.w) + r * c.kpad;
  const float* x = c.x->f.data() + b * c.kpad;
  const __m512i high = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
  __m512 acc[S][4];
  for (int j = 0; j < S; ++j)
    for (int a = 0; a < 4; ++a) acc[j][a] = _mm512_setzero_ps();
  for (std::int64_t k = 0; k < c.kpad; k += 4)
    for (int a = 0; a < 2; ++a) {
      const __m512i pair = _mm512_loadu_si512(w + (k + 2 * a) * kPanel);
      const __m512 even = _mm512_castsi512_ps(_mm512_slli_epi32(pair, 16));
      const __m512 odd = _mm512_castsi512_ps(_mm512_and_si512(pair, high));
      for (int j = 0; j < S; ++j) {
        const float* xk = x + j * c.kpad + k + 2 * a;
        acc[j][2 * a] = _mm512_fmadd_ps(even, _mm512_set1_ps(xk[0]), acc[j][2 * a]);
        acc[j][2 * a + 1] = _mm512_fmadd_ps(odd, _mm512_set1_ps(xk[1]), acc[j][2 * a + 1]);
      }
    }
  const __mmask16 m = rows_mask(r, r1);
  const __m512 bias = c.bias ? _mm512_maskz_loadu_ps(m, c.bias + r) : _mm512_setzero_ps();
  for (int j = 0; j < S; ++j) {
    const __m512 sum = _mm512_add_ps(_mm512_add_ps(acc[j][0], acc[j][1]), _mm512_add_ps(acc[j][2], acc[j][3]));
    _mm512_mask_storeu_ps(c.out + (b + j) * c.ldo + r, m, _mm512_add_ps(sum, bias));
  }
}

// Rows [r, r + 16) (a panel; the store is masked to r1) for streams [b, b + S) of int8 weights in
// panels: every 64 bytes are 4 k of the 16 rows, times 4 bytes of x + 128 broadcast (VNNI
// multiplies unsigned by signed bytes), less 128 times each row's sum at the end. Four
// accumulators per stream hide the multiply-add's latency; integer sums are exact in any order.
template <int S>
CF_AVX512 void int8_panel(const Ctx& c, std::int64_t r, std::int64_t r1, std::int64_t b) {
  const std::int8_t* w = reinterpret_cast<const std::int8_t*>(c.w) + r * c.kpad;
  const std::uint8_t* x = c.x->u.data() + b * c.kpad;
  __m512i acc[S][4];
  for (int j = 0; j < S; ++j)
    for (int a = 0; a < 4; ++a) acc[j][a] = _mm512_setzero_si512();
  for (std::int64_t k = 0; k < c.kpad; k += 16) {
    for (int a = 0; a < 4; ++a) {
      const __m512i wv = _mm512_loadu_si512(w + (k + 4 * a) * 16);
      for (int j = 0; j < S; ++j) {
        std::int32_t four;
        std::memcpy(&four, x + j * c.kpad + k + 4 * a, 4);
        acc[j][a] = _mm512_dpbusd_epi32(acc[j][a], _mm512_set1_epi32(four), wv);
      }
    }
  }
  const __mmask16 m = rows_mask(r, r1);
  const __m512i offset = _mm512_slli_epi32(_mm512_loadu_si512(c.row_sum + r), 7);
  const __m512 scales = _mm512_loadu_ps(c.scales + r);
  const __m512 bias = c.bias ? _mm512_maskz_loadu_ps(m, c.bias + r) : _mm512_setzero_ps();
  for (int j = 0; j < S; ++j) {
    const __m512i sum = _mm512_add_epi32(_mm512_add_epi32(acc[j][0], acc[j][1]), _mm512_add_epi32(acc[j][2], acc[j][3]));
    const __m512 dot = _mm512_cvtepi32_ps(_mm512_sub_epi32(sum, offset));
    const __m512 y = _mm512_fmadd_ps(dot, _mm512_mul_ps(scales, _mm512_set1_ps(c.x->scale[b + j])), bias);
    _mm512_mask_storeu_ps(c.out + (b + j) * c.ldo + r, m, y);
  }
}

// The same for int4 panels: per group of 32, 4 vectors of 64 bytes whose low and high nibbles
// are levels 0..15 of 4 k each; their integer dot with x less 8 times x's group sum (the levels'
// -8) is scaled by the 16 rows' fp16 group scales times x's group scale.
template <int S>
CF_AVX512 void int4_panel(const Ctx& c, std::int64_t r, std::int64_t r1, std::int64_t b) {
  const std::int64_t groups = c.kpad / kGroup;
  const std::uint8_t* w = c.w + (r / kPanel) * groups * 256;
  const std::uint16_t* ws = c.halves + (r / kPanel) * groups * kPanel;
  const Activations& a = *c.x;
  const __m512i low = _mm512_set1_epi8(15);
  constexpr int D = S == 1 ? 4 : 2;  // independent integer accumulators per stream
  __m512 acc[S];
  for (int j = 0; j < S; ++j) acc[j] = _mm512_setzero_ps();
  for (std::int64_t g = 0; g < groups; ++g) {
    __m512i dot[S][D];
    for (int j = 0; j < S; ++j)
      for (int d = 0; d < D; ++d) dot[j][d] = _mm512_setzero_si512();
    const std::uint8_t* wg = w + g * 256;
    for (int v = 0; v < 4; ++v) {
      const __m512i bytes = _mm512_loadu_si512(wg + 64 * v);
      const __m512i lo = _mm512_and_si512(bytes, low), hi = _mm512_and_si512(_mm512_srli_epi16(bytes, 4), low);
      for (int j = 0; j < S; ++j) {
        const std::int8_t* xq = a.q.data() + (b + j) * c.kpad + g * kGroup + 8 * v;
        std::int32_t x0, x1;
        std::memcpy(&x0, xq, 4);
        std::memcpy(&x1, xq + 4, 4);
        dot[j][v % D] = _mm512_dpbusd_epi32(dot[j][v % D], lo, _mm512_set1_epi32(x0));
        dot[j][(v + 1) % D] = _mm512_dpbusd_epi32(dot[j][(v + 1) % D], hi, _mm512_set1_epi32(x1));
      }
    }
    const __m512 scale = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(ws + g * kPanel)));
    for (int j = 0; j < S; ++j) {
      const std::int64_t xg = (b + j) * groups + g;
      __m512i sum = dot[j][0];
      for (int d = 1; d < D; ++d) sum = _mm512_add_epi32(sum, dot[j][d]);
      sum = _mm512_sub_epi32(sum, _mm512_set1_epi32(8 * a.sum[static_cast<std::size_t>(xg)]));
      acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(scale, _mm512_set1_ps(a.scale[static_cast<std::size_t>(xg)])),
                               acc[j]);
    }
  }
  const __mmask16 m = rows_mask(r, r1);
  const __m512 bias = c.bias ? _mm512_maskz_loadu_ps(m, c.bias + r) : _mm512_setzero_ps();
  for (int j = 0; j < S; ++j) _mm512_mask_storeu_ps(c.out + (b + j) * c.ldo + r, m, _mm512_add_ps(acc[j], bias));
}

// Panels of rows, each for every stream (4 at a time) while its weights are in L1.
template <void (*P1)(const Ctx&, std::int64_t, std::int64_t, std::int64_t),
          void (*P2)(const Ctx&, std::int64_t, std::int64_t, std::int64_t),
          void (*P3)(const Ctx&, std::int64_t, std::int64_t, std::int64_t),
          void (*P4)(const Ctx&, std::int64_t, std::int64_t, std::int64_t)>
CF_AVX512 void drive_panels(const Ctx& c, std::int64_t r0, std::int64_t r1) {
  for (std::int64_t r = r0; r < r1; r += kPanel)
    for (std::int64_t b = 0; b < c.x->rows; b += 4) switch (std::min<std::int64_t>(4, c.x->rows - b)) {
        case 1: P1(c, r, r1, b); break;
        case 2: P2(c, r, r1, b); break;
        case 3: P3(c, r, r1, b); break;
        default: P4(c, r, r1, b); break;
      }
}

CF_AVX512 void f32_avx512(const float* w, std::int64_t kpad, const Activations& x, std::int64_t r0, std::int64_t r1,
                          const float* bias, float* out, std::int64_t ldo) {
  drive_panels<f32_panel<1>, f32_panel<2>, f32_panel<3>, f32_panel<4>>(
      {reinterpret_cast<const std::uint8_t*>(w), nullptr, nullptr, nullptr, kpad, &x, bias, out, ldo}, r0, r1);
}

CF_AVX512 void bf16_avx512(const std::uint16_t* w, std::int64_t kpad, const Activations& x, std::int64_t r0,
                           std::int64_t r1, const float* bias, float* out, std::int64_t ldo) {
  drive_panels<bf16_panel<1>, bf16_panel<2>, bf16_panel<3>, bf16_panel<4>>(
      {reinterpret_cast<const std::uint8_t*>(w), nullptr, nullptr, nullptr, kpad, &x, bias, out, ldo}, r0, r1);
}

CF_AVX512 void int8_avx512(const std::int8_t* w, const float* scales, const std::int32_t* row_sum, std::int64_t kpad,
                           const Activations& x, std::int64_t r0, std::int64_t r1, const float* bias, float* out,
                           std::int64_t ldo) {
  drive_panels<int8_panel<1>, int8_panel<2>, int8_panel<3>, int8_panel<4>>(
      {reinterpret_cast<const std::uint8_t*>(w), scales, nullptr, row_sum, kpad, &x, bias, out, ldo}, r0, r1);
}

CF_AVX512 void int4_avx512(const std::uint8_t* w, const std::uint16_t* scales, std::int64_t kpad, const Activations& x,
                           std::int64_t r0, std::int64_t r1, const float* bias, float* out, std::int64_t ldo) {
  drive_panels<int4_panel<1>, int4_panel<2>, int4_panel<3>, int4_panel<4>>(
      {w, nullptr, scales, nullptr, kpad, &x, bias, out, ldo}, r0, r1);
}

// quantize_scalar's levels, 16 at a time: the same multiply, rounding (nearest even) and clamp.
CF_AVX512 float quantize_avx512(const float* x, std::int64_t valid, std::int64_t span, std::int8_t* q,
                                std::int32_t* total) {
  auto lanes = [&](std::int64_t i) {
    const std::int64_t n = std::clamp<std::int64_t>(valid - i, 0, 16);
    return n == 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1);
  };
  __m512 m = _mm512_setzero_ps();
  for (std::int64_t i = 0; i < span; i += 16) m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_maskz_loadu_ps(lanes(i), x + i)));
  const float amax = _mm512_reduce_max_ps(m);
  const float s = amax / 127.0f, inv = amax > 0 ? 127.0f / amax : 0.0f;
  const __m512 vinv = _mm512_set1_ps(inv), lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
  __m512i sum = _mm512_setzero_si512();
  for (std::int64_t i = 0; i < span; i += 16) {
    const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(lanes(i), x + i), vinv);
    const __m512 r = _mm512_min_ps(_mm512_max_ps(_mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), lo), hi);
    const __m512i qi = _mm512_cvtps_epi32(r);
    sum = _mm512_add_epi32(sum, qi);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), _mm512_cvtsepi32_epi8(qi));
  }
  *total = _mm512_reduce_add_epi32(sum);
  return s;
}

}  // namespace

const KernelSet& avx512_kernels() {
  static const KernelSet set{f32_avx512, bf16_avx512, int8_avx512, int4_avx512, quantize_avx512};
  return set;
}

}  // namespace cellfuse::cpu::quant
