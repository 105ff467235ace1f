// Native generation (runtime/generate): logits against the float64 reference interpreter for
// stock and custom cells, the prime path against the step path, streams, thread counts, the
// sampler's distribution, the file format and its errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <random>

#include "compiler/ir/error.h"
#include "frontend/cells.h"
#include "runtime/generate/exp_weights.h"
#include "runtime/generate/generator.h"
#include "tests/cpp/cell_conversion.h"

namespace cellfuse::generate {
namespace {

using cpu::quant::Format;
using testing_support::as_f64;

std::vector<float> randoms(std::size_t n, std::mt19937& rng, float scale) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

std::int64_t numel(const Cell& c, ValueId p) {
  const Shape& s = c.graph.node(p).shape;
  return s.rank == 2 ? s.dims[0] * s.dims[1] : s.dims[0];
}

// A char model: embedding -> layers -> decoder, weights ~ N(0, 1/fan_in) like a trained net's.
GeneratorModel make_model(std::vector<Cell> layers, std::int64_t vocab, std::int64_t embed, unsigned seed) {
  std::mt19937 rng(seed);
  GeneratorModel m;
  m.vocab_size = vocab, m.embed_dim = embed;
  m.embedding = randoms(static_cast<std::size_t>(vocab * embed), rng, 1.0f);
  for (auto& cell : layers) {
    std::vector<std::vector<float>> ps;
    for (ValueId p : cell.params) {
      const Shape& shape = cell.graph.node(p).shape;
      const float scale = shape.rank == 2 ? 1.0f / std::sqrt(float(shape.dims[1])) : 0.3f;
      ps.push_back(randoms(static_cast<std::size_t>(numel(cell, p)), rng, scale));
      if (shape.rank == 1 && std::string(cell.leaf_name(p)).find("weight") != std::string::npos)
        for (auto& v : ps.back()) v += 1.0f;  // layer-norm gains near 1
    }
    m.params.push_back(std::move(ps));
  }
  m.layers = std::move(layers);
  const std::int64_t hidden = m.layers.back().graph.node(m.layers.back().outputs[0].value).shape.features();
  m.decoder_weight = randoms(static_cast<std::size_t>(vocab * hidden), rng, 2.0f / std::sqrt(float(hidden)));
  m.decoder_bias = randoms(static_cast<std::size_t>(vocab), rng, 0.5f);
  for (std::int64_t i = 0; i < vocab; ++i) m.tokens.push_back(std::string(1, static_cast<char>(' ' + i % 90)) + (i >= 90 ? "#" : ""));
  return m;
}

// The float64 oracle: the interpreter runs each layer over the whole sequence.
std::vector<double> oracle_logits(const GeneratorModel& m, const std::vector<std::int32_t>& ids) {
  const std::int64_t T = static_cast<std::int64_t>(ids.size());
  HostTensor<double> x({T, 1, m.embed_dim});
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t i = 0; i < m.embed_dim; ++i) x.data[static_cast<std::size_t>(t * m.embed_dim + i)] = m.embedding[static_cast<std::size_t>(ids[t] * m.embed_dim + i)];
  for (std::size_t l = 0; l < m.layers.size(); ++l) {
    const Cell c = as_f64(m.layers[l]);
    SequenceArgs<double> args;
    args.inputs.push_back(x);
    for (ValueId s : c.states) args.states.emplace_back(std::vector<std::int64_t>{1, c.graph.node(s).shape.features()});
    for (std::size_t p = 0; p < c.params.size(); ++p) {
      const Shape& shape = c.graph.node(c.params[p]).shape;
      HostTensor<double> t(shape.rank == 2 ? std::vector<std::int64_t>{shape.dims[0], shape.dims[1]}
                                           : std::vector<std::int64_t>{shape.dims[0]});
      for (std::size_t i = 0; i < t.data.size(); ++i) t.data[i] = m.params[l][p][i];
      args.params.push_back(t);
    }
    x = interpret_sequence(c, args).outputs[0];
  }
  const std::int64_t H = x.shape[2], V = m.vocab_size;
  std::vector<double> out(static_cast<std::size_t>(T * V));
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t v = 0; v < V; ++v) {
      double s = m.decoder_bias[static_cast<std::size_t>(v)];
      for (std::int64_t h = 0; h < H; ++h) s += m.decoder_weight[static_cast<std::size_t>(v * H + h)] * x.data[static_cast<std::size_t>(t * H + h)];
      out[static_cast<std::size_t>(t * V + v)] = s;
    }
  return out;
}

