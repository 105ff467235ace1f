// The disk cache's file format and safety rules (runtime/disk_cache.h), which the CUDA kernel
// cache stores cubins with: entries verified before they are handed out, damaged ones rejected
// with a warning, atomic writes under concurrent writers, unsafe directories refused, and
// unwritable or full disks degrading to no cache.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <algorithm>
#include <atomic>
#include <functional>
#include <thread>

#include "runtime/disk_cache.h"

namespace cellfuse {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr char kMagic[8] = {'C', 'F', 'T', 'E', 'S', 'T', '\0', '\0'};

class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "cellfuse_disk_cache_XXXXXX").string();
    path_ = ::mkdtemp(pattern.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::permissions(path_, fs::perms::owner_all, ec);
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::vector<char> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }

TEST(DiskCache, StoresAndLoadsInAPrivateDirectory) {
  TempDir tmp;
  const fs::path dir = tmp.path() / "made" / "here";
  DiskCache cache(dir, true, kMagic, ".bin");
  const CacheKey key = content_key("test v1", {"source", "compiler 1.0", "sm_90"});
  EXPECT_FALSE(cache.load(key));  // no directory yet: a plain miss, nothing created
  EXPECT_FALSE(fs::exists(dir));
  const auto payload = bytes_of("a compiled artifact \x01\x02\x03");
  ASSERT_TRUE(cache.store(key, payload));
  EXPECT_EQ(fs::status(dir).permissions() & fs::perms::all, fs::perms::owner_all) << "the directory is created 0700";
  EXPECT_EQ(fs::status(cache.entry_path(key)).permissions() & fs::perms::all, fs::perms::owner_read | fs::perms::owner_write);
  auto loaded = cache.load(key);
  ASSERT_TRUE(loaded);
  EXPECT_EQ(*loaded, payload);
  EXPECT_EQ(cache.stats().rejected, 0u);
  // Nothing but the entry is left (the temporary file was renamed).
  std::size_t files = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    EXPECT_EQ(e.path().extension(), ".bin") << e.path();
    ++files;
  }
  EXPECT_EQ(files, 1u);
}

TEST(DiskCache, KeysSeparateEveryField) {
  const CacheKey k = content_key("kind", {"ab", "c"});
  EXPECT_EQ(k, content_key("kind", {"ab", "c"}));
  EXPECT_FALSE(k == content_key("kind", {"a", "bc"}));
  EXPECT_FALSE(k == content_key("kind", {"ab", "c", ""}));
  EXPECT_FALSE(k == content_key("kind2", {"ab", "c"}));
  EXPECT_EQ(k.hex().size(), 32u);
}

// Each damage makes load() a miss with one rejection and a warning naming the file and the fault;
// storing again makes the entry whole.
void expect_rejected(const std::function<void(const fs::path&)>& damage, const std::string& fault,
                     bool restorable = true) {
  TempDir tmp;
  DiskCache cache(tmp.path(), true, kMagic, ".bin");
  const CacheKey key = content_key("test v1", {"the source"});
  const auto payload = bytes_of(std::string(300, 'x') + "end");
  ASSERT_TRUE(cache.store(key, payload));
  damage(cache.entry_path(key));
  ::testing::internal::CaptureStderr();
  EXPECT_FALSE(cache.load(key)) << fault;
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(err, HasSubstr("cellfuse: warning: ignoring the cache entry " + cache.entry_path(key).string())) << fault;
  EXPECT_THAT(err, HasSubstr(fault));
  EXPECT_EQ(cache.stats().rejected, 1u) << fault;
  if (!restorable) return;
  ASSERT_TRUE(cache.store(key, payload));
  EXPECT_EQ(cache.load(key), payload) << fault;
}

