#pragma once
// Picking the next token from a step's logits: temperature softmax, top-k, top-p (nucleus),
// multinomial from a seeded generator, or greedy (temperature 0). Everything runs on one thread
// in a fixed order, so the same seed gives the same tokens whatever the team size.
#include <cstdint>
#include <vector>

namespace cellfuse::generate {

struct SampleOptions {
  double temperature = 1.0;  // 0: greedy (the most likely token; the lowest id on ties)
  std::int64_t top_k = 0;    // keep the k most likely tokens (0: all)
  double top_p = 1.0;        // keep the most likely tokens whose probabilities reach p (1: all)
  std::uint64_t seed = 0;
};

// Error for a negative or non-finite temperature, top_k < 0, top_p outside (0, 1].
void check_sample_options(const SampleOptions& options);

class Sampler {
 public:
  explicit Sampler(std::uint64_t seed) : state_(seed) {}
  // A token id in [0, vocab). Error when a logit is not finite (naming the token and the value).
  std::int32_t sample(const float* logits, std::int64_t vocab, const SampleOptions& options);
  // Uniform in [0, 1), 53 bits (SplitMix64).
  double uniform();

 private:
  std::uint64_t state_;
  std::vector<std::int32_t> order_;
  std::vector<double> weight_;
};

// The seed of stream b of a run seeded with `seed`: independent streams, reproducible.
std::uint64_t stream_seed(std::uint64_t seed, std::int64_t stream);

}  // namespace cellfuse::generate
