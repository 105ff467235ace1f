#pragma once
// The disk cache of compiled cubins: a cell's kernels are compiled by NVRTC once per machine,
// not once per process. The file format, its checks and the directory's safety rules are
// runtime/disk_cache.h's (content-addressed, verified before loading, atomic writes, a directory
// other users can write refused, read-only or full disks degrade to no cache).
//
//   directory   $CELLFUSE_CACHE_DIR, else $XDG_CACHE_HOME/cellfuse, else ~/.cache/cellfuse
//   disabled    CELLFUSE_CACHE=0 (every lookup misses, nothing is written)
//   key         a 128-bit hash of the source, NVRTC's and the driver's versions (toolchain_version),
//               the architecture and the options
//   entry       <dir>/<key>.cubin
//
// Failing to create the directory or to write an entry never fails a compilation: it is counted
// in stats() and the cubin is returned all the same.
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "runtime/disk_cache.h"

namespace cellfuse::cuda {

using CacheKey = cellfuse::CacheKey;
using CacheStats = cellfuse::CacheStats;

// `nvrtc_version` is what the key calls the toolchain: get_or_compile passes toolchain_version().
CacheKey cache_key(const std::string& source, const std::string& nvrtc_version, const std::string& architecture,
                   const std::vector<std::string>& options);

// NVRTC's version and the CUDA driver's ("12.4 / driver 12040", "... / no driver" where none is
// loaded): a new compiler or driver is a new key, so it never loads a cubin an older one made.
std::string toolchain_version();

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

  bool enabled() const { return disk_.enabled(); }
  const std::filesystem::path& directory() const { return disk_.directory(); }

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
  DiskCache disk_;
};

// The process's cache, configured from the environment when first used.
KernelCache& default_kernel_cache();

}  // namespace cellfuse::cuda
