#pragma once
// The disk cache of compiled cubins: a cell's kernels are compiled by NVRTC once per machine,
// not once per process.
//
//   directory   $CELLFUSE_CACHE_DIR, else $XDG_CACHE_HOME/cellfuse, else ~/.cache/cellfuse
//   disabled    CELLFUSE_CACHE=0 (every lookup misses, nothing is written)
//   key         a 128-bit hash of the source, the NVRTC version, the architecture and the options
//   entry       <dir>/<key>.cubin: a header (magic, format version, key, payload length, payload
//               checksum) then the cubin. A truncated or corrupt entry (or one of another format)
//               is ignored and rebuilt.
//   writes      to a unique temporary name in the same directory, then rename(): another process
//               sees the old entry, no entry, or the whole new one, never half a file.
//
// Failing to create the directory or to write an entry never fails a compilation: it is counted
// in stats() and the cubin is returned all the same.
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace cellfuse::cuda {

struct CacheKey {
  std::uint64_t hi = 0, lo = 0;
  std::string hex() const;
  friend bool operator==(const CacheKey&, const CacheKey&) = default;
};

CacheKey cache_key(const std::string& source, const std::string& nvrtc_version, const std::string& architecture,
                   const std::vector<std::string>& options);

struct CacheStats {
  std::size_t hits = 0;
  std::size_t misses = 0;       // compilations the cache had to run
  std::size_t rejected = 0;     // entries found truncated, corrupt or of another format
  std::size_t write_failures = 0;
  std::string last_write_error;
};

class KernelCache {
 public:
  // The directory and the switch from the environment (see above), read now.
  KernelCache();
  // An explicit directory; `enabled` false turns the cache off.
  KernelCache(std::filesystem::path directory, bool enabled);

  // The environment's choice of directory.
  static std::filesystem::path default_directory();
  // False when CELLFUSE_CACHE=0.
  static bool enabled_by_environment();

  bool enabled() const { return enabled_; }
  const std::filesystem::path& directory() const { return directory_; }

  // The cubin of `source` for `architecture` (compile_to_cubin's arguments): from disk when a
  // valid entry is there, else compiled by NVRTC and stored. Throws CompileError like NVRTC.
  std::vector<char> get_or_compile(const std::string& source, const std::string& architecture,
                                   const std::vector<std::string>& extra_options = {},
                                   const std::string& name = "cellfuse.cu", bool* from_cache = nullptr);

  // The raw entry operations (for get_or_compile, and for tests).
  std::optional<std::vector<char>> load(const CacheKey& key);
  bool store(const CacheKey& key, const std::vector<char>& payload);
  std::filesystem::path entry_path(const CacheKey& key) const;

  CacheStats stats() const;

 private:
  std::filesystem::path directory_;
  bool enabled_;
  mutable std::mutex mutex_;
  CacheStats stats_;
};

// The process's cache, configured from the environment when first used.
KernelCache& default_kernel_cache();

}  // namespace cellfuse::cuda
