// `cellfuse generate MODEL ...`: the built binary (CELLFUSE_CLI) on a generator file saved here,
// against the C++ API's own generation with the same seed; its errors.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "frontend/cells.h"
#include "runtime/generate/generator.h"

namespace fs = std::filesystem;

namespace cellfuse::generate {
namespace {

struct Result {
  int status = -1;
  std::string out, err;
};

Result cli(const std::string& args) {
  const fs::path err = fs::temp_directory_path() / ("cellfuse_gen_cli_err_" + std::to_string(::getpid()));
  const std::string command = std::string("'") + CELLFUSE_CLI + "' " + args + " 2>'" + err.string() + "'";
  Result r;
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return r;
  char buf[4096];
  std::size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) r.out.append(buf, n);
  const int status = pclose(pipe);
  r.status = (status != -1 && WIFEXITED(status)) ? WEXITSTATUS(status) : -1;
  std::ifstream in(err);
  std::stringstream s;
  s << in.rdbuf();
  r.err = s.str();
  fs::remove(err);
  return r;
}

GeneratorModel small_model() {
  std::mt19937 rng(4);
  std::normal_distribution<float> d(0.0f, 0.4f);
  auto fill = [&](std::size_t n) {
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
  };
  GeneratorModel m;
  m.vocab_size = 40, m.embed_dim = 12;
  m.embedding = fill(40 * 12);
  m.layers = {cells::gru(12, 24), cells::lstm(24, 24)};
  m.params = {{fill(72 * 12), fill(72 * 24), fill(72), fill(72)}, {fill(96 * 24), fill(96 * 24), fill(96), fill(96)}};
  m.decoder_weight = fill(40 * 24);
  m.decoder_bias = fill(40);
  for (int i = 0; i < 40; ++i) m.tokens.push_back(std::string(1, static_cast<char>('a' + i % 26)) + (i >= 26 ? "_" : ""));
  return m;
}

TEST(GenerateCli, PrintsWhatTheApiGeneratesOnAnyThreadCount) {
  const fs::path path = fs::temp_directory_path() / ("cellfuse_gen_cli_" + std::to_string(::getpid()) + ".cfgen");
  Generator gen(small_model(), cpu::quant::Format::Int8);
  gen.save(path.string());
  SampleOptions o{.temperature = 0.8, .top_k = 10, .seed = 9};
  const auto want = "abc" + gen.decode(gen.generate(gen.encode("abc"), 50, o, 1)[0]) + "\n";
  for (const char* threads : {"1", "2"}) {
    Result r = cli("generate '" + path.string() + "' --prime abc --length 50 --temperature 0.8 --top-k 10 --seed 9 --threads " + threads);
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, want) << "threads " << threads;
  }
  Result greedy = cli("generate '" + path.string() + "' --prime abc --length 20 --temperature 0 --stats");
  EXPECT_EQ(greedy.status, 0) << greedy.err;
  EXPECT_EQ(greedy.out, "abc" + gen.decode(gen.generate(gen.encode("abc"), 20, {.temperature = 0}, 1)[0]) + "\n");
  EXPECT_NE(greedy.err.find("int8"), std::string::npos) << greedy.err;
  fs::remove(path);
}

TEST(GenerateCli, ErrorsAreUserErrors) {
  const fs::path path = fs::temp_directory_path() / ("cellfuse_gen_cli_bad_" + std::to_string(::getpid()) + ".cfgen");
  Generator(small_model(), cpu::quant::Format::Int4).save(path.string());
  fs::resize_file(path, fs::file_size(path) - 30);
  auto expect_error = [](const Result& r, const std::string& needle) {
    EXPECT_EQ(r.status, 2) << r.out << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
  };
  expect_error(cli("generate '" + path.string() + "' --prime ab --length 5"), "truncated");
  expect_error(cli("generate '" + path.string() + "' --prime ab --length 5 --top-q 3"), "unknown option");
  expect_error(cli("generate '" + path.string() + "' --prime ab"), "--length");
  expect_error(cli("generate '" + path.string() + "' --prime ab --length x"), "not an integer");
  expect_error(cli("generate /nonexistent.cfgen --prime ab --length 5"), "cannot open");
  fs::remove(path);
}

}  // namespace
}  // namespace cellfuse::generate
