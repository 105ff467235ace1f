// Parsing the command line, and the options every subcommand reads.
#include <stdexcept>

#include "compiler/ir/error.h"
#include "compiler/ir/text.h"
#include "frontend/cells.h"
#include "frontend/cli/cli.h"

namespace cellfuse::cli {

Options parse_args(int argc, char** argv) {
  if (argc < 2) throw Error("missing command\n" + std::string(kUsage));
  Options o;
  o.command = argv[1];
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--stages") {
      o.stages = true;
    } else if (a == "--fusion") {
      o.fusion = true;
    } else if (a == "--cuda") {
      o.cuda = true;
    } else if (a == "--backward") {
      o.backward = true;
    } else if (a == "--seq" || a == "--batch" || a == "--seed" || a == "--target" || a == "--dtype" || a == "--storage" ||
               a == "--trace" || a == "--json" || a == "--png" || a == "--runs") {
      if (i + 1 >= argc) throw Error(a + " needs a value");
      o.values[a.substr(2)] = argv[++i];
    } else if (a.rfind("--", 0) == 0) {
      throw Error("unknown option " + a + "\n" + kUsage);
    } else if (o.cell.empty()) {
      o.cell = a;
    } else {
      throw Error("unexpected argument '" + a + "'");
    }
  }
  if (o.cell.empty()) throw Error(o.command + ": which cell? (a .cell file or a built-in name)");
  return o;
}

std::int64_t int_option(const Options& o, const std::string& name, std::optional<std::int64_t> def) {
  auto it = o.values.find(name);
  if (it == o.values.end()) {
    if (!def) throw Error("run: --" + name + " is required");
    return *def;
  }
  try {
    std::size_t used = 0;
    long long v = std::stoll(it->second, &used);
    if (used != it->second.size() || v < 0) throw std::invalid_argument("");
    return v;
  } catch (const std::exception&) {
    throw Error("--" + name + ": '" + it->second + "' is not a non-negative whole number");
  }
}

DType dtype_option(const Options& o) {
  auto it = o.values.find("dtype");
  if (it == o.values.end()) return DType::f32;
  auto d = parse_dtype(it->second);
  if (!d) throw Error("--dtype: '" + it->second + "' is not f32 or f64");
  return *d;
}

Storage storage_option(const Options& o, const std::string& target) {
  auto it = o.values.find("storage");
  if (it == o.values.end()) return Storage::Native;
#if !CELLFUSE_HAVE_CUDA
  (void)target;
  throw Error("--storage: this build has no CUDA backend, the only one with 16-bit storage");
#else
  auto parsed = parse_storage(it->second);
  if (!parsed) throw Error("--storage: '" + it->second + "' is none of native, bf16, f16");
  if (*parsed != Storage::Native && target != "cuda")
    throw Error("--storage " + it->second + ": 16-bit storage is for --target cuda only (the target is " + target + ")");
  return *parsed;
#endif
}

Cell load(const Options& o) {
  if (cells::is_builtin(o.cell)) return cells::by_spec(o.cell, dtype_option(o));
  if (o.cell.find('/') != std::string::npos || o.cell.find(".cell") != std::string::npos) {
    Cell c = load_cell_file(o.cell);
    if (o.values.count("dtype") && c.graph.dtype() != dtype_option(o))
      throw Error(o.cell + ": the file declares " + std::string(dtype_name(c.graph.dtype())) +
                  "; edit its header to change the dtype");
    return c;
  }
  throw Error("unknown cell '" + o.cell + "' (built-in cells: " + cells::builtin_names() +
              "; or give a path to a .cell file)");
}

Target compiled_target_option(const Options& o) {
  auto it = o.values.find("target");
#if CELLFUSE_HAVE_LLVM
  constexpr Target kDefault = Target::Cpu;
#else
  constexpr Target kDefault = Target::Cuda;
#endif
  if (it == o.values.end()) return kDefault;
  auto t = parse_target(it->second);
  if (!t) throw Error("--target: '" + it->second + "' is not a compiled target (cpu, cuda)");
  return *t;
}

}  // namespace cellfuse::cli
