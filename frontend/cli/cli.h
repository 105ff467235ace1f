#pragma once
// The `cellfuse` command line: the parsed arguments and what every subcommand shares. Each
// subcommand lives in its own file (print_command.cpp, run_command.cpp) and is listed in main.cpp.
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "compiler/ir/graph.h"
#include "compiler/target.h"

namespace cellfuse::cli {

struct Options {
  std::string command, cell;
  std::map<std::string, std::string> values;  // --name value
  bool stages = false;
  bool fusion = false;
  bool backward = false;
  bool cuda = false;
};

Options parse_args(int argc, char** argv);

// --name as a non-negative whole number; `def` when absent (none: required).
std::int64_t int_option(const Options& o, const std::string& name, std::optional<std::int64_t> def);
DType dtype_option(const Options& o);
// --storage (native unless given); 16-bit storage is for `target` cuda only.
Storage storage_option(const Options& o, const std::string& target);
// The cell named by the command line: a .cell file or a built-in cell spec.
Cell load(const Options& o);

// The target of the compiled backends a view shows (--target cpu|cuda; default: cpu when this
// build has the CPU backend, else cuda).
Target compiled_target_option(const Options& o);

int print_command(const Options& o);
int run_command(const Options& o);
int profile_command(const Options& o);

extern const char* const kUsage;

}  // namespace cellfuse::cli
