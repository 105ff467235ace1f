// The machine's ceilings for the report's fractions: the f32 matrix-product rate and the memory
// bandwidth, measured once per machine (per CPU model and thread count, per GPU) and kept in the
// cache directory as a two-line text file, so that a report costs no measurement after the first.
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "compiler/ir/error.h"
#include "runtime/profile/ceilings.h"
#include "runtime/profile/profiler.h"

namespace cellfuse {
namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// The same directory rule as the CUDA kernel cache (runtime/cuda/kernel_cache.h).
std::filesystem::path cache_directory() {
  if (std::string dir = env("CELLFUSE_CACHE_DIR"); !dir.empty()) return dir;
  if (std::string xdg = env("XDG_CACHE_HOME"); !xdg.empty()) return std::filesystem::path(xdg) / "cellfuse";
  if (std::string home = env("HOME"); !home.empty()) return std::filesystem::path(home) / ".cache" / "cellfuse";
  return std::filesystem::temp_directory_path() / "cellfuse-cache";
}

std::string file_name(const std::string& device) {
  std::string out = "ceilings-";
  for (char c : device) out += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return out + ".txt";
}

bool read_cached(const std::filesystem::path& path, MachineCeilings& c) {
  std::ifstream in(path);
  if (!in) return false;
  std::string key;
  double gflops = 0, gbytes = 0, cache = 0;
  if (!(in >> key >> gflops) || key != "gflops" || !(in >> key >> gbytes) || key != "gbytes" || !(in >> key >> cache) ||
      key != "gbytes_cache")
    return false;
  if (!(gflops > 0) || !(gbytes > 0) || !(cache > 0)) return false;
  c.gflops = gflops;
  c.gbytes = gbytes;
  c.gbytes_cache = cache;
  return true;
}

}  // namespace

MachineCeilings machine_ceilings(const std::string& target) {
  MachineCeilings c;
  if (target == "cuda") c.device = profile::cuda_description();
  else if (target == "cpu") c.device = profile::cpu_description();
  else throw Error("profiler: no ceilings for target '" + target + "' (cpu or cuda)");
  const bool cached = env("CELLFUSE_CACHE") != "0";
  const std::filesystem::path path = cache_directory() / file_name(c.device);
  if (cached && read_cached(path, c)) {
    c.cache_file = path.string();
    c.from_cache = true;
    return c;
  }
  const MachineCeilings measured = target == "cuda" ? profile::measure_cuda_ceilings() : profile::measure_cpu_ceilings();
  c.gflops = measured.gflops;
  c.gbytes = measured.gbytes;
  c.gbytes_cache = measured.gbytes_cache;
  if (!cached) return c;
  // Written to a temporary name and renamed: a reader never sees half a file.
  std::error_code ec;
  std::filesystem::create_directories(path.parent_path(), ec);
  const std::filesystem::path tmp = path.string() + ".tmp" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
  {
    std::ofstream out(tmp);
    out.precision(17);
    out << "gflops " << c.gflops << "\ngbytes " << c.gbytes << "\ngbytes_cache " << c.gbytes_cache << "\n";
  }
  std::filesystem::rename(tmp, path, ec);
  if (!ec) c.cache_file = path.string();
  else std::filesystem::remove(tmp, ec);
  return c;
}

}  // namespace cellfuse
