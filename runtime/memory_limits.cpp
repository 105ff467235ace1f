#include "runtime/memory_limits.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "compiler/ir/error.h"

namespace cellfuse {
namespace {

std::string dims_text(const std::vector<std::int64_t>& dims) {
  std::string s = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? "," : "") + std::to_string(dims[i]);
  return s + "]";
}

}  // namespace

std::string format_bytes(double bytes) {
  char buf[64];
  if (bytes >= 1024.0 * 1024 * 1024) std::snprintf(buf, sizeof buf, "%.1f GiB", bytes / (1024.0 * 1024 * 1024));
  else if (bytes >= 1024.0 * 1024) std::snprintf(buf, sizeof buf, "%.1f MiB", bytes / (1024.0 * 1024));
  else std::snprintf(buf, sizeof buf, "%.0f bytes", bytes);
  return buf;
}

std::uint64_t available_memory_bytes() {
  std::ifstream meminfo("/proc/meminfo");
  std::uint64_t available = 0, swap = 0;
  bool found = false;
  std::string line;
  while (std::getline(meminfo, line)) {
    std::istringstream s(line);
    std::string key;
    std::uint64_t kb = 0;
    s >> key >> kb;
    if (key == "MemAvailable:") {
      available = kb * 1024;
      found = true;
    } else if (key == "SwapFree:") {
      swap = kb * 1024;
    }
  }
  if (found) return available + swap;
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page) : UINT64_MAX;
}

std::size_t checked_bytes(const std::vector<std::int64_t>& dims, std::size_t element_bytes, const std::string& what) {
  std::uint64_t n = element_bytes;
  bool overflow = false;
  for (std::int64_t d : dims) {
    if (d < 0) throw Error(what + ": negative dimension in " + dims_text(dims));
    overflow = overflow || __builtin_mul_overflow(n, static_cast<std::uint64_t>(d), &n);
  }
  if (overflow || n > static_cast<std::uint64_t>(PTRDIFF_MAX))
    throw Error("cannot allocate " + what + " of " + dims_text(dims) + " elements of " + std::to_string(element_bytes) +
                " bytes: the size overflows 64 bits");
  // Small buffers are not worth reading /proc/meminfo for.
  if (n >= (std::uint64_t{256} << 20)) {
    const std::uint64_t available = available_memory_bytes();
    if (n > available)
      throw Error("cannot allocate " + what + " of " + dims_text(dims) + " (" + format_bytes(static_cast<double>(n)) +
                  "): only " + format_bytes(static_cast<double>(available)) + " of memory is available");
  }
  return static_cast<std::size_t>(n);
}

}  // namespace cellfuse
