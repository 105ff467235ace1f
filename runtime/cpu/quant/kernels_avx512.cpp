// The AVX-512 kernels of quant_matrix.h (F, BW, VL, VNNI: Intel Cascade Lake and later, AMD Zen 4).
// Functions carry target attributes instead of the file carrying -mavx512*, so that no inline
// function this file instantiates can leak those instructions into code a plainer CPU runs.
//
// A kernel works on tiles of R weight rows by S streams (rows of x): every weight vector loaded
// feeds S accumulators and every x vector R of them, and the R x S independent chains hide the
// latency of the multiply-adds (one chain per output stalled on it at batch 1). Each output's own
// accumulator sums its k in the same order whatever the tile, so the result does not depend on
// R, S, the streams or the thread count.
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

CF_AVX512 inline __m512 widen_bf16(const std::uint16_t* p) {
  const __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

// Two groups of 32 int4 levels (32 bytes: per group, element i in the low nibble of byte i and
// i + 16 in the high one) as 64 unsigned bytes 0..15 in element order.
CF_AVX512 inline __m512i unpack_int4_pair(const std::uint8_t* p) {
  const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m256i mask = _mm256_set1_epi8(15);
  const __m256i lo = _mm256_and_si256(bytes, mask), hi = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), mask);
  // [lo g0 | hi g0 | lo g1 | hi g1]
  const __m512i lo512 = _mm512_castsi256_si512(lo);
  const __m512i both = _mm512_inserti64x4(lo512, hi, 1);  // [lo g0, lo g1, hi g0, hi g1]
  return _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 1, 4, 5, 2, 3, 6, 7), both);
}

template <int R, int S>
struct F32Tile {
  CF_AVX512 static void run(const Ctx& c, std::int64_t r, std::int64_t b) {
    const float* w = reinterpret_cast<const float*>(c.w) + r * c.kpad;
    const float* x = c.x->f.data() + b * c.kpad;
    __m512 acc[R][S];
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < S; ++j) acc[i][j] = _mm512_setzero_ps();
    for (std::int64_t k = 0; k < c.kpad; k += 16) {
      __m512 xv[S];
      for (int j = 0; j < S; ++j) xv[j] = _mm512_loadu_ps(x + j * c.kpad + k);
      for (int i = 0; i < R; ++i) {
        const __m512 wv = _mm512_loadu_ps(w + i * c.kpad + k);
        for (int j = 0; j < S; ++j) acc[i][j] = _mm512_fmadd_ps(wv, xv[j], acc[i][j]);
      }
    }
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < S; ++j)
        c.out[(b + j) * c.ldo + r + i] = _mm512_reduce_add_ps(acc[i][j]) + (c.bias ? c.bias[r + i] : 0.0f);
  }
};

template <int R, int S>
struct Bf16Tile {
  CF_AVX512 static void run(const Ctx& c, std::int64_t r, std::int64_t b) {
    const std::uint16_t* w = reinterpret_cast<const std::uint16_t*>(c.w) + r * c.kpad;
    const float* x = c.x->f.data() + b * c.kpad;
    __m512 acc[R][S];
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < S; ++j) acc[i][j] = _mm512_setzero_ps();
    for (std::int64_t k = 0; k < c.kpad; k += 16) {
      __m512 xv[S];
      for (int j = 0; j < S; ++j) xv[j] = _mm512_loadu_ps(x + j * c.kpad + k);
      for (int i = 0; i < R; ++i) {
        const __m512 wv = widen_bf16(w + i * c.kpad + k);
        for (int j = 0; j < S; ++j) acc[i][j] = _mm512_fmadd_ps(wv, xv[j], acc[i][j]);
      }
    }
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < S; ++j)
        c.out[(b + j) * c.ldo + r + i] = _mm512_reduce_add_ps(acc[i][j]) + (c.bias ? c.bias[r + i] : 0.0f);
  }
};

