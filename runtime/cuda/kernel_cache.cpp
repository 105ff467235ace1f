#include "runtime/cuda/kernel_cache.h"

#include <cstdlib>

#include "runtime/cuda/driver.h"
#include "runtime/cuda/nvrtc.h"

namespace cellfuse::cuda {
namespace {

constexpr char kMagic[8] = {'C', 'F', 'C', 'U', 'B', 'I', 'N', '\0'};

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

}  // namespace

CacheKey cache_key(const std::string& source, const std::string& nvrtc_version, const std::string& architecture,
                   const std::vector<std::string>& options) {
  std::vector<std::string> fields{nvrtc_version, architecture, std::to_string(options.size())};
  fields.insert(fields.end(), options.begin(), options.end());
  fields.push_back(source);
  return content_key("cellfuse cubin key v1", fields);
}

std::string toolchain_version() {
  static const std::string version = [] {
    std::string driver_part = "no driver";
    if (cuda_available()) {
      int v = 0;
      if (driver().driver_get_version(&v) == CUDA_SUCCESS) driver_part = "driver " + std::to_string(v);
    }
    return nvrtc_version() + " / " + driver_part;
  }();
  return version;
}

KernelCache::KernelCache() : KernelCache(default_directory(), enabled_by_environment()) {}

KernelCache::KernelCache(std::filesystem::path directory, bool enabled)
    : disk_(std::move(directory), enabled, kMagic, ".cubin") {}

std::filesystem::path KernelCache::default_directory() {
  if (std::string dir = env("CELLFUSE_CACHE_DIR"); !dir.empty()) return dir;
  if (std::string xdg = env("XDG_CACHE_HOME"); !xdg.empty()) return std::filesystem::path(xdg) / "cellfuse";
  if (std::string home = env("HOME"); !home.empty()) return std::filesystem::path(home) / ".cache" / "cellfuse";
  return std::filesystem::temp_directory_path() / "cellfuse-cache";
}

bool KernelCache::enabled_by_environment() { return env("CELLFUSE_CACHE") != "0"; }

std::filesystem::path KernelCache::entry_path(const CacheKey& key) const { return disk_.entry_path(key); }

std::optional<std::vector<char>> KernelCache::load(const CacheKey& key) { return disk_.load(key); }

bool KernelCache::store(const CacheKey& key, const std::vector<char>& payload) { return disk_.store(key, payload); }

std::vector<char> KernelCache::get_or_compile(const std::string& source, const std::string& architecture,
                                              const std::vector<std::string>& extra_options, const std::string& name,
                                              bool* from_cache) {
  if (from_cache) *from_cache = false;
  std::vector<std::string> options = default_options();
  options.insert(options.end(), extra_options.begin(), extra_options.end());
  const CacheKey key = cache_key(source, toolchain_version(), architecture, options);
  if (auto hit = disk_.load(key)) {
    disk_.count_hit();
    if (from_cache) *from_cache = true;
    return std::move(*hit);
  }
  std::vector<char> cubin = compile_to_cubin(source, architecture, extra_options, name);
  disk_.count_miss();
  disk_.store(key, cubin);
  return cubin;
}

CacheStats KernelCache::stats() const { return disk_.stats(); }

KernelCache& default_kernel_cache() {
  static KernelCache cache;
  return cache;
}

}  // namespace cellfuse::cuda
