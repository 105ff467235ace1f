#pragma once
// The sampler's weights exp((logit - top) / T) for every token (top the largest logit, so every
// argument is <= 0): most of a small model's sampling time went to 100 calls of libm's exp. Here
// one exp of our own (range reduction by ln 2, a degree-11 polynomial, relative error under
// 1e-14, exactly 0 below -746) runs 8 tokens at a time with AVX-512 where the host has it. The
// vector and the scalar forms do the same IEEE operations in the same order (no fused
// multiply-adds), so they give the same bits: the tokens do not depend on the kernels in use.
#include <cstdint>

namespace cellfuse::generate {

// exp(x) for x <= 0 (any x <= 0, -inf included).
double exp_nonpositive(double x);

// out[i] = exp_nonpositive((double(logits[i]) - top) / temperature) for i < n.
void tempered_weights(const float* logits, std::int64_t n, double top, double temperature, double* out);

}  // namespace cellfuse::generate