std::vector<std::int32_t> random_ids(std::int64_t n, std::int64_t vocab, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(n));
  for (auto& i : ids) i = static_cast<std::int32_t>(rng() % static_cast<unsigned>(vocab));
  return ids;
}

// Mean KL(p || q) of the softmaxes of two [T, V] logit arrays.
template <class A, class B>
double mean_kl(const std::vector<A>& p_logits, const std::vector<B>& q_logits, std::int64_t V) {
  const std::size_t T = p_logits.size() / static_cast<std::size_t>(V);
  double total = 0;
  for (std::size_t t = 0; t < T; ++t) {
    auto logsoftmax = [&](auto& v) {
      std::vector<double> out(static_cast<std::size_t>(V));
      double mx = -1e300, s = 0;
      for (std::int64_t i = 0; i < V; ++i) mx = std::max(mx, double(v[t * V + i]));
      for (std::int64_t i = 0; i < V; ++i) s += std::exp(double(v[t * V + i]) - mx);
      for (std::int64_t i = 0; i < V; ++i) out[i] = double(v[t * V + i]) - mx - std::log(s);
      return out;
    };
    auto lp = logsoftmax(p_logits), lq = logsoftmax(q_logits);
    for (std::int64_t i = 0; i < V; ++i) total += std::exp(lp[i]) * (lp[i] - lq[i]);
  }
  return total / double(T);
}

struct Named {
  const char* name;
  std::vector<Cell> layers;
  std::int64_t embed;
};

std::vector<Named> models() {
  return {{"lstm2", {cells::lstm(24, 40), cells::lstm(40, 33)}, 24},
          {"gru", {cells::gru(17, 65)}, 17},
          {"lnlstm", {cells::lnlstm(16, 48)}, 16},
          {"peephole+elman", {cells::peephole(20, 31), cells::elman(31, 7)}, 20}};
}

TEST(Generator, Fp32LogitsMatchTheFloat64Interpreter) {
  for (auto& nm : models()) {
    SCOPED_TRACE(nm.name);
    const std::int64_t V = 67;
    GeneratorModel m = make_model(nm.layers, V, nm.embed, 5);
    Generator gen(m, Format::F32);
    auto ids = random_ids(41, V, 3);
    auto got = gen.logits(ids);
    auto want = oracle_logits(m, ids);
    double scale = 0;
    for (double v : want) scale = std::max(scale, std::fabs(v));
    for (std::size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-4 * scale) << "element " << i;
  }
}

TEST(Generator, QuantizedFormatsStayCloseToFp32) {
  const std::int64_t V = 83;
  GeneratorModel m = make_model({cells::lstm(32, 96), cells::lstm(96, 96)}, V, 32, 8);
  auto ids = random_ids(200, V, 4);
  Generator ref(m, Format::F32);
  auto base = ref.logits(ids);
  const std::map<Format, double> bound = {{Format::BF16, 1e-3}, {Format::Int8, 1e-2}, {Format::Int4, 5e-2}};
  for (auto [f, limit] : bound) {
    Generator gen(m, f);
    const double kl = mean_kl(base, gen.logits(ids), V);
    EXPECT_LT(kl, limit) << cpu::quant::format_name(f);
    EXPECT_GT(kl, 0.0) << cpu::quant::format_name(f) << ": identical to fp32, so not quantized";
  }
}

// The prime runs its hoisted products over all its steps at once, generation one step at a time;
// every dot product is summed in the same order either way, so greedy generation picks exactly
// the argmax of the teacher-forced logits of what it generated.
TEST(Generator, GreedyFollowsTeacherForcedLogits) {
  for (Format f : {Format::F32, Format::Int8, Format::Int4}) {
    const std::int64_t V = 50;
    GeneratorModel m = make_model({cells::gru(12, 40), cells::lnlstm(40, 24)}, V, 12, 21);
    Generator gen(m, f);
    auto prime = random_ids(9, V, 2);
    auto out = gen.generate(prime, 30, {.temperature = 0.0}, 1)[0];
    ASSERT_EQ(out.size(), 30u);
    std::vector<std::int32_t> all = prime;
    all.insert(all.end(), out.begin(), out.end() - 1);
    auto logits = gen.logits(all);
    for (std::size_t s = 0; s < out.size(); ++s) {
      const float* row = logits.data() + (prime.size() - 1 + s) * V;
      const auto argmax = std::max_element(row, row + V) - row;
      ASSERT_EQ(out[s], argmax) << cpu::quant::format_name(f) << " step " << s;
    }
  }
}

