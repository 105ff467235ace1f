// The layers of ../shared/DESIGN.md ("Layers") as the sources include them: the runtime, the CLI
// and the Python module reach the compiler through its public pipeline (compiler/pipeline.h),
// never its passes; the compiler includes nothing of the runtime.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

// "path:line: text" of every #include line under `dir` (relative to the source tree) that names
// something starting with `forbidden`.
std::vector<std::string> includes_of(const std::string& dir, const std::string& forbidden) {
  std::vector<std::string> found;
  const fs::path root = fs::path(CELLFUSE_SOURCE_DIR) / dir;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    const auto ext = entry.path().extension().string();
    if (!entry.is_regular_file() || (ext != ".h" && ext != ".cpp" && ext != ".cu" && ext != ".cuh")) continue;
    std::ifstream in(entry.path());
    std::string line;
    for (int n = 1; std::getline(in, line); ++n)
      if (line.rfind("#include", 0) == 0 && line.find("\"" + forbidden) != std::string::npos)
        found.push_back(fs::relative(entry.path(), CELLFUSE_SOURCE_DIR).string() + ":" + std::to_string(n) + ": " + line);
  }
  return found;
}

TEST(Layers, RuntimeCliAndPythonUseThePipelineNotThePasses) {
  for (const char* dir : {"runtime", "frontend/cli", "python/src"}) {
    ASSERT_TRUE(fs::is_directory(fs::path(CELLFUSE_SOURCE_DIR) / dir)) << dir;
    EXPECT_EQ(includes_of(dir, "compiler/passes/"), std::vector<std::string>{}) << dir;
  }
}

TEST(Layers, CompilerIncludesNothingOfTheRuntime) {
  EXPECT_EQ(includes_of("compiler", "runtime/"), std::vector<std::string>{});
}

}  // namespace