// VNNI multiplies unsigned by signed bytes: x + 128 (unsigned) times w, less 128 times w's row sum.
// Integer sums are exact, so a last half vector (kpad an odd multiple of 32) is a masked load.
template <int R, int S>
struct Int8Tile {
  CF_AVX512 static void run(const Ctx& c, std::int64_t r, std::int64_t b) {
    const std::int8_t* w = reinterpret_cast<const std::int8_t*>(c.w) + r * c.kpad;
    const std::uint8_t* x = c.x->u.data() + b * c.kpad;
    __m512i acc[R][S];
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < S; ++j) acc[i][j] = _mm512_setzero_si512();
    const std::int64_t whole = c.kpad / 64 * 64;
    for (std::int64_t k = 0; k < whole; k += 64) {
      __m512i xv[S];
      for (int j = 0; j < S; ++j) xv[j] = _mm512_loadu_si512(x + j * c.kpad + k);
      for (int i = 0; i < R; ++i) {
        const __m512i wv = _mm512_loadu_si512(w + i * c.kpad + k);
        for (int j = 0; j < S; ++j) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], xv[j], wv);
      }
    }
    if (whole < c.kpad) {
      const __mmask64 m = 0xffffffffu;
      __m512i xv[S];
      for (int j = 0; j < S; ++j) xv[j] = _mm512_maskz_loadu_epi8(m, x + j * c.kpad + whole);
      for (int i = 0; i < R; ++i) {
        const __m512i wv = _mm512_maskz_loadu_epi8(m, w + i * c.kpad + whole);
        for (int j = 0; j < S; ++j) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], xv[j], wv);
      }
    }
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < S; ++j) {
        const std::int32_t dot = _mm512_reduce_add_epi32(acc[i][j]) - 128 * c.row_sum[r + i];
        c.out[(b + j) * c.ldo + r + i] = static_cast<float>(dot) * (c.scales[r + i] * c.x->scale[b + j]) +
                                         (c.bias ? c.bias[r + i] : 0.0f);
      }
  }
};

// Two groups per vector: VNNI sums each group's 32 products into 8 lanes (lanes 0-7 the first
// group, 8-15 the second), then one multiply-add by the groups' scales (w's times x's, as a vector
// of two halves). The -8 of the levels is taken out once at the end: the sum over groups of
// w's scale times x's precomputed 8 * scale * (sum of levels) (Activations::offset).
template <int R, int S>
struct Int4Tile {
  CF_AVX512 static void run(const Ctx& c, std::int64_t r, std::int64_t b) {
    const std::int64_t groups = c.kpad / kGroup, pairs = groups / 2;
    const std::uint8_t* w = c.w + r * groups * 16;
    const std::uint16_t* ws = c.halves + r * groups;
    const Activations& a = *c.x;
    __m512 acc[R][S];
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < S; ++j) acc[i][j] = _mm512_setzero_ps();
    const __m512i halves = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    for (std::int64_t p = 0; p < pairs; ++p) {
      __m512i xv[S];
      __m512 xs[S];
      for (int j = 0; j < S; ++j) {
        const std::int64_t xg = (b + j) * groups + 2 * p;
        xv[j] = _mm512_loadu_si512(a.q.data() + xg * kGroup);
        xs[j] = _mm512_permutexvar_ps(halves, _mm512_castps128_ps512(_mm_castsi128_ps(
                                                  _mm_loadl_epi64(reinterpret_cast<const __m128i*>(a.scale.data() + xg)))));
      }
      for (int i = 0; i < R; ++i) {
        const __m512i wv = unpack_int4_pair(w + i * groups * 16 + p * 32);
        std::int32_t pair;  // the two groups' fp16 scales
        std::memcpy(&pair, ws + i * groups + 2 * p, 4);
        const __m512 wsv = _mm512_permutexvar_ps(halves, _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi32_si128(pair))));
        for (int j = 0; j < S; ++j) {
          const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv, xv[j]);
          acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(wsv, xs[j]), acc[i][j]);
        }
      }
    }
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < S; ++j) {
        float sum = _mm512_reduce_add_ps(acc[i][j]);
        if (groups % 2) {  // the last, unpaired group
          const std::int64_t g = groups - 1, xg = (b + j) * groups + g;
          const std::uint8_t* wg = w + i * groups * 16 + g * 16;
          const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wg));
          const __m128i mask = _mm_set1_epi8(15);
          const __m256i wv = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_and_si128(bytes, mask)),
                                                     _mm_and_si128(_mm_srli_epi16(bytes, 4), mask), 1);
          const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q.data() + xg * kGroup));
          const __m256i d = _mm256_dpbusd_epi32(_mm256_setzero_si256(), wv, xv);
          sum += static_cast<float>(_mm512_reduce_add_epi32(_mm512_zextsi256_si512(d))) *
                 (_cvtsh_ss(ws[i * groups + g]) * a.scale[xg]);
        }
        // The sum over groups of w's scale times x's 8 * scale * level sum, 16 groups at a time.
        const float* xo = a.offset.data() + (b + j) * groups;
        __m512 off = _mm512_setzero_ps();
        for (std::int64_t g = 0; g < groups; g += 16) {
          const __mmask16 m = groups - g >= 16 ? __mmask16(0xffff) : __mmask16((1u << (groups - g)) - 1);
          const __m512 wsv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, ws + i * groups + g));
          off = _mm512_fmadd_ps(wsv, _mm512_maskz_loadu_ps(m, xo + g), off);
        }
        const float offset = _mm512_reduce_add_ps(off);
        c.out[(b + j) * c.ldo + r + i] = sum - offset + (c.bias ? c.bias[r + i] : 0.0f);
      }
  }
};

