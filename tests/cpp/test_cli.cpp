// End-to-end tests of the `cellfuse` command line: runs the built binary (CELLFUSE_CLI) through
// popen and checks its output, its exit status and its error messages.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>

#include "compiler/ir/text.h"
#include "frontend/cells.h"

namespace fs = std::filesystem;

namespace {

struct Result {
  int status = -1;  // exit status; -1 when the process did not exit normally (a crash)
  std::string out, err;
};

// A private temporary directory, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "cellfuse_test_cli.XXXXXX").string();
    path_ = mkdtemp(pattern.data()) ? fs::path(pattern) : fs::path();
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  fs::path write(const std::string& name, const std::string& text) const {
    fs::path p = path_ / name;
    std::ofstream(p) << text;
    return p;
  }

 private:
  fs::path path_;
};

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs `cellfuse ARGS` (ARGS is shell text) with stdout captured by popen and stderr in a file.
Result cli(const std::string& args) {
  TempDir tmp;
  fs::path err = tmp.path() / "stderr";
  std::string command = std::string("'") + CELLFUSE_CLI + "' " + args + " 2>'" + err.string() + "'";
  Result r;
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return r;
  char buf[4096];
  std::size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) r.out.append(buf, n);
  int status = pclose(pipe);
  r.status = (status != -1 && WIFEXITED(status)) ? WEXITSTATUS(status) : -1;
  r.err = read_file(err);
  return r;
}

// The number after `label: ` at the start of a line; NaN when the line is missing.
double number_after(const std::string& out, const std::string& label) {
  std::smatch m;
  std::regex re("(^|\n)" + label + ": ([-+0-9.eE]+|nan|inf)( ms)?(\n|$)");
  if (!std::regex_search(out, m, re)) return std::nan("");
  return std::stod(m[2].str());
}

double checksum(const Result& r) { return number_after(r.out, "checksum"); }

std::string describe(const Result& r) {
  return "exit status " + std::to_string(r.status) + "\n--- stdout ---\n" + r.out +
         "--- stderr ---\n" + r.err;
}

// A bad command line: exit status 2 (a user error, not a crash or an internal error), nothing
// on stdout, and a message on stderr that contains `needle`.
void expect_user_error(const std::string& args, const std::string& needle) {
  Result r = cli(args);
  SCOPED_TRACE("cellfuse " + args);
  EXPECT_EQ(r.status, 2) << describe(r);
  EXPECT_NE(r.err.find("error"), std::string::npos) << describe(r);
  EXPECT_NE(r.err.find(needle), std::string::npos) << "expected '" << needle << "' in stderr\n"
                                                   << describe(r);
}

TEST(Cli, RunPrintsChecksumAndTime) {
  Result r = cli("run lstm:7,33 --seq 5 --batch 3 --seed 1");
  ASSERT_EQ(r.status, 0) << describe(r);
  double sum = checksum(r);
  EXPECT_TRUE(std::isfinite(sum)) << describe(r);
  double ms = number_after(r.out, "time");
  EXPECT_TRUE(std::isfinite(ms) && ms >= 0) << describe(r);
  EXPECT_NE(r.out.find(" ms"), std::string::npos) << describe(r);
}

// Without --target, `run` takes the fastest target of the build (cpu here when LLVM is built in,
// cuda on a machine with a GPU), not the slow reference interpreter; --target ref still gives it,
// and both agree to float rounding.
TEST(Cli, RunDefaultsToTheCompiledTarget) {
  Result fast = cli("run lstm:7,33 --seq 5 --batch 3 --seed 1");
  Result ref = cli("run lstm:7,33 --seq 5 --batch 3 --seed 1 --target ref");
  ASSERT_EQ(fast.status, 0) << describe(fast);
  ASSERT_EQ(ref.status, 0) << describe(ref);
  EXPECT_NE(ref.out.find("target=ref"), std::string::npos) << describe(ref);
#if CELLFUSE_HAVE_LLVM || CELLFUSE_HAVE_CUDA
  EXPECT_EQ(fast.out.find("target=ref"), std::string::npos) << describe(fast);
  EXPECT_NE(fast.out.find("compile: "), std::string::npos) << describe(fast);
#endif
  double a = checksum(fast), b = checksum(ref);
  ASSERT_TRUE(std::isfinite(a) && std::isfinite(b));
  EXPECT_LE(std::abs(a - b), 1e-4 * std::max(1.0, std::abs(b))) << a << " vs " << b;
}

TEST(Cli, SameSeedSameChecksumOtherSeedOther) {
  Result a = cli("run lstm:7,33 --seq 5 --batch 3 --seed 1");
  Result b = cli("run lstm:7,33 --seq 5 --batch 3 --seed 1");
  Result c = cli("run lstm:7,33 --seq 5 --batch 3 --seed 2");
  ASSERT_EQ(a.status, 0) << describe(a);
  ASSERT_EQ(b.status, 0) << describe(b);
  ASSERT_EQ(c.status, 0) << describe(c);
  EXPECT_EQ(checksum(a), checksum(b));
  EXPECT_NE(checksum(a), checksum(c));
}