void overwrite(const fs::path& p, std::streamoff at, const std::string& bytes) {
  std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(at);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

TEST(DiskCache, RejectsDamagedEntriesWithAWarning) {
  expect_rejected([](const fs::path& p) { fs::resize_file(p, fs::file_size(p) / 2); }, "truncated or padded");
  expect_rejected([](const fs::path& p) { fs::resize_file(p, 20); }, "shorter than the header");
  expect_rejected([](const fs::path& p) { fs::resize_file(p, 0); }, "shorter than the header");
  expect_rejected([](const fs::path& p) { overwrite(p, static_cast<std::streamoff>(fs::file_size(p) - 5), "Z"); }, "checksum");
  expect_rejected([](const fs::path& p) { overwrite(p, 0, "NOTMAGIC"); }, "wrong magic");
  expect_rejected([](const fs::path& p) { overwrite(p, 8, std::string("\x07\0\0\0", 4)); }, "another format version");
  expect_rejected([](const fs::path& p) { overwrite(p, 16, "someone else's key"); }, "another key");
  expect_rejected([](const fs::path& p) { std::ofstream(p, std::ios::binary | std::ios::app) << "tail"; }, "truncated or padded");
  expect_rejected(
      [](const fs::path& p) {
        fs::remove(p);
        fs::create_directory(p);
      },
      "not a regular file", false);
  expect_rejected(
      [](const fs::path& p) {
        // A symbolic link planted in place of the entry is not followed.
        const fs::path target = p.string() + ".elsewhere";
        fs::rename(p, target);
        fs::create_symlink(target, p);
      },
      "cannot open it");
}

TEST(DiskCache, RefusesADirectoryOthersCanWrite) {
  for (auto mode : {fs::perms::owner_all | fs::perms::group_all | fs::perms::others_all,
                    fs::perms::owner_all | fs::perms::group_write | fs::perms::group_exec,
                    fs::perms::owner_all | fs::perms::others_write | fs::perms::others_exec | fs::perms::sticky_bit}) {
    TempDir tmp;
    const CacheKey key = content_key("test v1", {"source"});
    {
      DiskCache writer(tmp.path(), true, kMagic, ".bin");
      ASSERT_TRUE(writer.store(key, bytes_of("payload")));
    }
    fs::permissions(tmp.path(), mode);
    DiskCache cache(tmp.path(), true, kMagic, ".bin");
    ::testing::internal::CaptureStderr();
    EXPECT_FALSE(cache.load(key)) << "an entry in a directory others can write is never loaded";
    EXPECT_FALSE(cache.store(key, bytes_of("payload")));
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_THAT(err, HasSubstr("not using the cache directory " + tmp.path().string()));
    EXPECT_THAT(err, HasSubstr("its group or other users can write to it"));
    EXPECT_THAT(err, HasSubstr("chmod 700"));
    EXPECT_THAT(cache.stats().refused, HasSubstr("mode 0"));
  }
}

// Ownership needs root to set up (chown); CI runs as root.
TEST(DiskCache, RefusesADirectoryOrEntryOfAnotherUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to chown (CI runs as root)";
  TempDir tmp;
  const CacheKey key = content_key("test v1", {"source"});
  {
    DiskCache writer(tmp.path(), true, kMagic, ".bin");
    ASSERT_TRUE(writer.store(key, bytes_of("payload")));
    // The entry handed to another user: rejected, the directory still used.
    ASSERT_EQ(::chown(writer.entry_path(key).c_str(), 65534, 65534), 0);
    ::testing::internal::CaptureStderr();
    EXPECT_FALSE(writer.load(key));
    EXPECT_THAT(::testing::internal::GetCapturedStderr(), HasSubstr("it belongs to another user (uid 65534)"));
  }
  ASSERT_EQ(::chown(tmp.path().c_str(), 65534, 65534), 0);
  DiskCache cache(tmp.path(), true, kMagic, ".bin");
  ::testing::internal::CaptureStderr();
  EXPECT_FALSE(cache.load(key));
  EXPECT_THAT(::testing::internal::GetCapturedStderr(), HasSubstr("it belongs to another user (uid 65534"));
  EXPECT_THAT(cache.stats().refused, HasSubstr("another user"));
}

TEST(DiskCache, AnUncreatableDirectoryDegradesToNoCache) {
  TempDir tmp;
  const fs::path file = tmp.path() / "a_file";
  std::ofstream(file) << "not a directory";
  DiskCache cache(file / "cache", true, kMagic, ".bin");
  const CacheKey key = content_key("test v1", {"source"});
  ::testing::internal::CaptureStderr();
  EXPECT_FALSE(cache.store(key, bytes_of("payload")));
  EXPECT_FALSE(cache.store(key, bytes_of("payload")));
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(err, HasSubstr("the disk cache cannot be written"));
  EXPECT_EQ(err.find("cannot be written", err.find("cannot be written") + 1), std::string::npos) << "warned once: " << err;
  EXPECT_FALSE(cache.load(key));
  EXPECT_EQ(cache.stats().write_failures, 2u);
  EXPECT_THAT(cache.stats().last_write_error, HasSubstr("cannot create"));
}

// A read-only file system: /proc takes no new files (as root the permission bits would not stop a
// write, a read-only mount does).
TEST(DiskCache, AReadOnlyDirectoryDegradesToNoCache) {
  if (::geteuid() != 0) GTEST_SKIP() << "/proc belongs to root: as another user it is refused before any write";
  DiskCache cache("/proc", true, kMagic, ".bin");
  const CacheKey key = content_key("test v1", {"source"});
  ::testing::internal::CaptureStderr();
  EXPECT_FALSE(cache.store(key, bytes_of("payload")));
  EXPECT_THAT(::testing::internal::GetCapturedStderr(), HasSubstr("the disk cache cannot be written"));
  EXPECT_FALSE(cache.load(key));
  EXPECT_EQ(cache.stats().write_failures, 1u);
}

// A full disk, as a file-size limit: the write fails part way (EFBIG, as ENOSPC would), the
// temporary file is removed, nothing is left under the entry's name, and the cache stops writing.
TEST(DiskCache, AFullDiskDegradesToNoCache) {
  TempDir tmp;
  DiskCache cache(tmp.path(), true, kMagic, ".bin");
  const CacheKey key = content_key("test v1", {"source"});
  struct rlimit old {};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
  auto* previous = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = old;
  small.rlim_cur = 100;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  ::testing::internal::CaptureStderr();
  const bool stored = cache.store(key, bytes_of(std::string(4096, 'x')));
  const std::string err = ::testing::internal::GetCapturedStderr();
  ::setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, previous);
  EXPECT_FALSE(stored);
  EXPECT_THAT(err, HasSubstr("the disk cache cannot be written"));
  EXPECT_TRUE(fs::is_empty(tmp.path())) << "the partial temporary file is removed";
  EXPECT_FALSE(cache.load(key));
  EXPECT_FALSE(cache.store(key, bytes_of("small"))) << "no more writes after a failure";
}

