#include "runtime/disk_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>

namespace cellfuse {
namespace {

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

std::string octal_mode(mode_t mode) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0%03o", static_cast<unsigned>(mode & 07777));
  return buf;
}

// Reads a whole file descriptor; false on a read error.
bool read_all(int fd, std::vector<char>& out, std::size_t size) {
  out.resize(size);
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::read(fd, out.data() + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
  out.resize(done);
  return done == size;
}

}  // namespace

std::string CacheKey::hex() const {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(hi), static_cast<unsigned long long>(lo));
  return buf;
}

CacheKey content_key(const std::string& kind, const std::vector<std::string>& fields) {
  // Every field with its length in front, so that no two different field lists hash alike.
  std::string material = kind;
  for (const auto& s : fields) material += std::to_string(s.size()) + ":" + s + ";";
  return CacheKey{fnv1a(material.data(), material.size()), chunk_hash(material.data(), material.size())};
}

DiskCache::DiskCache(std::filesystem::path directory, bool enabled, const char (&magic)[8], std::string suffix)
    : directory_(std::move(directory)), enabled_(enabled), suffix_(std::move(suffix)) {
  std::memcpy(magic_, magic, sizeof magic_);
}

std::filesystem::path DiskCache::entry_path(const CacheKey& key) const { return directory_ / (key.hex() + suffix_); }

bool DiskCache::usable(bool creating) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (refused_) return false;
  if (checked_) return true;
  struct stat st {};
  if (::stat(directory_.c_str(), &st) != 0) {
    if (!creating) return false;  // nothing cached yet: a plain miss
    std::error_code ec;
    if (directory_.has_parent_path()) std::filesystem::create_directories(directory_.parent_path(), ec);
    if (::mkdir(directory_.c_str(), 0700) != 0 && errno != EEXIST) {
      const std::string why = "cannot create " + directory_.string() + ": " + std::strerror(errno);
      lock.unlock();
      return write_failed(why);
    }
    if (::stat(directory_.c_str(), &st) != 0) {
      lock.unlock();
      return write_failed("cannot create " + directory_.string() + ": " + std::strerror(errno));
    }
  }
  std::string unsafe;
  if (!S_ISDIR(st.st_mode)) {
    lock.unlock();
    if (creating) write_failed("cannot create " + directory_.string() + ": it exists and is not a directory");
    return false;
  }
  if (st.st_uid != ::geteuid())
    unsafe = "it belongs to another user (uid " + std::to_string(st.st_uid) + "; this process runs as uid " +
             std::to_string(::geteuid()) + ")";
  else if (st.st_mode & (S_IWGRP | S_IWOTH))
    unsafe = "its group or other users can write to it (mode " + octal_mode(st.st_mode) + ")";
  if (!unsafe.empty()) {
    refused_ = true;
    stats_.refused = unsafe;
    std::fprintf(stderr,
                 "cellfuse: warning: not using the cache directory %s: %s, so anyone who can write there could "
                 "plant code that cellfuse would load. Make it private (chmod 700 %s) or set CELLFUSE_CACHE_DIR to a "
                 "directory of your own; running without the disk cache.\n",
                 directory_.c_str(), unsafe.c_str(), directory_.c_str());
    return false;
  }
  checked_ = true;
  return true;
}

void DiskCache::reject(const std::filesystem::path& path, const std::string& why) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.rejected;
  }
  std::fprintf(stderr, "cellfuse: warning: ignoring the cache entry %s: %s; compiling again\n", path.c_str(), why.c_str());
}

bool DiskCache::write_failed(const std::string& why) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++stats_.write_failures;
  stats_.last_write_error = why;
  if (!no_writes_)
    std::fprintf(stderr, "cellfuse: warning: the disk cache cannot be written (%s); running without storing to it\n",
                 why.c_str());
  no_writes_ = true;
  return false;
}

