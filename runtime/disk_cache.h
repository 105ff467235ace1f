#pragma once
// A directory of content-addressed entries that are loaded as code (cubins today; any compiled
// artifact), written so that a shared or damaged cache can never make cellfuse run the wrong
// bytes, and never fail a compilation:
//
//   key        a 128-bit hash of everything that determines the bytes (content_key: the source,
//              the compiler's and driver's versions, the target and the options, each field with
//              its length, so no two field lists hash alike); the file name is its hex
//   entry      <dir>/<key hex><suffix>: a header (magic, format version, header size, the key,
//              payload length, payload checksum) then the payload. Loading checks all of it
//              before handing out a byte; a truncated, corrupt, foreign or mismatched entry is a
//              miss, counted, with one warning on stderr naming the file and what was wrong
//   writes     to a unique temporary name in the directory, then rename(): a reader sees no
//              entry, the old one or the whole new one, never half a file, however many
//              processes write the same key at once
//   directory  created private (0700) when missing. One that another user owns, or that its
//              group or others can write, is refused (a warning naming it and saying why and what
//              to do; the cache is then off): anyone who can write there could plant code that
//              cellfuse would run. An entry file another user owns is refused the same way.
//   failures   an unwritable, read-only or full directory turns writing off for the process with
//              one warning: the cache degrades to a miss on every lookup, never to an error
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace cellfuse {

struct CacheKey {
  std::uint64_t hi = 0, lo = 0;
  std::string hex() const;
  friend bool operator==(const CacheKey&, const CacheKey&) = default;
};

// The key of a list of fields (tagged with `kind`, e.g. "cellfuse cubin key v1").
CacheKey content_key(const std::string& kind, const std::vector<std::string>& fields);

struct CacheStats {
  std::size_t hits = 0;
  std::size_t misses = 0;          // compilations the cache had to run
  std::size_t rejected = 0;        // entries found truncated, corrupt, foreign or of another format
  std::size_t write_failures = 0;
  std::string last_write_error;
  std::string refused;             // why the directory was refused ("" when it was not)
};

class DiskCache {
 public:
  // `magic`: 8 bytes naming the kind of entry; `suffix`: the file name's extension (".cubin").
  DiskCache(std::filesystem::path directory, bool enabled, const char (&magic)[8], std::string suffix);

  bool enabled() const { return enabled_; }
  const std::filesystem::path& directory() const { return directory_; }
  std::filesystem::path entry_path(const CacheKey& key) const;

  // The payload of a valid entry of `key`, or nothing (no entry, or one rejected).
  std::optional<std::vector<char>> load(const CacheKey& key);
  // Writes the entry; false (counted, warned once) when it cannot.
  bool store(const CacheKey& key, const std::vector<char>& payload);

  void count_hit();
  void count_miss();
  CacheStats stats() const;

  // Entries larger than this are rejected unread (a cubin is at most a few MB).
  static constexpr std::uint64_t kMaxEntryBytes = std::uint64_t{1} << 30;

 private:
  // Checks (and creates) the directory once; false when it is refused or cannot be made.
  bool usable(bool creating);
  void reject(const std::filesystem::path& path, const std::string& why);
  bool write_failed(const std::string& why);

  std::filesystem::path directory_;
  bool enabled_;
  char magic_[8];
  std::string suffix_;
  mutable std::mutex mutex_;
  CacheStats stats_;
  bool checked_ = false;    // the directory exists and passed the checks
  bool refused_ = false;    // refused for good (unsafe permissions)
  bool no_writes_ = false;  // a write failed: stop trying (read-only or full)
};

}  // namespace cellfuse
