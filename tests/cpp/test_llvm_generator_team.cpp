// Generation on a team (runtime/generate: Generator::run_steps, QuantCell::step): runs of many
// steps in one Team::run, replicated pointwise kernels for few streams, kernels split by rows
// for many, runs that switch between the team and the caller alone. Every way gives the tokens
// the caller alone gives, and the teacher-forced (batched) path agrees with the steps.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <stdexcept>

#include "compiler/ir/error.h"
#include "frontend/cells.h"
#include "runtime/generate/generator.h"

namespace cellfuse::generate {
namespace {

using cpu::quant::Format;

// Embedding -> layers -> decoder with N(0, 1/fan_in) weights (layer-norm gains near 1).
GeneratorModel model_of(std::vector<Cell> layers, std::int64_t vocab, std::int64_t embed, unsigned seed) {
  std::mt19937 rng(seed);
  auto randoms = [&](std::size_t n, float scale) {
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
  };
  GeneratorModel m;
  m.vocab_size = vocab, m.embed_dim = embed;
  m.embedding = randoms(static_cast<std::size_t>(vocab * embed), 1.0f);
  for (auto& cell : layers) {
    std::vector<std::vector<float>> ps;
    for (ValueId p : cell.params) {
      const Shape& s = cell.graph.node(p).shape;
      const std::int64_t n = s.rank == 2 ? s.dims[0] * s.dims[1] : s.dims[0];
      ps.push_back(randoms(static_cast<std::size_t>(n), s.rank == 2 ? 1.0f / std::sqrt(float(s.dims[1])) : 0.3f));
      if (s.rank == 1 && std::string(cell.leaf_name(p)).find("weight") != std::string::npos)
        for (auto& v : ps.back()) v += 1.0f;
    }
    m.params.push_back(std::move(ps));
  }
  m.layers = std::move(layers);
  const std::int64_t hidden = m.layers.back().graph.node(m.layers.back().outputs[0].value).shape.features();
  m.decoder_weight = randoms(static_cast<std::size_t>(vocab * hidden), 3.0f / std::sqrt(float(hidden)));
  m.decoder_bias = randoms(static_cast<std::size_t>(vocab), 0.5f);
  return m;
}

// Over StepParts::kAlwaysShared bytes (a GRU of 1100: 16 MB of fp32), so that every step of
// more than one thread runs on the team, and small layers of other cells above it (a layer
// norm, peepholes, an Elman cell whose output is its state) so that each runs on the team too.
GeneratorModel big_stack() {
  return model_of({cells::gru(12, 1100), cells::lnlstm(1100, 40), cells::peephole(40, 31), cells::elman(31, 9)}, 37,
                  12, 5);
}

const std::vector<std::int32_t> kPrime = {3, 1, 4, 1, 5};

// 1 stream (replicated kernels on 2 members), 3 (still replicated: fewer than 2 per member),
// 5 (kernels split by rows): the same tokens on 1 and 2 threads, in every weight format.
TEST(GeneratorTeam, ReplicatedAndSplitStepsGiveTheCallersTokens) {
  const GeneratorModel m = big_stack();
  for (Format f : {Format::F32, Format::Int8}) {
    Generator one(m, f, 1), two(m, f, 2);
    // fp32 always on the team; int8 (a quarter of the bytes) probed: either way the same tokens.
    if (f == Format::F32) {
      ASSERT_GE(two.weight_bytes(), StepParts::kAlwaysShared);
    }
    for (std::int64_t streams : {1, 3, 5}) {
      const SampleOptions o{.temperature = 1.0, .seed = static_cast<std::uint64_t>(10 + streams)};
      auto a = one.generate(kPrime, 25, o, streams);
      auto b = two.generate(kPrime, 25, o, streams);
      EXPECT_EQ(a, b) << cpu::quant::format_name(f) << ", " << streams << " streams";
      EXPECT_NE(a[0], std::vector<std::int32_t>(25, a[0][0])) << "a constant sequence checks little";
    }
  }
}

// Each generated token is what sampling the teacher-forced logits of the prime and the tokens
// before it gives (the batched path, an independent run of the layers), with a twin sampler.
TEST(GeneratorTeam, TeamStepsFollowTheTeacherForcedLogits) {
  const GeneratorModel m = big_stack();
  Generator two(m, Format::F32, 2), ref(m, Format::F32, 1);
  const SampleOptions o{.temperature = 0.8, .seed = 99};
  const auto out = two.generate(kPrime, 12, o, 1)[0];
  Sampler twin(stream_seed(o.seed, 0));
  std::vector<std::int32_t> seq = kPrime;
  for (std::size_t t = 0; t < out.size(); ++t) {
    const auto logits = ref.logits(seq);
    const float* last = logits.data() + (seq.size() - 1) * static_cast<std::size_t>(m.vocab_size);
    ASSERT_EQ(twin.sample(last, m.vocab_size, o), out[t]) << "token " << t;
    seq.push_back(out[t]);
  }
}

// A model in between (probed): runs alternate between the team and the caller alone, each
// taking the states where the other left them; the tokens stay the caller's.
TEST(GeneratorTeam, RunsSwitchingBetweenTeamAndCallerKeepTheStates) {
  const GeneratorModel m = model_of({cells::gru(16, 200), cells::lstm(200, 24)}, 41, 16, 8);
  Generator one(m, Format::F32, 1), two(m, Format::F32, 2);
  ASSERT_GT(two.weight_bytes(), StepParts::kAlwaysAlone);
  ASSERT_LT(two.weight_bytes(), StepParts::kAlwaysShared);
  for (std::int64_t streams : {1, 2, 6}) {
    const SampleOptions o{.temperature = 1.0, .top_k = 30, .seed = 4};
    // Probes of a few steps each, then a stretch: many switches in 200 steps.
    EXPECT_EQ(one.generate(kPrime, 200, o, streams), two.generate(kPrime, 200, o, streams)) << streams << " streams";
  }
}

// With a callback (member 0 samples and calls it, the others wait for its verdict) a team run
// shows every step, the last one included, and gives the tokens it gives without one.
TEST(GeneratorTeam, ACallbackSeesEveryStepOfATeamRun) {
  const GeneratorModel m = big_stack();
  Generator two(m, Format::F32, 2);
  const SampleOptions o{.seed = 21};
  std::vector<std::int32_t> seen;
  const auto out = two.generate(kPrime, 30, o, 1, [&](std::int64_t step, const std::int32_t* ids) {
    EXPECT_EQ(step, static_cast<std::int64_t>(seen.size()));
    seen.push_back(ids[0]);
    return true;
  });
  EXPECT_EQ(seen, out[0]);
  EXPECT_EQ(out, two.generate(kPrime, 30, o, 1));
}

// An error inside a run of the team stops every member and reaches the caller; the generator
// then runs again as new. The callback's (member 0 samples, the others wait for its verdict),
// and a non-finite logit (every member samples, each meets it).
TEST(GeneratorTeam, AnErrorInATeamRunStopsItCleanly) {
  const GeneratorModel m = big_stack();
  Generator two(m, Format::F32, 2), fresh(m, Format::F32, 2);
  const SampleOptions o{.seed = 7};
  std::int64_t calls = 0;
  EXPECT_THROW(two.generate(kPrime, 50, o, 1,
                            [&](std::int64_t step, const std::int32_t*) {
                              ++calls;
                              if (step == 6) throw std::runtime_error("stop here");
                              return true;
                            }),
               std::runtime_error);
  EXPECT_EQ(calls, 7);
  EXPECT_EQ(two.generate(kPrime, 20, o, 3), fresh.generate(kPrime, 20, o, 3));

  GeneratorModel huge = big_stack();
  for (auto& w : huge.decoder_weight) w = std::clamp(w * 1e38f, -3e38f, 3e38f);  // logits overflow to +-inf
  for (auto& b : huge.decoder_bias) b = 3e38f;
  Generator bad(huge, Format::F32, 2);
  for (std::int64_t streams : {1, 5})
    EXPECT_THROW(bad.generate(kPrime, 30, o, streams), Error) << streams << " streams";
}

}  // namespace
}  // namespace cellfuse::generate
