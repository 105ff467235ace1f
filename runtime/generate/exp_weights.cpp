#include "runtime/generate/exp_weights.h"

#include <immintrin.h>

#include <cmath>

#include "runtime/cpu/quant/quant_matrix.h"

// No fused multiply-adds in either form (GCC fuses a * b + c, intrinsics included, wherever the
// target has FMA): both must round every product and sum alike.
#if defined(__clang__)
#define CF_NO_CONTRACT
#define CF_NO_CONTRACT_BODY _Pragma("clang fp contract(off)")
#else
#define CF_NO_CONTRACT __attribute__((optimize("fp-contract=off")))
#define CF_NO_CONTRACT_BODY
#endif

namespace cellfuse::generate {
namespace {

// x = n ln2 + r, |r| <= ln2 / 2: ln2 in two parts, the first with its low bits zero so that
// n * kLn2Hi is exact for every n this range needs.
constexpr double kInvLn2 = 1.4426950408889634074, kLn2Hi = 6.93147180369123816490e-01,
                 kLn2Lo = 1.90821492927058770002e-10;
constexpr double kBelowZero = -746.0;  // exp is 0 in double below about -745.13
// exp(r) = sum r^k / k!, k <= 11 (the next term is under 7e-15 of the sum at |r| <= ln2 / 2).
constexpr double kTaylor[12] = {1.0,
                                1.0,
                                1.0 / 2,
                                1.0 / 6,
                                1.0 / 24,
                                1.0 / 120,
                                1.0 / 720,
                                1.0 / 5040,
                                1.0 / 40320,
                                1.0 / 362880,
                                1.0 / 3628800,
                                1.0 / 39916800};

CF_NO_CONTRACT __attribute__((target("avx512f,avx512vl"))) void tempered_avx512(const float* logits, std::int64_t n,
                                                                        double top, double temperature, double* out) {
  CF_NO_CONTRACT_BODY
  const __m512d vtop = _mm512_set1_pd(top), vt = _mm512_set1_pd(temperature), vmin = _mm512_set1_pd(kBelowZero);
  const __m512d inv = _mm512_set1_pd(kInvLn2), hi = _mm512_set1_pd(kLn2Hi), lo = _mm512_set1_pd(kLn2Lo);
  // The masked (maskz) forms throughout: the plain ones pass an undefined vector through, which
  // GCC 12 reports as maybe uninitialized.
  for (std::int64_t i = 0; i < n; i += 8) {
    const __mmask8 lanes = n - i >= 8 ? __mmask8(0xff) : __mmask8((1u << (n - i)) - 1), all = 0xff;
    __m512d x = _mm512_div_pd(_mm512_sub_pd(_mm512_maskz_cvtps_pd(all, _mm256_maskz_loadu_ps(lanes, logits + i)), vtop), vt);
    const __mmask8 keep = _mm512_cmp_pd_mask(x, vmin, _CMP_GE_OQ);
    x = _mm512_maskz_max_pd(all, x, vmin);
    const __m512d k =
        _mm512_maskz_roundscale_pd(all, _mm512_mul_pd(x, inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512d r = _mm512_sub_pd(_mm512_sub_pd(x, _mm512_mul_pd(k, hi)), _mm512_mul_pd(k, lo));
    __m512d p = _mm512_set1_pd(kTaylor[11]);
    for (int j = 10; j >= 0; --j) p = _mm512_add_pd(_mm512_mul_pd(p, r), _mm512_set1_pd(kTaylor[j]));
    _mm512_mask_storeu_pd(out + i, lanes, _mm512_maskz_scalef_pd(keep, p, k));
  }
}

}  // namespace

CF_NO_CONTRACT double exp_nonpositive(double x) {
  CF_NO_CONTRACT_BODY
  if (!(x >= kBelowZero)) return 0.0;
  const double k = std::nearbyint(x * kInvLn2);
  const double r = (x - k * kLn2Hi) - k * kLn2Lo;
  double p = kTaylor[11];
  for (int j = 10; j >= 0; --j) p = p * r + kTaylor[j];
  return std::ldexp(p, static_cast<int>(k));
}

void tempered_weights(const float* logits, std::int64_t n, double top, double temperature, double* out) {
  if (cpu::quant::active_isa() == cpu::quant::Isa::Avx512) return tempered_avx512(logits, n, top, temperature, out);
  for (std::int64_t i = 0; i < n; ++i) out[i] = exp_nonpositive((static_cast<double>(logits[i]) - top) / temperature);
}

}  // namespace cellfuse::generate
