#include "runtime/generate/sampler.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "compiler/ir/error.h"
#include "runtime/generate/exp_weights.h"

namespace cellfuse::generate {
namespace {

std::uint64_t mix(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

void check_sample_options(const SampleOptions& o) {
  if (!std::isfinite(o.temperature) || o.temperature < 0)
    throw Error("generator: temperature must be finite and >= 0 (0 is greedy), got " + std::to_string(o.temperature));
  if (o.top_k < 0) throw Error("generator: top_k must be >= 0 (0 keeps every token), got " + std::to_string(o.top_k));
  if (!(o.top_p > 0 && o.top_p <= 1))
    throw Error("generator: top_p must be in (0, 1] (1 keeps every token), got " + std::to_string(o.top_p));
}

std::uint64_t stream_seed(std::uint64_t seed, std::int64_t stream) {
  return mix(seed + 0x9e3779b97f4a7c15ull * static_cast<std::uint64_t>(stream + 1));
}

double Sampler::uniform() {
  state_ += 0x9e3779b97f4a7c15ull;
  return static_cast<double>(mix(state_) >> 11) * 0x1.0p-53;
}

std::int32_t Sampler::sample(const float* logits, std::int64_t vocab, const SampleOptions& o) {
  std::int64_t best = 0;
  for (std::int64_t i = 0; i < vocab; ++i) {
    if (!std::isfinite(logits[i]))
      throw Error("generator: the logit of token " + std::to_string(i) + " is " + std::to_string(logits[i]) +
                  " (the model produced a non-finite value)");
    if (logits[i] > logits[best]) best = i;
  }
  if (o.temperature == 0) return static_cast<std::int32_t>(best);
  const double top = logits[best];
  if ((o.top_k == 0 || o.top_k >= vocab) && o.top_p >= 1) {
    // Every token kept, in id order: what the general path below computes with `order_` the
    // identity, without building it (the same weights, sums and draw; a step of a small model
    // takes a few microseconds, this part a good share of them).
    weight_.resize(static_cast<std::size_t>(vocab));
    tempered_weights(logits, vocab, top, o.temperature, weight_.data());
    double total = 0;
    for (double w : weight_) total += w;
    const double u = uniform() * total;
    double acc = 0;
    for (std::int64_t i = 0; i < vocab; ++i) {
      acc += weight_[static_cast<std::size_t>(i)];
      if (u < acc) return static_cast<std::int32_t>(i);
    }
    return static_cast<std::int32_t>(vocab - 1);  // u within rounding of the total
  }
  // More likely first, lower id first among equals: a total order, so the result is unique.
  auto before = [&](std::int32_t a, std::int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  order_.resize(static_cast<std::size_t>(vocab));
  for (std::int64_t i = 0; i < vocab; ++i) order_[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(i);
  std::size_t keep = order_.size();
  if (o.top_k > 0 && o.top_k < vocab) {
    keep = static_cast<std::size_t>(o.top_k);
    std::nth_element(order_.begin(), order_.begin() + static_cast<std::ptrdiff_t>(keep) - 1, order_.end(), before);
    order_.resize(keep);
  }
  if (o.top_p < 1) std::sort(order_.begin(), order_.end(), before);
  weight_.resize(keep);
  double total = 0;
  for (std::size_t j = 0; j < keep; ++j) {
    weight_[j] = exp_nonpositive((logits[order_[j]] - top) / o.temperature);
    total += weight_[j];
  }
  if (o.top_p < 1) {
    // The smallest prefix (most likely first) whose probability reaches top_p.
    double mass = 0;
    std::size_t j = 0;
    while (j < keep) {
      mass += weight_[j++];
      if (mass >= o.top_p * total) break;
    }
    keep = j;
    total = mass;
  }
  const double u = uniform() * total;
  double acc = 0;
  for (std::size_t j = 0; j < keep; ++j) {
    acc += weight_[j];
    if (u < acc) return order_[j];
  }
  return order_[keep - 1];  // u within rounding of the total
}

}  // namespace cellfuse::generate