// Stream b of a batch is what a single stream seeded as stream b gives, bit for bit; the same seed
// gives the same tokens on one thread or two.
TEST(Generator, StreamsAndThreadCountsAgree) {
  const std::int64_t V = 40;
  GeneratorModel m = make_model({cells::lstm(16, 300)}, V, 16, 13);  // products big enough to share
  for (Format f : {Format::F32, Format::BF16, Format::Int8, Format::Int4}) {
    Generator one(m, f, 1), two(m, f, 2);
    SampleOptions o{.temperature = 0.9, .top_k = 20, .top_p = 0.95, .seed = 77};
    auto prime = random_ids(5, V, 1);
    auto batch = two.generate(prime, 60, o, 3);
    auto single = one.generate(prime, 60, o, 1);
    EXPECT_EQ(batch[0], single[0]) << cpu::quant::format_name(f);
    EXPECT_NE(batch[0], batch[1]);
    auto again = one.generate(prime, 60, o, 3);
    EXPECT_EQ(batch, again) << cpu::quant::format_name(f);
    o.seed = 78;
    EXPECT_NE(one.generate(prime, 60, o, 1)[0], single[0]);
  }
}

TEST(Generator, CallbackSeesEachStepAndCanStop) {
  GeneratorModel m = make_model({cells::gru(8, 16)}, 30, 8, 2);
  Generator gen(m, Format::Int8);
  std::vector<std::int32_t> seen;
  auto out = gen.generate({1, 2}, 100, {.seed = 3}, 2, [&](std::int64_t step, const std::int32_t* ids) {
    EXPECT_EQ(step, static_cast<std::int64_t>(seen.size()));
    seen.push_back(ids[1]);
    return step < 9;
  });
  EXPECT_EQ(out[0].size(), 10u);
  EXPECT_EQ(out[1], seen);
}

TEST(Sampler, FrequenciesFollowTheTemperedDistribution) {
  const std::vector<float> logits = {1.0f, 2.0f, 0.5f, -1.0f, 2.0f, 0.0f};
  const std::int64_t V = 6, draws = 60000;
  for (double temp : {1.0, 0.5}) {
    for (std::int64_t k : {0, 3}) {
      for (double p : {1.0, 0.8}) {
        // The expected distribution, computed here: sorted (prob desc, id asc), cut by k and p.
        std::vector<int> order = {1, 4, 0, 2, 5, 3};
        std::vector<double> w;
        for (int i : order) w.push_back(std::exp((logits[i] - 2.0) / temp));
        std::size_t keep = k ? static_cast<std::size_t>(k) : order.size();
        double total = 0;
        for (std::size_t j = 0; j < keep; ++j) total += w[j];
        if (p < 1) {
          double mass = 0;
          std::size_t j = 0;
          while (j < keep) {
            mass += w[j++];
            if (mass >= p * total) break;
          }
          keep = j, total = mass;
        }
        std::vector<double> expect(V, 0.0);
        for (std::size_t j = 0; j < keep; ++j) expect[order[j]] = w[j] / total;
        Sampler s(42);
        std::vector<int> count(V, 0);
        SampleOptions o{.temperature = temp, .top_k = k, .top_p = p};
        for (std::int64_t d = 0; d < draws; ++d) ++count[s.sample(logits.data(), V, o)];
        for (std::int64_t i = 0; i < V; ++i) {
          const double sd = std::sqrt(expect[i] * (1 - expect[i]) / draws);
          EXPECT_NEAR(count[i] / double(draws), expect[i], 5 * sd + 1e-9) << "T=" << temp << " k=" << k << " p=" << p << " id " << i;
        }
      }
    }
  }
  Sampler s(1);
  EXPECT_EQ(s.sample(logits.data(), V, {.temperature = 0}), 1);  // ties go to the lower id
  EXPECT_EQ(s.sample(logits.data(), V, {.top_k = 1}), 1);
}