// Many writers of one key and readers at once: a reader sees no entry or one writer's whole
// payload, never a mix, a torn file or a rejection.
TEST(DiskCache, ConcurrentWritersNeverTearAnEntry) {
  TempDir tmp;
  const CacheKey key = content_key("test v1", {"shared"});
  std::vector<std::vector<char>> payloads;
  for (int w = 0; w < 4; ++w) payloads.push_back(std::vector<char>(200000 + static_cast<std::size_t>(w) * 777, static_cast<char>('a' + w)));
  std::atomic<int> bad{0}, seen{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < 4; ++w)
    threads.emplace_back([&, w] {
      DiskCache cache(tmp.path(), true, kMagic, ".bin");
      for (int i = 0; i < 20; ++i) {
        cache.store(key, payloads[static_cast<std::size_t>(w)]);
        if (auto got = cache.load(key)) {
          ++seen;
          if (std::find(payloads.begin(), payloads.end(), *got) == payloads.end()) ++bad;
        }
        if (cache.stats().rejected != 0) ++bad;
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GT(seen.load(), 0);
}

TEST(DiskCache, DisabledDoesNothing) {
  TempDir tmp;
  DiskCache cache(tmp.path() / "off", false, kMagic, ".bin");
  const CacheKey key = content_key("test v1", {"source"});
  EXPECT_FALSE(cache.store(key, bytes_of("payload")));
  EXPECT_FALSE(cache.load(key));
  EXPECT_FALSE(fs::exists(tmp.path() / "off"));
}

}  // namespace
}  // namespace cellfuse
