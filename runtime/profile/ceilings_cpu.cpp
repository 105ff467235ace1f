// The CPU's ceilings: the f32 product rate of cellfuse's own packed GEMM kernel (the one the
// runner uses) on a product large enough to reach its peak, over the whole team; and the
// bandwidth of a large copy split among the team (bytes read plus bytes written). Best of a
// few repetitions, so that a busy machine costs a low reading less often.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <mutex>
#include <optional>
#include <vector>

#include "compiler/ir/error.h"
#include "runtime/profile/ceilings.h"
#if CELLFUSE_HAVE_LLVM
#include "runtime/cpu/blas.h"
#include "runtime/cpu/packed_gemm.h"
#include "runtime/cpu/team.h"
#endif

namespace cellfuse::profile {

std::string cpu_description() {
  std::string model = "unknown";
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 1);
      model.erase(0, model.find_first_not_of(' '));
      break;
    }
#if CELLFUSE_HAVE_LLVM
  return "cpu " + model + " x" + std::to_string(cpu::default_thread_count());
#else
  return "cpu " + model;
#endif
}

#if CELLFUSE_HAVE_LLVM
namespace {

template <class F>
double best_seconds(int repeats, F&& f) {
  double best = 1e30;
  for (int i = 0; i < repeats; ++i) {
    const auto start = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return best;
}

}  // namespace

MachineCeilings measure_cpu_ceilings() {
  MachineCeilings c;
  cpu::use_single_threaded_blas();
  auto team = cpu::shared_team(cpu::default_thread_count());
  std::lock_guard<std::mutex> lock(team->user_mutex());
  // Products on weights packed once, as the runner does, at a few shapes (the weight in L2, out
  // of it); the best rate is the ceiling.
  const std::int64_t shapes[][3] = {{256, 1024, 1024}, {512, 256, 512}, {768, 128, 256}};
  for (const auto& shape : shapes) {
    const std::int64_t m = shape[0], k = shape[1], n = shape[2];
    std::vector<float> x(static_cast<std::size_t>(m * k)), w(static_cast<std::size_t>(n * k)), out(static_cast<std::size_t>(m * n));
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 7) * 0.25f - 0.5f;
    for (std::size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(i % 5) * 0.125f - 0.25f;
    std::optional<cpu::PackedWeights> packed;
    if (cpu::PackedWeights::supported()) {
      packed.emplace();
      packed->pack(w.data(), true, k, n);
    }
    auto product = [&] {
      if (packed) packed->multiply(*team, x.data(), nullptr, out.data(), m);
      else cpu::gemm<float>(*team, x.data(), w.data(), true, nullptr, out.data(), m, k, n);
    };
    product();
    c.gflops = std::max(c.gflops, 2.0 * static_cast<double>(m * k * n) / best_seconds(7, product) / 1e9);
  }
  // Bandwidth: a 64 MB copy, each member copying its share.
  const std::size_t elements = std::size_t{16} << 20;
  std::vector<float> from(elements, 1.0f), to(elements, 0.0f);
  auto copy = [&] {
    team->run([&](int part, int parts) {
      const std::size_t first = elements * static_cast<std::size_t>(part) / static_cast<std::size_t>(parts);
      const std::size_t last = elements * static_cast<std::size_t>(part + 1) / static_cast<std::size_t>(parts);
      std::memcpy(to.data() + first, from.data() + first, (last - first) * sizeof(float));
    });
  };
  copy();
  c.gbytes = 2.0 * static_cast<double>(elements * sizeof(float)) / best_seconds(5, copy) / 1e9;
  // Cache: each member copies its own 256 KB back and forth 64 times.
  constexpr std::size_t kSmall = 32 * 1024;  // floats per buffer: 128 KB, two of them
  const int parts = team->size();
  std::vector<std::vector<float>> a(static_cast<std::size_t>(parts), std::vector<float>(kSmall, 1.0f)),
      b(static_cast<std::size_t>(parts), std::vector<float>(kSmall, 0.0f));
  auto cached = [&] {
    team->run([&](int part, int) {
      float* p = a[static_cast<std::size_t>(part)].data();
      float* q = b[static_cast<std::size_t>(part)].data();
      for (int r = 0; r < 64; ++r) std::memcpy(r % 2 ? p : q, r % 2 ? q : p, kSmall * sizeof(float));
    });
  };
  cached();
  c.gbytes_cache = 2.0 * 64 * static_cast<double>(kSmall * sizeof(float)) * parts / best_seconds(7, cached) / 1e9;
  return c;
}
#else
MachineCeilings measure_cpu_ceilings() {
  throw Error("profiler: this build has no CPU backend (configured without LLVM) to measure the CPU with");
}
#endif

}  // namespace cellfuse::profile
