#include "frontend/cli/generate_command.h"

#include <chrono>
#include <cstdio>
#include <algorithm>
#include <cstring>
#include <iostream>
#include <map>
#include <string>

#include "compiler/ir/error.h"
#if CELLFUSE_HAVE_LLVM
#include "runtime/generate/generator.h"
#endif

namespace cellfuse::cli {
namespace {

constexpr const char* kUsage = R"(usage:
  cellfuse generate MODEL --prime TEXT --length N [--temperature T] [--top-k K] [--top-p P]
                    [--seed S] [--streams B] [--threads N] [--stats]
      samples N tokens after TEXT from MODEL, a generator file (cellfuse.Generator.save), and
      prints them as they come. --temperature 0 is greedy (default 1); --top-k/--top-p keep the
      K most likely tokens / the most likely ones reaching probability P; the same --seed
      (default 0) gives the same text on any thread count. --streams B samples B independent
      streams at once (printed one after another). --stats prints the format, ms per token and
      tokens/s to stderr. A model without a vocabulary takes --prime as token ids: "3,14,15".
)";

std::int64_t integer(const std::string& name, const std::string& v) {
  try {
    std::size_t used = 0;
    const long long n = std::stoll(v, &used);
    if (used == v.size()) return n;
  } catch (const std::exception&) {
  }
  throw Error("--" + name + ": '" + v + "' is not an integer");
}

double number(const std::string& name, const std::string& v) {
  try {
    std::size_t used = 0;
    const double d = std::stod(v, &used);
    if (used == v.size()) return d;
  } catch (const std::exception&) {
  }
  throw Error("--" + name + ": '" + v + "' is not a number");
}

}  // namespace

#if !CELLFUSE_HAVE_LLVM
int generate_command(int, char**) {
  throw Error("generate: this build has no CPU backend (configured without LLVM)");
}
#else
int generate_command(int argc, char** argv) {
  std::string model;
  std::map<std::string, std::string> opts;
  bool stats = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (a == "--stats") {
      stats = true;
    } else if (a.rfind("--", 0) == 0) {
      const std::string name = a.substr(2);
      static const char* known[] = {"prime", "length", "temperature", "top-k", "top-p", "seed", "streams", "threads"};
      if (std::find_if(std::begin(known), std::end(known), [&](const char* k) { return name == k; }) == std::end(known))
        throw Error("generate: unknown option '" + a + "'\n" + kUsage);
      if (i + 1 >= argc) throw Error("generate: " + a + " needs a value");
      opts[name] = argv[++i];
    } else if (model.empty()) {
      model = a;
    } else {
      throw Error("generate: unexpected argument '" + a + "'\n" + kUsage);
    }
  }
  if (model.empty()) throw Error(std::string("generate: no MODEL file given\n") + kUsage);
  if (!opts.count("prime") || !opts.count("length")) throw Error(std::string("generate: --prime and --length are required\n") + kUsage);
  const int threads = opts.count("threads") ? static_cast<int>(integer("threads", opts["threads"])) : 0;
  generate::SampleOptions o;
  if (opts.count("temperature")) o.temperature = number("temperature", opts["temperature"]);
  if (opts.count("top-k")) o.top_k = integer("top-k", opts["top-k"]);
  if (opts.count("top-p")) o.top_p = number("top-p", opts["top-p"]);
  if (opts.count("seed")) o.seed = static_cast<std::uint64_t>(integer("seed", opts["seed"]));
  const std::int64_t length = integer("length", opts["length"]);
  const std::int64_t streams = opts.count("streams") ? integer("streams", opts["streams"]) : 1;
  auto gen = generate::Generator::load(model, threads);
  std::vector<std::int32_t> prime;
  const bool text = !gen->tokens().empty();
  if (text) {
    prime = gen->encode(opts["prime"]);
  } else {
    std::string s = opts["prime"];
    for (std::size_t pos = 0; pos <= s.size();) {
      const std::size_t comma = std::min(s.find(',', pos), s.size());
      prime.push_back(static_cast<std::int32_t>(integer("prime", s.substr(pos, comma - pos))));
      pos = comma + 1;
    }
  }
  auto print = [&](std::int32_t id) {
    if (text) std::fputs(gen->tokens()[static_cast<std::size_t>(id)].c_str(), stdout);
    else std::printf("%d ", id);
  };
  const auto start = std::chrono::steady_clock::now();
  if (text) std::fputs(opts["prime"].c_str(), stdout);
  // One stream prints as it goes; several print one after another at the end.
  auto out = gen->generate(prime, length, o, streams, [&](std::int64_t, const std::int32_t* ids) {
    if (streams == 1) {
      print(ids[0]);
      std::fflush(stdout);
    }
    return true;
  });
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  if (streams > 1)
    for (std::size_t b = 0; b < out.size(); ++b) {
      std::printf(b ? "\n--- stream %zu\n" : "--- stream %zu\n", b);
      if (text) std::fputs(opts["prime"].c_str(), stdout);
      for (auto id : out[b]) print(id);
    }
  std::printf("\n");
  if (stats)
    std::fprintf(stderr, "format %s (%s kernels), %d threads, %lld streams: %.3f ms per step, %.1f tokens/s\n",
                 cpu::quant::format_name(gen->format()), cpu::quant::isa_name(cpu::quant::active_isa()),
                 gen->threads(), static_cast<long long>(streams),
                 length ? ms / static_cast<double>(length) : 0.0,
                 ms > 0 ? static_cast<double>(length * streams) / (ms / 1000.0) : 0.0);
  return 0;
}
#endif

}  // namespace cellfuse::cli
