#include "runtime/cuda/plan_record.h"

#include <unistd.h>

#include <atomic>
#include <fstream>
#include <sstream>
#include <system_error>

#include "runtime/cuda/kernel_cache.h"

namespace cellfuse::cuda {
namespace {

constexpr const char* kMagic = "cellfuse-plan 1";

}  // namespace

std::filesystem::path plan_record_path(const std::filesystem::path& cache_directory, const std::string& key) {
  return cache_directory / "plans" / (cache_key(key, "plan", "", {}).hex() + ".plan");
}

std::optional<std::string> load_plan_record(const std::filesystem::path& cache_directory, const std::string& key) {
  std::ifstream in(plan_record_path(cache_directory, key), std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream text;
  text << in.rdbuf();
  const std::string want = std::string(kMagic) + "\n" + key + "\n";
  const std::string got = text.str();
  if (got.size() <= want.size() || got.compare(0, want.size(), want) != 0 || got.back() != '\n') return std::nullopt;
  std::string plan = got.substr(want.size(), got.size() - want.size() - 1);
  if (plan.empty() || plan.find('\n') != std::string::npos) return std::nullopt;
  return plan;
}

bool store_plan_record(const std::filesystem::path& cache_directory, const std::string& key, const std::string& plan) {
  static std::atomic<unsigned> counter{0};
  const std::filesystem::path path = plan_record_path(cache_directory, key);
  std::error_code ec;
  std::filesystem::create_directories(path.parent_path(), ec);
  if (ec) return false;
  const std::filesystem::path temporary =
      path.string() + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter.fetch_add(1));
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out << kMagic << "\n" << key << "\n" << plan << "\n";
    out.flush();
    if (!out) {
      std::filesystem::remove(temporary, ec);
      return false;
    }
  }
  std::filesystem::rename(temporary, path, ec);
  if (ec) {
    std::filesystem::remove(temporary, ec);
    return false;
  }
  return true;
}

}  // namespace cellfuse::cuda
