// The AVX-512 kernels of quant_matrix.h (F, BW, VL, VNNI: Intel Cascade Lake and later, AMD Zen 4).
// Functions carry target attributes instead of the file carrying -mavx512*, so that no inline
// function this file instantiates can leak those instructions into code a plainer CPU runs.
//
// Every format's weights are in panels of 16 rows (quant_matrix.h): a kernel keeps one output
// per lane, multiplies each weight vector by x broadcast for several streams (S) at a time, and
// never sums across lanes; each panel is read once for up to 8 streams, front to back, while it
// is in L1. Each output's accumulators sum its k in the same order whatever S (and whatever
// panels run alongside it), so the result does not depend on the streams or the thread count.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "runtime/cpu/quant/quant_matrix.h"

#define CF_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")))

namespace cellfuse::cpu::quant {
namespace {

struct Ctx {
  const std::uint8_t* w;        // the matrix's bytes
  const float* scales;          // int8
  const std::uint16_t* halves;  // int4: fp16 group scales
  std::int64_t kpad;  // k per row of the weights' panels
  const Activations* x;
  const float* bias;
  float* out;
  std::int64_t ldo;
  std::int64_t xk() const { return x->kpad; }  // x's row stride (>= kpad)
};

#define CF_INLINE CF_AVX512 inline __attribute__((always_inline))

CF_AVX512 inline __mmask16 rows_mask(std::int64_t r, std::int64_t r1) {
  const std::int64_t valid = std::min<std::int64_t>(16, r1 - r);
  return valid == 16 ? __mmask16(0xffff) : __mmask16((1u << valid) - 1);
}

// acc += unsigned bytes u times the 4 signed bytes at p broadcast to every lane, 4 products a
// lane (VNNI), the broadcast part of the load. In assembly: GCC 12 copies every accumulator of
// _mm512_dpbusd_epi32 through another register each iteration (and spills some), which halved
// the throughput of the many-stream kernels.
struct FourBytes {
  std::int8_t b[4];
};
CF_INLINE __m512i dot_u8_bcast_s8(__m512i acc, __m512i u, const std::int8_t* p) {
  asm("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(u), "m"(*reinterpret_cast<const FourBytes*>(p)));
  return acc;
}

// --- fp32 and bf16. Each output lane sums its k in 4 accumulators (k mod 4), added as
// (a0 + a1) + (a2 + a3) at the end: that order is the same for every count of streams and
// panels below, so a stream's result never depends on the others.

// Many-stream kernels ask for the weights `ahead` k further on while they multiply (0: none): at
// a few multiply-adds per 64 bytes the hardware prefetchers alone left the memory idle much of
// the time (8 streams of a 16 MiB product ran at a third of the bandwidth of one). A prefetch
// past the matrix's end is harmless (it never faults).
CF_INLINE void prefetch(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0); }

// P panels (P * 16 rows, `stride` floats apart) times S streams over k in [k0, k1): each 64 bytes
// are the 16 rows of a panel at one k, times x[k] broadcast.
template <int P, int S>
CF_INLINE void f32_span(const float* w, std::int64_t stride, const float* x, std::int64_t xk, std::int64_t k0,
                        std::int64_t k1, std::int64_t ahead, __m512 (&acc)[P][S][4]) {
  for (std::int64_t k = k0; k < k1; k += 4)
    for (int a = 0; a < 4; ++a)
      for (int p = 0; p < P; ++p) {
        if (ahead) prefetch(w + p * stride + (k + a + ahead) * kPanel);
        const __m512 wv = _mm512_loadu_ps(w + p * stride + (k + a) * kPanel);
        for (int j = 0; j < S; ++j) acc[p][j][a] = _mm512_fmadd_ps(wv, _mm512_set1_ps(x[j * xk + k + a]), acc[p][j][a]);
      }
}

// The same for bf16 panels: each 64 bytes hold the 16 rows at k and k + 1 as one 32-bit lane
// per row (k in the low half): shifted, the lane is the f32 of k; masked, that of k + 1.
template <int P, int S>
CF_INLINE void bf16_span(const std::uint16_t* w, std::int64_t stride, const float* x, std::int64_t xk, std::int64_t k0,
                         std::int64_t k1, std::int64_t ahead, __m512 (&acc)[P][S][4]) {
  const __m512i high = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
  for (std::int64_t k = k0; k < k1; k += 4)
    for (int a = 0; a < 2; ++a)
      for (int p = 0; p < P; ++p) {
        if (ahead) prefetch(w + p * stride + (k + 2 * a + ahead) * kPanel);
        const __m512i pair = _mm512_loadu_si512(w + p * stride + (k + 2 * a) * kPanel);
        const __m512 even = _mm512_castsi512_ps(_mm512_slli_epi32(pair, 16));
        const __m512 odd = _mm512_castsi512_ps(_mm512_and_si512(pair, high));
        for (int j = 0; j < S; ++j) {
          const float* xj = x + j * xk + k + 2 * a;
          acc[p][j][2 * a] = _mm512_fmadd_ps(even, _mm512_set1_ps(xj[0]), acc[p][j][2 * a]);
          acc[p][j][2 * a + 1] = _mm512_fmadd_ps(odd, _mm512_set1_ps(xj[1]), acc[p][j][2 * a + 1]);
        }
      }
}

template <int P, int S>
CF_INLINE void zero(__m512 (&acc)[P][S][4]) {
  for (int p = 0; p < P; ++p)
    for (int j = 0; j < S; ++j)
      for (int a = 0; a < 4; ++a) acc[p][j][a] = _mm512_setzero_ps();
}

// Rows [r, r + 16) (the store masked to r1) of streams [b, b + S) from their accumulators.
template <int S>
CF_INLINE void store_sums(const Ctx& c, std::int64_t r, std::int64_t r1, std::int64_t b, const __m512 (&acc)[S][4]) {
  const __mmask16 m = rows_mask(r, r1);
  const __m512 bias = c.bias ? _mm512_maskz_loadu_ps(m, c.bias + r) : _mm512_setzero_ps();
  for (int j = 0; j < S; ++j) {
    const __m512 sum = _mm512_add_ps(_mm512_add_ps(acc[j][0], acc[j][1]), _mm512_add_ps(acc[j][2], acc[j][3]));
    _mm512_mask_storeu_ps(c.out + (b + j) * c.ldo + r, m, _mm512_add_ps(sum, bias));
  }
}

// Bytes of one panel the many-stream kernels take per block: read from memory by the first 4
// streams, from L1 by the rest.
constexpr std::int64_t kBlockBytes = 16 * 1024;

// One float format's kernels: Span is f32_span or bf16_span, T its weight type.
template <class T, template <int, int> class Span>
struct FloatKernels {
  static constexpr std::int64_t kBlock = kBlockBytes / (kPanel * static_cast<std::int64_t>(sizeof(T)));  // k
  static const T* panel(const Ctx& c, std::int64_t r) { return reinterpret_cast<const T*>(c.w) + r * c.kpad; }
  static const float* xs(const Ctx& c, std::int64_t b) { return c.x->f.data() + b * c.xk(); }