// Without top-k or top-p every token is kept in id order: the draw is the first token whose
// running sum of exp_nonpositive((logit - max) / T) passes u * total, u the sampler's next
// uniform. Computed here from a second sampler of the same seed, draw by draw, on fresh logits
// each time, with the scalar exp_nonpositive: the sampler's vector form (AVX-512) must give the
// same bits, and so must every kernel set this host runs.
TEST(Sampler, KeepingEveryTokenDrawsByTheRunningSumInIdOrder) {
  std::mt19937 rng(8);
  std::normal_distribution<float> d(0.0f, 3.0f);
  const std::int64_t V = 97;
  std::vector<cpu::quant::Isa> isas = {cpu::quant::Isa::Scalar};
  if (cpu::quant::host_isa() >= cpu::quant::Isa::Avx2) isas.push_back(cpu::quant::Isa::Avx2);
  if (cpu::quant::host_isa() >= cpu::quant::Isa::Avx512) isas.push_back(cpu::quant::Isa::Avx512);
  for (auto isa : isas) {
    cpu::quant::force_isa(isa);
    for (std::int64_t k : {std::int64_t{0}, V, V + 5}) {
      Sampler s(2024), twin(2024);
      // 0.013: most weights underflow (exactly 0 below -746), some are subnormal.
      for (double temp : {0.7, 0.013}) {
        const SampleOptions o{.temperature = temp, .top_k = k};
        std::vector<float> logits(static_cast<std::size_t>(V));
        for (int draw = 0; draw < 1000; ++draw) {
          for (auto& l : logits) l = d(rng);
          const double top = *std::max_element(logits.begin(), logits.end());
          std::vector<double> w;
          double total = 0;
          for (float l : logits) total += w.emplace_back(exp_nonpositive((l - top) / o.temperature));
          const double u = twin.uniform() * total;
          std::int32_t want = static_cast<std::int32_t>(V - 1);
          double acc = 0;
          for (std::int64_t i = 0; i < V; ++i)
            if (u < (acc += w[static_cast<std::size_t>(i)])) {
              want = static_cast<std::int32_t>(i);
              break;
            }
          ASSERT_EQ(s.sample(logits.data(), V, o), want)
              << "draw " << draw << ", top_k " << k << ", T " << temp << ", " << cpu::quant::isa_name(isa);
        }
      }
    }
  }
  cpu::quant::force_isa(cpu::quant::host_isa());
}

// The sampler's exp against libm's: relative error under 1e-14 (and a few units of the smallest
// subnormal where the result is subnormal), exactly 0 below -746, 1 at 0; and the
// vector form (tempered_weights) gives the scalar one's bits for fresh arguments over the range.
TEST(Sampler, ItsExpMatchesLibmAndItsVectorForm) {
  std::mt19937 rng(31);
  std::uniform_real_distribution<double> u(-760.0, 0.0), small(-2.0, 0.0);
  EXPECT_EQ(exp_nonpositive(0.0), 1.0);
  EXPECT_EQ(exp_nonpositive(-0.0), 1.0);
  EXPECT_EQ(exp_nonpositive(-746.0 - 1e-9), 0.0);
  EXPECT_EQ(exp_nonpositive(-std::numeric_limits<double>::infinity()), 0.0);
  for (int i = 0; i < 200000; ++i) {
    const double x = i % 2 ? u(rng) : small(rng), want = std::exp(x), got = exp_nonpositive(x);
    ASSERT_LE(std::abs(got - want), 1e-14 * want + 2 * std::numeric_limits<double>::denorm_min()) << x;
  }
  // Logits as floats, a top and a temperature: the vector form against the scalar one.
  const std::int64_t n = 203;  // not a multiple of 8
  std::vector<float> logits(static_cast<std::size_t>(n));
  std::normal_distribution<float> d(0.0f, 40.0f);
  for (auto& l : logits) l = d(rng);
  const double top = *std::max_element(logits.begin(), logits.end());
  for (auto isa : {cpu::quant::Isa::Scalar, cpu::quant::host_isa()}) {
    cpu::quant::force_isa(isa);
    for (double temp : {1.0, 0.3, 0.01, 1e-300}) {
      std::vector<double> w(static_cast<std::size_t>(n) + 1, -1.0);
      tempered_weights(logits.data(), n, top, temp, w.data());
      for (std::int64_t i = 0; i < n; ++i)
        ASSERT_EQ(w[static_cast<std::size_t>(i)], exp_nonpositive((logits[static_cast<std::size_t>(i)] - top) / temp))
            << "token " << i << ", T " << temp << ", " << cpu::quant::isa_name(isa);
      EXPECT_EQ(w.back(), -1.0) << "wrote past n";
    }
  }
  cpu::quant::force_isa(cpu::quant::host_isa());
}

