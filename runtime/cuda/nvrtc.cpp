#include "runtime/cuda/nvrtc.h"

#include <nvrtc.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <memory>

namespace cellfuse::cuda {
namespace {

std::atomic<std::size_t> g_compiles{0};

void check(nvrtcResult result, const char* call) {
  if (result != NVRTC_SUCCESS)
    throw Error(std::string("NVRTC: ") + call + " failed: " + nvrtcGetErrorString(result));
}

// The source with line numbers, as a compiler log refers to them.
std::string numbered(const std::string& source) {
  std::string out;
  int line = 1;
  std::size_t start = 0;
  while (start < source.size()) {
    std::size_t end = source.find('\n', start);
    if (end == std::string::npos) end = source.size();
    char prefix[16];
    std::snprintf(prefix, sizeof prefix, "%5d  ", line++);
    out += prefix + source.substr(start, end - start) + "\n";
    start = end + 1;
  }
  return out;
}

struct ProgramDeleter {
  void operator()(nvrtcProgram p) const { nvrtcDestroyProgram(&p); }
};
using Program = std::unique_ptr<std::remove_pointer_t<nvrtcProgram>, ProgramDeleter>;

}  // namespace

std::string nvrtc_version() {
  int major = 0, minor = 0;
  check(nvrtcVersion(&major, &minor), "nvrtcVersion");
  return std::to_string(major) + "." + std::to_string(minor);
}

std::vector<int> nvrtc_architectures() {
  int count = 0;
  check(nvrtcGetNumSupportedArchs(&count), "nvrtcGetNumSupportedArchs");
  std::vector<int> archs(static_cast<std::size_t>(count));
  if (count > 0) check(nvrtcGetSupportedArchs(archs.data()), "nvrtcGetSupportedArchs");
  std::sort(archs.begin(), archs.end());
  return archs;
}

std::string architecture_for(int major, int minor) {
  const int wanted = major * 10 + minor;
  int best = -1;
  for (int a : nvrtc_architectures())
    if (a / 10 == major && a <= wanted) best = std::max(best, a);
  if (best < 0) {
    std::string known;
    for (int a : nvrtc_architectures()) known += " sm_" + std::to_string(a);
    throw Error("NVRTC " + nvrtc_version() + " cannot compile for a device of compute capability " +
                std::to_string(major) + "." + std::to_string(minor) + " (it knows" + known + ")");
  }
  return "sm_" + std::to_string(best);
}

std::vector<std::string> default_options() {
  return {"--std=c++17", "--prec-div=true", "--prec-sqrt=true", "--ftz=false", "--fmad=true"};
}

std::vector<char> compile_to_cubin(const std::string& source, const std::string& architecture,
                                   const std::vector<std::string>& extra_options, const std::string& name) {
  nvrtcProgram raw = nullptr;
  check(nvrtcCreateProgram(&raw, source.c_str(), name.c_str(), 0, nullptr, nullptr), "nvrtcCreateProgram");
  Program program(raw);
  std::vector<std::string> options = default_options();
  options.push_back("--gpu-architecture=" + architecture);
  options.insert(options.end(), extra_options.begin(), extra_options.end());
  std::vector<const char*> argv;
  for (const auto& o : options) argv.push_back(o.c_str());
  ++g_compiles;
  nvrtcResult result = nvrtcCompileProgram(raw, static_cast<int>(argv.size()), argv.data());
  std::string log;
  std::size_t log_size = 0;
  if (nvrtcGetProgramLogSize(raw, &log_size) == NVRTC_SUCCESS && log_size > 1) {
    log.resize(log_size);
    if (nvrtcGetProgramLog(raw, log.data()) != NVRTC_SUCCESS) log.clear();
    while (!log.empty() && (log.back() == '\0' || log.back() == '\n')) log.pop_back();
  }
  if (result != NVRTC_SUCCESS) {
    std::string opts;
    for (const auto& o : options) opts += " " + o;
    throw CompileError("NVRTC " + nvrtc_version() + " failed to compile " + name + " for " + architecture + ": " +
                           nvrtcGetErrorString(result) + "\noptions:" + opts + "\n--- NVRTC log ---\n" + log +
                           "\n--- source ---\n" + numbered(source),
                       log, source);
  }
  std::size_t size = 0;
  check(nvrtcGetCUBINSize(raw, &size), "nvrtcGetCUBINSize");
  if (size == 0)
    throw Error("NVRTC compiled " + name + " but produced no cubin for " + architecture +
                " (a virtual architecture compute_XY gives PTX only; ask for sm_XY)");
  std::vector<char> cubin(size);
  check(nvrtcGetCUBIN(raw, cubin.data()), "nvrtcGetCUBIN");
  return cubin;
}

std::size_t nvrtc_compile_count() { return g_compiles.load(); }

}  // namespace cellfuse::cuda