// Rows [r0, r1) for streams [b, b + S): tiles of 8 rows at one stream (bandwidth-bound: more
// loads in flight), of 4 rows with more streams, then the last rows 2 and 1 at a time.
template <template <int, int> class Tile, int S>
CF_AVX512 void rows(const Ctx& c, std::int64_t r0, std::int64_t r1, std::int64_t b) {
  constexpr int Wide = S == 1 ? 8 : 4;
  std::int64_t r = r0;
  for (; r + Wide <= r1; r += Wide) Tile<Wide, S>::run(c, r, b);
  if constexpr (Wide == 8)
    if (r + 4 <= r1) Tile<4, S>::run(c, r, b), r += 4;
  if (r + 2 <= r1) Tile<2, S>::run(c, r, b), r += 2;
  if (r < r1) Tile<1, S>::run(c, r, b);
}

template <template <int, int> class Tile>
CF_AVX512 void drive(const Ctx& c, std::int64_t r0, std::int64_t r1) {
  for (std::int64_t b = 0; b < c.x->rows; b += 4) switch (std::min<std::int64_t>(4, c.x->rows - b)) {
      case 1: rows<Tile, 1>(c, r0, r1, b); break;
      case 2: rows<Tile, 2>(c, r0, r1, b); break;
      case 3: rows<Tile, 3>(c, r0, r1, b); break;
      default: rows<Tile, 4>(c, r0, r1, b); break;
    }
}

CF_AVX512 void f32_avx512(const float* w, std::int64_t kpad, const Activations& x, std::int64_t r0, std::int64_t r1,
                          const float* bias, float* out, std::int64_t ldo) {
  drive<F32Tile>({reinterpret_cast<const std::uint8_t*>(w), nullptr, nullptr, nullptr, kpad, &x, bias, out, ldo}, r0, r1);
}

CF_AVX512 void bf16_avx512(const std::uint16_t* w, std::int64_t kpad, const Activations& x, std::int64_t r0,
                           std::int64_t r1, const float* bias, float* out, std::int64_t ldo) {
  drive<Bf16Tile>({reinterpret_cast<const std::uint8_t*>(w), nullptr, nullptr, nullptr, kpad, &x, bias, out, ldo}, r0,
                  r1);
}

CF_AVX512 void int8_avx512(const std::int8_t* w, const float* scales, const std::int32_t* row_sum, std::int64_t kpad,
                           const Activations& x, std::int64_t r0, std::int64_t r1, const float* bias, float* out,
                           std::int64_t ldo) {
  drive<Int8Tile>({reinterpret_cast<const std::uint8_t*>(w), scales, nullptr, row_sum, kpad, &x, bias, out, ldo}, r0,
                  r1);
}

CF_AVX512 void int4_avx512(const std::uint8_t* w, const std::uint16_t* scales, std::int64_t kpad, const Activations& x,
                           std::int64_t r0, std::int64_t r1, const float* bias, float* out, std::int64_t ldo) {
  drive<Int4Tile>({w, nullptr, scales, nullptr, kpad, &x, bias, out, ldo}, r0, r1);
}

}  // namespace

const KernelSet& avx512_kernels() {
  static const KernelSet set{f32_avx512, bf16_avx512, int8_avx512, int4_avx512};
  return set;
}

}  // namespace cellfuse::cpu::quant