std::optional<std::vector<char>> DiskCache::load(const CacheKey& key) {
  if (!enabled_ || !usable(false)) return std::nullopt;
  const std::filesystem::path path = entry_path(key);
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::nullopt;  // no entry: a plain miss
    reject(path, std::string("cannot open it: ") + std::strerror(errno));
    return std::nullopt;
  }
  struct stat st {};
  std::vector<char> bytes;
  std::string why;
  if (::fstat(fd, &st) != 0) why = std::string("cannot stat it: ") + std::strerror(errno);
  else if (!S_ISREG(st.st_mode)) why = "not a regular file";
  else if (st.st_uid != ::geteuid()) why = "it belongs to another user (uid " + std::to_string(st.st_uid) + ")";
  else if (static_cast<std::uint64_t>(st.st_size) > kMaxEntryBytes) why = "larger than any entry (" + std::to_string(st.st_size) + " bytes)";
  else if (!read_all(fd, bytes, static_cast<std::size_t>(st.st_size))) why = "cannot read it whole";
  ::close(fd);
  if (!why.empty()) {
    reject(path, why);
    return std::nullopt;
  }
  if (bytes.size() < sizeof(Header)) {
    reject(path, "truncated (" + std::to_string(bytes.size()) + " bytes, shorter than the header)");
    return std::nullopt;
  }
  Header h;
  std::memcpy(&h, bytes.data(), sizeof h);
  if (std::memcmp(h.magic, magic_, sizeof magic_) != 0) why = "not an entry of this cache (wrong magic)";
  else if (h.version != kFormatVersion || h.header_size != sizeof(Header)) why = "another format version (" + std::to_string(h.version) + ")";
  else if (h.key_hi != key.hi || h.key_lo != key.lo) why = "the entry of another key";
  else if (h.length == 0 || h.length != bytes.size() - sizeof(Header))
    why = "truncated or padded (the header says " + std::to_string(h.length) + " payload bytes, the file has " +
          std::to_string(bytes.size() - sizeof(Header)) + ")";
  else if (fnv1a(bytes.data() + sizeof(Header), bytes.size() - sizeof(Header)) != h.checksum)
    why = "corrupt (its checksum does not match)";
  if (!why.empty()) {
    reject(path, why);
    return std::nullopt;
  }
  return std::vector<char>(bytes.begin() + static_cast<std::ptrdiff_t>(sizeof(Header)), bytes.end());
}

bool DiskCache::store(const CacheKey& key, const std::vector<char>& payload) {
  if (!enabled_) return false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (no_writes_) {
      ++stats_.write_failures;
      return false;
    }
  }
  if (!usable(true)) return false;
  Header h{};
  std::memcpy(h.magic, magic_, sizeof magic_);
  h.version = kFormatVersion;
  h.header_size = sizeof(Header);
  h.key_hi = key.hi;
  h.key_lo = key.lo;
  h.length = payload.size();
  h.checksum = fnv1a(payload.data(), payload.size());
  // A name no other writer uses: this process, a counter and a random word.
  static std::atomic<std::uint64_t> counter{0};
  thread_local std::mt19937_64 rng{std::random_device{}()};
  const std::filesystem::path final_path = entry_path(key);
  const std::string temp = final_path.string() + ".tmp." + std::to_string(::getpid()) + "." +
                           std::to_string(counter++) + "." + std::to_string(rng() % 1000000007u);
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return write_failed("cannot write " + temp + ": " + std::strerror(errno));
  std::string error;
  auto put = [&](const char* p, std::size_t n) {
    while (n > 0 && error.empty()) {
      const ssize_t w = ::write(fd, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) error = std::string("cannot write ") + temp + ": " + (w < 0 ? std::strerror(errno) : "short write");
      else {
        p += w;
        n -= static_cast<std::size_t>(w);
      }
    }
  };
  put(reinterpret_cast<const char*>(&h), sizeof h);
  put(payload.data(), payload.size());
  if (::close(fd) != 0 && error.empty()) error = "cannot write " + temp + ": " + std::strerror(errno);
  if (error.empty() && std::rename(temp.c_str(), final_path.c_str()) != 0)
    error = "cannot rename " + temp + " to " + final_path.string() + ": " + std::strerror(errno);
  if (!error.empty()) {
    ::unlink(temp.c_str());
    return write_failed(error);
  }
  return true;
}

void DiskCache::count_hit() {
  std::lock_guard<std::mutex> lock(mutex_);
  ++stats_.hits;
}

void DiskCache::count_miss() {
  std::lock_guard<std::mutex> lock(mutex_);
  ++stats_.misses;
}

CacheStats DiskCache::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

}  // namespace cellfuse