  // One panel, streams [b, b + S), S <= 4: 4 * S accumulators in registers.
  template <int S>
  CF_AVX512 static void narrow(const Ctx& c, std::int64_t r, std::int64_t r1, std::int64_t b) {
    __m512 acc[1][S][4];
    zero(acc);
    Span<1, S>::run(panel(c, r), 0, xs(c, b), c.xk(), 0, c.kpad, S > 1 ? kBlock : 0, acc);
    store_sums<S>(c, r, r1, b, acc[0]);
  }

  // One stream, two panels at once: 8 independent sums keep the multiply-adds' pipeline full
  // (with 4 a single stream waits on their latency).
  CF_AVX512 static void pair(const Ctx& c, std::int64_t r, std::int64_t r1, std::int64_t b) {
    __m512 acc[2][1][4];
    zero(acc);
    Span<2, 1>::run(panel(c, r), kPanel * c.kpad, xs(c, b), c.xk(), 0, c.kpad, 0, acc);
    store_sums<1>(c, r, r1, b, acc[0]);
    store_sums<1>(c, r + kPanel, r1, b, acc[1]);
  }

  // One panel, streams [b, b + 4 + S): k in blocks that stay in L1, each read by streams
  // [b, b + 4) and then [b + 4, b + 4 + S), whose accumulators wait in memory between blocks.
  // The panel is read once, front to back, however many streams.
  template <int S>
  CF_AVX512 static void wide(const Ctx& c, std::int64_t r, std::int64_t r1, std::int64_t b) {
    __m512 first[1][4][4], second[1][S][4];
    zero(first);
    zero(second);
    const T* w = panel(c, r);
    for (std::int64_t k0 = 0; k0 < c.kpad; k0 += kBlock) {
      const std::int64_t k1 = std::min(c.kpad, k0 + kBlock);
      Span<1, 4>::run(w, 0, xs(c, b), c.xk(), k0, k1, kBlock, first);
      Span<1, S>::run(w, 0, xs(c, b + 4), c.xk(), k0, k1, 0, second);
    }
    store_sums<4>(c, r, r1, b, first[0]);
    store_sums<S>(c, r, r1, b + 4, second[0]);
  }