TEST(Cli, F64ChecksumMatchesF32) {
  Result f32 = cli("run lstm:7,33 --seq 5 --batch 3 --seed 1");
  Result f64 = cli("run lstm:7,33 --seq 5 --batch 3 --seed 1 --dtype f64");
  ASSERT_EQ(f32.status, 0) << describe(f32);
  ASSERT_EQ(f64.status, 0) << describe(f64);
  double a = checksum(f32), b = checksum(f64);
  ASSERT_TRUE(std::isfinite(a) && std::isfinite(b));
  EXPECT_LE(std::abs(a - b), 1e-4 * std::max(std::abs(a), std::abs(b))) << a << " vs " << b;
  EXPECT_NE(f64.out.find("f64"), std::string::npos) << describe(f64);
}

TEST(Cli, EveryBuiltinCellRuns) {
  for (const char* spec : {"elman:3,5", "elman_proj:3,5,2", "lstm:4", "gru:3,5", "lnlstm:6,5",
                           "peephole:5,3"}) {
    Result r = cli(std::string("run ") + spec + " --seq 3 --batch 2 --seed 4");
    EXPECT_EQ(r.status, 0) << spec << "\n" << describe(r);
    EXPECT_TRUE(std::isfinite(checksum(r))) << spec << "\n" << describe(r);
  }
}

TEST(Cli, CellFileRunsLikeTheBuiltinItWasPrintedFrom) {
  TempDir tmp;
  fs::path file = tmp.write("lstm.cell", cellfuse::print_cell(cellfuse::cells::lstm(7, 33)));
  Result from_file = cli("run '" + file.string() + "' --seq 5 --batch 3 --seed 1");
  Result builtin = cli("run lstm:7,33 --seq 5 --batch 3 --seed 1");
  ASSERT_EQ(from_file.status, 0) << describe(from_file);
  ASSERT_EQ(builtin.status, 0) << describe(builtin);
  EXPECT_EQ(checksum(from_file), checksum(builtin));
}

TEST(Cli, PrintShowsBeforeAndAfterPasses) {
  Result r = cli("print lstm");
  ASSERT_EQ(r.status, 0) << describe(r);
  auto before = r.out.find("# before passes");
  auto after = r.out.find("# after passes");
  ASSERT_NE(before, std::string::npos) << describe(r);
  ASSERT_NE(after, std::string::npos) << describe(r);
  EXPECT_LT(before, after);
  EXPECT_NE(r.out.find("cell lstm f32 {"), std::string::npos) << describe(r);
  // What `print` shows parses back: the part after "# after passes" is a valid cell.
  std::string optimized = r.out.substr(r.out.find('\n', after) + 1);
  EXPECT_NO_THROW(cellfuse::parse_cell(optimized)) << optimized;
}

TEST(Cli, PrintStagesShowsEveryStageOfThePipeline) {
  Result r = cli("print lstm:5 --stages --target cpu --batch 2");
  ASSERT_EQ(r.status, 0) << describe(r);
  std::size_t at = 0;
  for (const char* stage : {"# after verify", "# after optimize", "# after simplify (round 1)", "# after cse", "# after dce",
                            "# after hoist", "# after fuse", "# after lower to kernel IR", "# after rewrite kernels for cpu",
                            "# after generate LLVM IR"}) {
    const std::size_t found = r.out.find(stage, at);
    EXPECT_NE(found, std::string::npos) << stage << " (in this order)\n" << describe(r);
    if (found != std::string::npos) at = found;
  }
  // What the CPU backend runs: the loop kernel's fused product reads its weight in panels.
  EXPECT_NE(r.out.find("panel"), std::string::npos) << describe(r);
  EXPECT_NE(r.out.find("define void @cf_lstm_loop_k0"), std::string::npos) << describe(r);
}

TEST(Cli, PrintStagesOfTrainingShowsBothPrograms) {
  Result r = cli("print lstm:3,5 --stages --target cpu --backward");
  ASSERT_EQ(r.status, 0) << describe(r);
  for (const char* stage : {"# after differentiate", "# after forward with tape", "# after forward: fuse",
                            "# after backward step: generate LLVM IR"})
    EXPECT_NE(r.out.find(stage), std::string::npos) << stage << "\n" << describe(r);
}

TEST(Cli, HelpExitsZero) {
  Result r = cli("--help");
  EXPECT_EQ(r.status, 0) << describe(r);
  EXPECT_NE(r.out.find("usage"), std::string::npos) << describe(r);
}

TEST(Cli, UnknownCell) { expect_user_error("run nosuchcell --seq 2 --batch 2", "nosuchcell"); }

