#include "runtime/cuda/kernel_cache.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>

#include "runtime/cuda/nvrtc.h"

namespace cellfuse::cuda {
namespace {

constexpr char kMagic[8] = {'C', 'F', 'C', 'U', 'B', 'I', 'N', '\0'};
constexpr std::uint32_t kFormatVersion = 1;

// The fixed-size header of an entry, written as these bytes (the cache is per machine, so the
// machine's byte order is the format's).
struct Header {
  char magic[8];
  std::uint32_t version;
  std::uint32_t header_size;
  std::uint64_t key_hi, key_lo;
  std::uint64_t length;
  std::uint64_t checksum;
};
static_assert(sizeof(Header) == 48);

std::uint64_t fnv1a(const char* data, std::size_t size, std::uint64_t h = 0xcbf29ce484222325ull) {
  for (std::size_t i = 0; i < size; ++i) {
    h ^= static_cast<unsigned char>(data[i]);
    h *= 0x100000001b3ull;
  }
  return h;
}

std::uint64_t mix(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// A second, independent 64-bit hash: 8 bytes at a time through the SplitMix64 finalizer.
std::uint64_t chunk_hash(const char* data, std::size_t size) {
  std::uint64_t h = 0x9e3779b97f4a7c15ull ^ size;
  std::size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    std::uint64_t w;
    std::memcpy(&w, data + i, 8);
    h = mix(h ^ w) + 0x9e3779b97f4a7c15ull;
  }
  std::uint64_t tail = 0;
  std::memcpy(&tail, data + i, size - i);
  return mix(h ^ tail ^ (static_cast<std::uint64_t>(size - i) << 56));
}

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

}  // namespace

std::string CacheKey::hex() const {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(hi), static_cast<unsigned long long>(lo));
  return buf;
}

CacheKey cache_key(const std::string& source, const std::string& nvrtc_version, const std::string& architecture,
                   const std::vector<std::string>& options) {
  // Every field with its length in front, so that no two different field lists hash alike.
  std::string material = "cellfuse cubin key v1";
  auto field = [&](const std::string& s) {
    material += std::to_string(s.size()) + ":" + s + ";";
  };
  field(nvrtc_version);
  field(architecture);
  field(std::to_string(options.size()));
  for (const auto& o : options) field(o);
  field(source);
  return CacheKey{fnv1a(material.data(), material.size()), chunk_hash(material.data(), material.size())};
}

KernelCache::KernelCache() : KernelCache(default_directory(), enabled_by_environment()) {}

KernelCache::KernelCache(std::filesystem::path directory, bool enabled)
    : directory_(std::move(directory)), enabled_(enabled) {}

std::filesystem::path KernelCache::default_directory() {
  if (std::string dir = env("CELLFUSE_CACHE_DIR"); !dir.empty()) return dir;
  if (std::string xdg = env("XDG_CACHE_HOME"); !xdg.empty()) return std::filesystem::path(xdg) / "cellfuse";
  if (std::string home = env("HOME"); !home.empty()) return std::filesystem::path(home) / ".cache" / "cellfuse";
  return std::filesystem::temp_directory_path() / "cellfuse-cache";
}

bool KernelCache::enabled_by_environment() { return env("CELLFUSE_CACHE") != "0"; }

std::filesystem::path KernelCache::entry_path(const CacheKey& key) const { return directory_ / (key.hex() + ".cubin"); }

std::optional<std::vector<char>> KernelCache::load(const CacheKey& key) {
  if (!enabled_) return std::nullopt;
  std::ifstream in(entry_path(key), std::ios::binary);
  if (!in) return std::nullopt;  // no entry: a plain miss
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto reject = [&]() -> std::optional<std::vector<char>> {
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.rejected;
    return std::nullopt;
  };
  if (in.bad() || bytes.size() < sizeof(Header)) return reject();
  Header h;
  std::memcpy(&h, bytes.data(), sizeof h);
  if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0 || h.version != kFormatVersion ||
      h.header_size != sizeof(Header) || h.key_hi != key.hi || h.key_lo != key.lo ||
      h.length != bytes.size() - sizeof(Header) || h.length == 0)
    return reject();
  std::vector<char> payload(bytes.begin() + static_cast<std::ptrdiff_t>(sizeof(Header)), bytes.end());
  if (fnv1a(payload.data(), payload.size()) != h.checksum) return reject();
  return payload;
}

bool KernelCache::store(const CacheKey& key, const std::vector<char>& payload) {
  if (!enabled_) return false;
  auto failed = [&](const std::string& why) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.write_failures;
    stats_.last_write_error = why;
    return false;
  };
  std::error_code ec;
  std::filesystem::create_directories(directory_, ec);
  if (ec) return failed("cannot create " + directory_.string() + ": " + ec.message());
  Header h{};
  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.version = kFormatVersion;
  h.header_size = sizeof(Header);
  h.key_hi = key.hi;
  h.key_lo = key.lo;
  h.length = payload.size();
  h.checksum = fnv1a(payload.data(), payload.size());
  // A name no other writer uses: this process, this cache object, a counter and a random word.
  static std::atomic<std::uint64_t> counter{0};
  thread_local std::mt19937_64 rng{std::random_device{}()};
  const std::filesystem::path final_path = entry_path(key);
  const std::filesystem::path temp = final_path.string() + ".tmp." + std::to_string(::getpid()) + "." +
                                     std::to_string(counter++) + "." + std::to_string(rng() % 1000000007u);
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    if (!out) return failed("cannot write " + temp.string());
    out.write(reinterpret_cast<const char*>(&h), sizeof h);
    out.write(payload.data(), static_cast<std::streamsize>(payload.size()));
    out.flush();
    if (!out) {
      out.close();
      std::filesystem::remove(temp, ec);
      return failed("cannot write " + temp.string());
    }
  }
  std::filesystem::rename(temp, final_path, ec);
  if (ec) {
    std::error_code ignored;
    std::filesystem::remove(temp, ignored);
    return failed("cannot rename " + temp.string() + " to " + final_path.string() + ": " + ec.message());
  }
  return true;
}

std::vector<char> KernelCache::get_or_compile(const std::string& source, const std::string& architecture,
                                              const std::vector<std::string>& extra_options, const std::string& name,
                                              bool* from_cache) {
  if (from_cache) *from_cache = false;
  std::vector<std::string> options = default_options();
  options.insert(options.end(), extra_options.begin(), extra_options.end());
  const CacheKey key = cache_key(source, nvrtc_version(), architecture, options);
  if (auto hit = load(key)) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.hits;
    if (from_cache) *from_cache = true;
    return std::move(*hit);
  }
  std::vector<char> cubin = compile_to_cubin(source, architecture, extra_options, name);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.misses;
  }
  store(key, cubin);
  return cubin;
}

CacheStats KernelCache::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

KernelCache& default_kernel_cache() {
  static KernelCache cache;
  return cache;
}

}  // namespace cellfuse::cuda
