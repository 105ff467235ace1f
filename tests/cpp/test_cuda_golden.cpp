// Golden tests of the printed IR: for each standard cell and two research cells traced from
// PyTorch (tests/golden/cells/*.cell, made by tests/golden/make_research_cells.py), what compile()
// prints after fusion, the backward cell, the kernel IR and the CUDA source are checked in under
// tests/golden/<cell>/ and compared here. A change to the passes, fusion or code generation shows
// up as a readable diff of those files: rewrite them with tests/golden/update.sh (or
// CELLFUSE_UPDATE_GOLDEN=1 in the environment of this test) and review the diff in the change.
//
// Every text is host-independent: the CPU's fusion and kernel IR before its target rewrites
// (weight panels follow the host's vector width), the CUDA source for no particular GPU.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "compiler/ir/text.h"
#include "compiler/pipeline.h"
#include "frontend/cells.h"

namespace cellfuse {
namespace {

namespace fs = std::filesystem;

const fs::path kGolden = fs::path(CELLFUSE_SOURCE_DIR) / "tests" / "golden";

struct Case {
  const char* name;  // the directory under tests/golden
  const char* spec;  // a built-in cell spec, or a .cell file under tests/golden/cells
};

Cell load(const Case& c) {
  const std::string spec = c.spec;
  if (spec.size() > 5 && spec.substr(spec.size() - 5) == ".cell") return load_cell_file((kGolden / "cells" / spec).string());
  return cells::by_spec(spec, DType::f32);
}

const std::string& stage_text(const CompiledCell& c, const std::string& name) {
  for (const StageLog& s : c.log)
    if (s.name == name) return s.text;
  throw std::runtime_error("no stage '" + name + "' in the log");
}

std::string read(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The first line where `want` and `got` differ, for a readable failure.
std::string first_difference(const std::string& want, const std::string& got) {
  std::istringstream a(want), b(got);
  std::string la, lb;
  for (int line = 1;; ++line) {
    const bool ha = static_cast<bool>(std::getline(a, la)), hb = static_cast<bool>(std::getline(b, lb));
    if (!ha && !hb) return "(no line differs; line endings?)";
    if (!ha || !hb || la != lb)
      return "line " + std::to_string(line) + ":\n  golden: " + (ha ? la : "<end>") + "\n  now:    " + (hb ? lb : "<end>");
  }
}

void check(const Case& c, const std::string& file, const std::string& text) {
  const fs::path path = kGolden / c.name / file;
  const char* update = std::getenv("CELLFUSE_UPDATE_GOLDEN");
  if (update && std::string(update) == "1") {
    fs::create_directories(path.parent_path());
    std::ofstream(path, std::ios::binary) << text;
    return;
  }
  ASSERT_TRUE(fs::exists(path)) << path << " is missing: run tests/golden/update.sh";
  const std::string golden = read(path);
  EXPECT_EQ(golden, text) << path << " differs from what compile() prints now, at "
                          << first_difference(golden, text)
                          << "\nIf the change is intended, run tests/golden/update.sh and review the diff.";
}

class Golden : public ::testing::TestWithParam<Case> {};

TEST_P(Golden, PrintedIrMatchesTheCheckedInText) {
  const Case& c = GetParam();
  const Cell cell = load(c);
  TargetOptions cpu;
  cpu.target = Target::Cpu;
  cpu.batch = 1;
  cpu.stage_text = true;
  const CompiledCell forward = compile(cell, cpu);
  check(c, "fusion.txt", stage_text(forward, "hoist") + "\n" + stage_text(forward, "fuse"));
  check(c, "kernel_ir.txt", stage_text(forward, "lower to kernel IR"));

  TargetOptions training = cpu;
  training.training = true;
  check(c, "backward.txt", stage_text(compile(cell, training), "differentiate"));

  TargetOptions gpu = cpu;
  gpu.target = Target::Cuda;
  check(c, "cuda.cu", cuda_codegen::print_cuda_program(*compile(cell, gpu).forward.cuda));
}

INSTANTIATE_TEST_SUITE_P(Cells, Golden,
                         ::testing::Values(Case{"elman", "elman:5,7"}, Case{"elman_proj", "elman_proj:5,7,3"},
                                           Case{"lstm", "lstm:5,7"}, Case{"gru", "gru:4,6"}, Case{"lnlstm", "lnlstm:5,7"},
                                           Case{"peephole", "peephole:3,7"}, Case{"sru", "sru.cell"},
                                           Case{"mlstm", "mlstm.cell"}),
                         [](const auto& param_info) { return std::string(param_info.param.name); });

}  // namespace
}  // namespace cellfuse