TEST(Generator, BadArgumentsAreClearErrors) {
  GeneratorModel m = make_model({cells::gru(8, 16)}, 30, 8, 2);
  Generator gen(m, Format::F32);
  EXPECT_THROW(gen.generate({}, 5, {}), Error);
  EXPECT_THROW(gen.generate({30}, 5, {}), Error);
  EXPECT_THROW(gen.generate({1}, 5, {.temperature = -1}), Error);
  EXPECT_THROW(gen.generate({1}, 5, {.top_p = 0}), Error);
  EXPECT_THROW(gen.generate({1}, 5, {.top_k = -2}), Error);
  EXPECT_THROW(gen.generate({1}, 5, {}, 0), Error);
  EXPECT_THROW(gen.encode("\x01"), Error);
  GeneratorModel wrong = m;
  wrong.decoder_weight.pop_back();
  EXPECT_THROW(Generator(wrong, Format::Int8), Error);
  wrong = m;
  wrong.layers[0] = cells::gru(9, 16);
  EXPECT_THROW(Generator(wrong, Format::Int8), Error);
  wrong = m;
  wrong.params[0][0][3] = std::nanf("");
  EXPECT_THROW(Generator(wrong, Format::Int8), Error);
  try {
    gen.generate({1, 99}, 5, {});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("prime[1] = 99"), std::string::npos) << e.what();
  }
  EXPECT_EQ(gen.decode(gen.encode(" !\"# ")), " !\"# ");
}

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("cellfuse_gen_test_" + std::to_string(::getpid()) + "_" + name)).string();
}

TEST(GeneratorFile, RoundTripsEveryFormat) {
  const std::int64_t V = 71;
  GeneratorModel m = make_model({cells::lnlstm(20, 64), cells::lstm(64, 64)}, V, 20, 31);
  auto ids = random_ids(25, V, 6);
  for (Format f : {Format::F32, Format::BF16, Format::Int8, Format::Int4}) {
    Generator gen(m, f);
    const std::string path = temp_path(cpu::quant::format_name(f));
    gen.save(path);
    auto back = Generator::load(path);
    EXPECT_EQ(back->format(), f);
    EXPECT_EQ(back->tokens(), gen.tokens());
    EXPECT_EQ(back->logits(ids), gen.logits(ids));
    SampleOptions o{.temperature = 0.8, .seed = 5};
    EXPECT_EQ(back->generate(ids, 40, o, 2), gen.generate(ids, 40, o, 2));
    std::filesystem::remove(path);
  }
}

TEST(GeneratorFile, QuantizedFilesAreSmall) {
  // A char-RNN's proportions: the cell's weights dominate.
  GeneratorModel m = make_model({cells::lstm(64, 512), cells::lstm(512, 512)}, 100, 64, 1);
  std::map<Format, std::uintmax_t> size;
  for (Format f : {Format::F32, Format::Int8, Format::Int4}) {
    const std::string path = temp_path(std::string("size_") + cpu::quant::format_name(f));
    Generator(m, f).save(path);
    size[f] = std::filesystem::file_size(path);
    std::filesystem::remove(path);
  }
  EXPECT_LE(double(size[Format::Int8]), 0.30 * double(size[Format::F32]));
  EXPECT_LE(double(size[Format::Int4]), 0.17 * double(size[Format::F32]));
}

TEST(GeneratorFile, TruncatedOrCorruptFilesAreErrors) {
  GeneratorModel m = make_model({cells::gru(8, 16)}, 30, 8, 2);
  const std::string path = temp_path("corrupt");
  Generator(m, Format::Int4).save(path);
  std::string bytes;
  {
    std::ifstream f(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(f), {});
  }
  auto write = [&](const std::string& b) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(b.data(), static_cast<std::streamsize>(b.size()));
  };
  auto expect_error = [&](const std::string& b, const std::string& words) {
    write(b);
    try {
      Generator::load(path);
      FAIL() << "loaded a bad file (" << words << ")";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  expect_error(bytes.substr(0, bytes.size() / 2), "truncated");
  expect_error(bytes.substr(0, 10), "not a cellfuse generator file");
  std::string flipped = bytes;
  flipped[flipped.size() / 3] ^= 0x10;
  expect_error(flipped, "corrupt");
  std::string version = bytes;
  version[8] = 9;
  expect_error(version, "version 9");
  EXPECT_THROW(Generator::load(path + ".missing"), Error);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace cellfuse::generate