TEST(Cli, BadSize) { expect_user_error("run lstm:0 --seq 2 --batch 2", "'0'"); }

TEST(Cli, MissingSeq) { expect_user_error("run lstm --batch 2", "--seq"); }

TEST(Cli, MissingBatch) { expect_user_error("run lstm --seq 2", "--batch"); }

TEST(Cli, BadNumber) { expect_user_error("run lstm --seq two --batch 2", "two"); }

TEST(Cli, UnknownOption) { expect_user_error("run lstm --seq 2 --batch 2 --frobnicate", "--frobnicate"); }

TEST(Cli, UnknownTarget) { expect_user_error("run lstm --seq 2 --batch 2 --target tpu", "tpu"); }

TEST(Cli, UnknownCommand) { expect_user_error("frobnicate lstm", "frobnicate"); }

TEST(Cli, MissingCell) { expect_user_error("run --seq 2 --batch 2", "cell"); }

TEST(Cli, BadDtype) { expect_user_error("run lstm --seq 2 --batch 2 --dtype f16", "f16"); }

TEST(Cli, MissingFile) {
  TempDir tmp;
  std::string path = (tmp.path() / "does_not_exist.cell").string();
  expect_user_error("run '" + path + "' --seq 2 --batch 2", "does_not_exist.cell");
}

TEST(Cli, MalformedFileNamesLineAndColumn) {
  TempDir tmp;
  // Line 3, column 17: the operand list ends in ',' where a value is expected.
  fs::path file = tmp.write("broken.cell",
                            "cell broken f32 {\n"
                            "  %x = input : [B,4]\n"
                            "  %y = tanh %x, }\n"
                            "  output y = %y\n"
                            "}\n");
  Result r = cli("print '" + file.string() + "'");
  EXPECT_EQ(r.status, 2) << describe(r);
  EXPECT_NE(r.err.find("broken.cell:3:"), std::string::npos) << describe(r);
  std::smatch m;
  EXPECT_TRUE(std::regex_search(r.err, m, std::regex("broken\\.cell:3:[0-9]+: "))) << describe(r);
}

TEST(Cli, InvalidCellFileNamesTheProblem) {
  TempDir tmp;
  // Parses, but the shapes do not agree: the message names the op and the shapes.
  fs::path file = tmp.write("mismatch.cell",
                            "cell mismatch f32 {\n"
                            "  %x = input : [B,4]\n"
                            "  %h = state : [B,3]\n"
                            "  %s = add %x, %h\n"
                            "  output y = %s\n"
                            "  next h = %h\n"
                            "}\n");
  Result r = cli("run '" + file.string() + "' --seq 2 --batch 2");
  EXPECT_EQ(r.status, 2) << describe(r);
  EXPECT_NE(r.err.find("mismatch.cell:4:"), std::string::npos) << describe(r);
  EXPECT_NE(r.err.find("add"), std::string::npos) << describe(r);
  EXPECT_NE(r.err.find("[B,4]"), std::string::npos) << describe(r);
  EXPECT_NE(r.err.find("[B,3]"), std::string::npos) << describe(r);
}

}  // namespace

// Autodiff: the backward step, its saves and their bytes; forward+backward with a gradient
// checksum, its forward part the forward run's.
TEST(Cli, PrintBackwardShowsSavesBytesAndTheStep) {
  Result r = cli("print --backward lstm:3,5");
  ASSERT_EQ(r.status, 0) << describe(r);
  EXPECT_NE(r.out.find("saved bytes per step per batch row: 160"), std::string::npos) << describe(r);
  EXPECT_NE(r.out.find("saved.0 = %0 (linear) [B,20]: 80 bytes/row"), std::string::npos) << describe(r);
  EXPECT_NE(r.out.find("cell lstm_backward f32 {"), std::string::npos) << describe(r);
  expect_user_error("print --backward --fusion lstm", "--backward");
}

TEST(Cli, RunBackwardPrintsGradChecksum) {
  Result fwd = cli("run gru:3,5 --seq 4 --batch 2 --seed 3");
  Result r = cli("run gru:3,5 --seq 4 --batch 2 --seed 3 --backward");
  Result r64 = cli("run gru:3,5 --seq 4 --batch 2 --seed 3 --backward --dtype f64");
  Result other = cli("run gru:3,5 --seq 4 --batch 2 --seed 4 --backward");
  ASSERT_EQ(r.status, 0) << describe(r);
  ASSERT_EQ(r64.status, 0) << describe(r64);
  double grad = number_after(r.out, "grad checksum");
  EXPECT_TRUE(std::isfinite(grad)) << describe(r);
  EXPECT_EQ(checksum(r), checksum(fwd)) << describe(r) << describe(fwd);
  EXPECT_NEAR(number_after(r64.out, "grad checksum"), grad, 1e-4 * std::max(1.0, std::abs(grad)));
  EXPECT_NE(number_after(other.out, "grad checksum"), grad);
}