  CF_AVX512 static void drive(const Ctx& c, std::int64_t r0, std::int64_t r1) {
    const std::int64_t rows = c.x->rows;
    for (std::int64_t r = r0; r < r1; r += kPanel) {
      if (rows == 1 && r + kPanel < r1) {
        pair(c, r, r1, 0);
        r += kPanel;
        continue;
      }
      for (std::int64_t b = 0; b < rows; b += 8) switch (std::min<std::int64_t>(8, rows - b)) {
          case 1: narrow<1>(c, r, r1, b); break;
          case 2: narrow<2>(c, r, r1, b); break;
          case 3: narrow<3>(c, r, r1, b); break;
          case 4: narrow<4>(c, r, r1, b); break;
          case 5: wide<1>(c, r, r1, b); break;
          case 6: wide<2>(c, r, r1, b); break;
          case 7: wide<3>(c, r, r1, b); break;
          default: wide<4>(c, r, r1, b); break;
        }
    }
  }
};

template <int P, int S>
struct F32Span {
  CF_INLINE static void run(const float* w, std::int64_t stride, const float* x, std::int64_t xk, std::int64_t k0,
                            std::int64_t k1, std::int64_t ahead, __m512 (&acc)[P][S][4]) {
    f32_span<P, S>(w, stride, x, xk, k0, k1, ahead, acc);
  }
};
template <int P, int S>
struct Bf16Span {
  CF_INLINE static void run(const std::uint16_t* w, std::int64_t stride, const float* x, std::int64_t xk,
                            std::int64_t k0, std::int64_t k1, std::int64_t ahead, __m512 (&acc)[P][S][4]) {
    bf16_span<P, S>(w, stride, x, xk, k0, k1, ahead, acc);
  }
};

// --- int8 and int4: integer sums are exact in any order, so the accumulators per stream are
// whatever keeps the pipeline full (D independent sums per stream, S * D >= 4). With several
// streams they also prefetch 16 KiB ahead: at 8 streams a generation step's 24 MiB of int8 sat
// waiting on its weight loads (the hardware prefetchers alone did not keep up), not on VNNI.

// How far ahead the integer kernels ask for weights: into L1 kStreamsAhead bytes
// ahead (at 8 streams a 64-byte vector takes ~8 cycles, so ~1 us), and into L2 kStreamsAheadL2
// ahead, for weights coming from L3 or memory. Measured at int8 x 8 on Zen 4 (2 threads,
// interleaved in one process): 16 KiB into L1 alone was 15-20% slower than 4 KiB (prefetched
// lines and the streams' x competing for L1), 1 KiB and no prefetch slower still; the L2 hint
// took another ~10% off the median.
constexpr std::int64_t kStreamsAhead = 4096, kStreamsAheadL2 = 32768;
CF_INLINE void prefetch_streams(const void* p) {
  _mm_prefetch(static_cast<const char*>(p) + kStreamsAhead, _MM_HINT_T0);
  _mm_prefetch(static_cast<const char*>(p) + kStreamsAheadL2, _MM_HINT_T1);
}

// Rows [r, r + 16) (a panel; the store is masked to r1) for streams [b, b + S), S <= 8, of int8
// weights in panels: every 64 bytes are 4 k of the 16 rows. VNNI multiplies unsigned by signed
// bytes: the weights are made unsigned (w + 128: one xor per 64 bytes, for all S streams) and
// multiplied by x's signed levels broadcast from memory (part of the load: a broadcast from a
// register costs a shuffle per stream, on the port VNNI needs, which held 8 streams to half of
// VNNI's rate), less 128 times each stream's sum of levels at the end. One stream keeps 4
// independent sums, 2-3 streams 2 each; the prefetches help one stream too (~10%, measured).
template <int S>
CF_AVX512 void int8_panel(const Ctx& c, std::int64_t r, std::int64_t r1, std::int64_t b) {
  constexpr int D = S == 1 ? 4 : S < 4 ? 2 : 1;
  const std::int8_t* w = reinterpret_cast<const std::int8_t*>(c.w) + r * c.kpad;
  const std::int64_t xk = c.xk();
  const std::int8_t* x = c.x->q.data() + b * xk;
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  __m512i acc[S][D];
  for (int j = 0; j < S; ++j)
    for (int d = 0; d < D; ++d) acc[j][d] = _mm512_setzero_si512();
  for (std::int64_t k = 0; k < c.kpad; k += 16)
    for (int v = 0; v < 4; ++v) {
      prefetch_streams(w + (k + 4 * v) * 16);
      const __m512i wu = _mm512_xor_si512(_mm512_loadu_si512(w + (k + 4 * v) * 16), flip);
      for (int j = 0; j < S; ++j) acc[j][v % D] = dot_u8_bcast_s8(acc[j][v % D], wu, x + j * xk + k + 4 * v);
    }
  const __mmask16 m = rows_mask(r, r1);
  const __m512 scales = _mm512_loadu_ps(c.scales + r);
  const __m512 bias = c.bias ? _mm512_maskz_loadu_ps(m, c.bias + r) : _mm512_setzero_ps();
  for (int j = 0; j < S; ++j) {
    __m512i sum = acc[j][0];
    for (int d = 1; d < D; ++d) sum = _mm512_add_epi32(sum, acc[j][d]);
    const __m512i offset = _mm512_set1_epi32(128 * c.x->sum[static_cast<std::size_t>(b + j)]);
    const __m512 dot = _mm512_cvtepi32_ps(_mm512_sub_epi32(sum, offset));
    const __m512 y = _mm512_fmadd_ps(dot, _mm512_mul_ps(scales, _mm512_set1_ps(c.x->scale[b + j])), bias);
    _mm512_mask_storeu_ps(c.out + (b + j) * c.ldo + r, m, y);
  }
}

// The same for int4 panels: per group of 32, 4 vectors of 64 bytes whose low and high nibbles
// are levels 0..15 of 4 k each; their integer dot with x less 8 times x's group sum (the levels'
// -8) is scaled by the 16 rows' fp16 group scales times x's group scale, and added to the
// stream's float sum group by group (the same order for any S).
template <int S>
CF_AVX512 void int4_panel(const Ctx& c, std::int64_t r, std::int64_t r1, std::int64_t b) {
  const std::int64_t groups = c.kpad / kGroup, xk = c.xk(), xgroups = xk / kGroup;
  const std::uint8_t* w = c.w + (r / kPanel) * groups * 256;
  const std::uint16_t* ws = c.halves + (r / kPanel) * groups * kPanel;
  const Activations& a = *c.x;
  const __m512i low = _mm512_set1_epi8(15);
  constexpr int D = S == 1 ? 4 : S < 4 ? 2 : 1;
  __m512 acc[S];
  for (int j = 0; j < S; ++j) acc[j] = _mm512_setzero_ps();
  for (std::int64_t g = 0; g < groups; ++g) {
    __m512i dot[S][D];
    for (int j = 0; j < S; ++j)
      for (int d = 0; d < D; ++d) dot[j][d] = _mm512_setzero_si512();
    const std::uint8_t* wg = w + g * 256;
    for (int v = 0; v < 4; ++v) {
      if constexpr (S > 1) prefetch_streams(wg + 64 * v);
      const __m512i bytes = _mm512_loadu_si512(wg + 64 * v);
      const __m512i lo = _mm512_and_si512(bytes, low), hi = _mm512_and_si512(_mm512_srli_epi16(bytes, 4), low);
      for (int j = 0; j < S; ++j) {
        const std::int8_t* xq = a.q.data() + (b + j) * xk + g * kGroup + 8 * v;
        dot[j][(2 * v) % D] = dot_u8_bcast_s8(dot[j][(2 * v) % D], lo, xq);
        dot[j][(2 * v + 1) % D] = dot_u8_bcast_s8(dot[j][(2 * v + 1) % D], hi, xq + 4);
      }
    }
    const __m512 scale = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(ws + g * kPanel)));
    for (int j = 0; j < S; ++j) {
      const std::int64_t xg = (b + j) * xgroups + g;
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

// Panels of rows, each for every stream (8 at a time, one read of the panel) while its weights
// are in L1.
template <template <int> class Panel>
CF_AVX512 void drive_integer(const Ctx& c, std::int64_t r0, std::int64_t r1) {
  for (std::int64_t r = r0; r < r1; r += kPanel)
    for (std::int64_t b = 0; b < c.x->rows; b += 8) switch (std::min<std::int64_t>(8, c.x->rows - b)) {
        case 1: Panel<1>::run(c, r, r1, b); break;
        case 2: Panel<2>::run(c, r, r1, b); break;
        case 3: Panel<3>::run(c, r, r1, b); break;
        case 4: Panel<4>::run(c, r, r1, b); break;
        case 5: Panel<5>::run(c, r, r1, b); break;
        case 6: Panel<6>::run(c, r, r1, b); break;
        case 7: Panel<7>::run(c, r, r1, b); break;
        default: Panel<8>::run(c, r, r1, b); break;
      }
}

template <int S>
struct Int8Panel {
  CF_AVX512 static void run(const Ctx& c, std::int64_t r, std::int64_t r1, std::int64_t b) {
    int8_panel<S>(c, r, r1, b);
  }
};
template <int S>
struct Int4Panel {
  CF_AVX512 static void run(const Ctx& c, std::int64_t r, std::int64_t r1, std::int64_t b) { int4_panel<S>(c, r, r1, b); }
};

CF_AVX512 void f32_avx512(const float* w, std::int64_t kpad, const Activations& x, std::int64_t r0, std::int64_t r1,
                          const float* bias, float* out, std::int64_t ldo) {
  FloatKernels<float, F32Span>::drive(
      {reinterpret_cast<const std::uint8_t*>(w), nullptr, nullptr, kpad, &x, bias, out, ldo}, r0, r1);
}

CF_AVX512 void bf16_avx512(const std::uint16_t* w, std::int64_t kpad, const Activations& x, std::int64_t r0,
                           std::int64_t r1, const float* bias, float* out, std::int64_t ldo) {
  FloatKernels<std::uint16_t, Bf16Span>::drive(
      {reinterpret_cast<const std::uint8_t*>(w), nullptr, nullptr, kpad, &x, bias, out, ldo}, r0, r1);
}

CF_AVX512 void int8_avx512(const std::int8_t* w, const float* scales, std::int64_t kpad,
                           const Activations& x, std::int64_t r0, std::int64_t r1, const float* bias, float* out,
                           std::int64_t ldo) {
  drive_integer<Int8Panel>({reinterpret_cast<const std::uint8_t*>(w), scales, nullptr, kpad, &x, bias, out, ldo},
                           r0, r1);
}

CF_AVX512 void int4_avx512(const std::uint8_t* w, const std::uint16_t* scales, std::int64_t kpad, const Activations& x,
                           std::int64_t r0, std::int64_t r1, const float* bias, float* out, std::int64_t ldo) {
  drive_integer<Int4Panel>({w, nullptr, scales, kpad, &x, bias, out, ldo}, r0, r1);
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
