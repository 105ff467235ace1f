// libFuzzer target for the saved generator file (runtime/generate/generator_file.cpp). The file
// ends in a checksum of everything before it, which random bytes never match; so the input is
// the file's body (what follows the magic and version): the target frames it with the magic,
// the current version and the right checksum, and loads that. Loading must end in a loaded
// Generator or a cellfuse::Error, never a crash, a hang or a huge allocation. A loaded one must
// run: logits of a two-token prime, and two generated tokens, finite and in range.
//
//   fuzz_generator_file --make-seeds DIR    writes seed bodies (small fp32/bf16/int8/int4 models)
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "compiler/ir/error.h"
#include "frontend/cells.h"
#include "runtime/generate/generator.h"

namespace {

using namespace cellfuse;
using namespace cellfuse::generate;

constexpr char kMagic[8] = {'C', 'F', 'G', 'E', 'N', 0, 0, 0};
constexpr std::uint32_t kVersion = 2;
constexpr std::size_t kHeader = 12;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_generator_file: %s\n", what);
  __builtin_trap();
}

std::uint64_t fnv1a(const std::string& bytes) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : bytes) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

std::string file_path() {
  static const std::string path = (std::filesystem::temp_directory_path() /
                                   ("cellfuse_fuzz_generator_" + std::to_string(::getpid()) + ".cfgen"))
                                      .string();
  return path;
}

// A small model: an LSTM and a GRU layer over an 8-wide embedding of 7 tokens.
GeneratorModel small_model() {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-0.5f, 0.5f);
  GeneratorModel m;
  m.vocab_size = 7, m.embed_dim = 8;
  for (int i = 0; i < 7 * 8; ++i) m.embedding.push_back(u(rng));
  m.layers = {cells::lstm(8, 5), cells::gru(5, 3)};
  for (const Cell& cell : m.layers) {
    std::vector<std::vector<float>> ps;
    for (ValueId p : cell.params) {
      std::vector<float> v(static_cast<std::size_t>(cell.graph.node(p).shape.elements(1)));
      for (float& x : v) x = u(rng);
      ps.push_back(std::move(v));
    }
    m.params.push_back(std::move(ps));
  }
  for (int i = 0; i < 7 * 3; ++i) m.decoder_weight.push_back(u(rng));
  for (int i = 0; i < 7; ++i) m.decoder_bias.push_back(u(rng));
  for (int i = 0; i < 7; ++i) m.tokens.push_back(std::string(1, static_cast<char>('a' + i)));
  return m;
}

int make_seeds(const std::string& dir) {
  std::filesystem::create_directories(dir);
  const GeneratorModel m = small_model();
  const cpu::quant::Format formats[] = {cpu::quant::Format::F32, cpu::quant::Format::BF16, cpu::quant::Format::Int8,
                                        cpu::quant::Format::Int4};
  const char* names[] = {"fp32", "bf16", "int8", "int4"};
  for (int f = 0; f < 4; ++f) {
    Generator g(m, formats[f], 1);
    g.save(file_path());
    std::ifstream in(file_path(), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string file = ss.str();
    // The body: without the magic, the version and the checksum (the target adds them).
    std::ofstream(dir + "/small_" + names[f] + ".body", std::ios::binary) << file.substr(kHeader, file.size() - kHeader - 8);
  }
  std::filesystem::remove(file_path());
  return 0;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  for (int i = 1; i + 1 < *argc; ++i)
    if (std::strcmp((*argv)[i], "--make-seeds") == 0) std::exit(make_seeds((*argv)[i + 1]));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string file(kMagic, sizeof kMagic);
  file.append(reinterpret_cast<const char*>(&kVersion), sizeof kVersion);
  file.append(reinterpret_cast<const char*>(data), size);
  const std::uint64_t sum = fnv1a(file);
  file.append(reinterpret_cast<const char*>(&sum), sizeof sum);
  {
    std::ofstream out(file_path(), std::ios::binary | std::ios::trunc);
    out.write(file.data(), static_cast<std::streamsize>(file.size()));
  }
  std::unique_ptr<Generator> g;
  try {
    g = Generator::load(file_path(), 1);
  } catch (const Error&) {
    return 0;  // a corrupt file, said so
  }
  try {
    const auto logits = g->logits({0, static_cast<std::int32_t>(g->vocab_size() - 1)});
    if (logits.size() != static_cast<std::size_t>(2 * g->vocab_size())) fail("logits of the wrong size");
    const auto ids = g->generate({0}, 2, SampleOptions{.temperature = 0, .top_k = 0, .top_p = 1.0, .seed = 1}, 1);
    for (auto id : ids.at(0))
      if (id < 0 || id >= g->vocab_size()) fail("a generated id out of the vocabulary");
  } catch (const Error&) {
    // Weights that make non-finite logits are refused by the sampler with an Error naming them.
  }
  return 0;
}
