// libFuzzer target for the disk cache's entry loader (runtime/disk_cache.h, the CUDA kernel
// cache's file format). Every input is written as the entry file of a fixed key, twice:
//   - raw: the bytes as they are;
//   - framed: a well-formed header (magic, version, size, key, length, checksum) around the bytes
//     after the first, whose first byte's low bits spoil one header field each (so the fuzzer
//     reaches the checks after the checksum, and the checks of each field).
// Properties: load() never crashes, never returns bytes a valid entry would not hold (a payload it
// returns is exactly the file after its 48-byte header, under the right magic and length), and
// returns the framed payload exactly when no field was spoiled. Every rejection warns on stderr:
// run it with -close_fd_mask=2 (libFuzzer keeps its own copy of stderr for its reports).
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "runtime/disk_cache.h"

namespace {

constexpr char kMagic[8] = {'C', 'F', 'C', 'U', 'B', 'I', 'N', '\0'};

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_cache_entry: %s\n", what);
  __builtin_trap();
}

std::uint64_t fnv1a(const char* data, std::size_t size) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (std::size_t i = 0; i < size; ++i) h = (h ^ static_cast<unsigned char>(data[i])) * 0x100000001b3ull;
  return h;
}

const std::filesystem::path& directory() {
  static const std::filesystem::path dir = [] {
    std::string pattern = (std::filesystem::temp_directory_path() / "cellfuse_fuzz_cache_XXXXXX").string();
    if (!::mkdtemp(pattern.data())) fail("mkdtemp");
    return std::filesystem::path(pattern);
  }();
  return dir;
}

void write_file(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

template <class T>
void put(std::string& s, T v) {
  s.append(reinterpret_cast<const char*>(&v), sizeof v);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  cellfuse::DiskCache cache(directory(), true, kMagic, ".cubin");
  const cellfuse::CacheKey key = cellfuse::content_key("fuzz", {"key"});
  const std::string raw(reinterpret_cast<const char*>(data), size);

  write_file(cache.entry_path(key), raw);
  if (auto got = cache.load(key)) {
    if (raw.size() < 48 || std::memcmp(raw.data(), kMagic, 8) != 0) fail("loaded an entry without the magic");
    if (got->size() != raw.size() - 48 || std::memcmp(got->data(), raw.data() + 48, got->size()) != 0)
      fail("loaded bytes that are not the file's payload");
  }

  const std::uint8_t spoil = size ? data[0] : 0;
  const std::string payload = size ? raw.substr(1) : std::string();
  std::string framed(kMagic, 8);
  put<std::uint32_t>(framed, (spoil & 1) ? 2u : 1u);
  put<std::uint32_t>(framed, (spoil & 2) ? 40u : 48u);
  put<std::uint64_t>(framed, key.hi ^ ((spoil & 4) ? 1u : 0u));
  put<std::uint64_t>(framed, key.lo);
  put<std::uint64_t>(framed, payload.size() + ((spoil & 8) ? 1u : 0u));
  put<std::uint64_t>(framed, fnv1a(payload.data(), payload.size()) ^ ((spoil & 16) ? 0x100u : 0u));
  framed += payload;
  write_file(cache.entry_path(key), framed);
  const auto got = cache.load(key);
  const bool valid = (spoil & 31) == 0 && !payload.empty();
  if (valid && (!got || std::string(got->begin(), got->end()) != payload)) fail("a valid entry was not loaded");
  if (!valid && got) fail("a spoiled entry was loaded");
  return 0;
}
